"""Shared objectives and logits for the statistical tests.

Every objective honours the stacked convention: ``b`` of shape ``(S, *batch, D)`` -> ``(S, *batch)``,
so the diagnostics can fold many independent draws into the sample dimension.
"""

import pytest
import torch

from armgrad import ESTIMATORS
from armgrad.estimators import BINARY, select

# the unbiased, stateless estimators that evaluate f at binary points: drawn by name, no controls
UNBIASED = select(unbiased=True, evaluates_f_at=BINARY, learned=False)


def instance(name, logits_or_units, dtype=None, registry=None):
    """The estimator to pass: the name, or for learned controls a fresh object of the logits' dtype."""
    spec = (registry or ESTIMATORS)[name]
    if not spec.learned:
        return name if registry is None else spec
    if isinstance(logits_or_units, torch.Tensor):
        units, dtype = logits_or_units.shape[-1], logits_or_units.dtype
    else:
        units = logits_or_units
    return spec.create(num_units=units).to(dtype or torch.float64)


def budget_for(name, registry=None):
    """The estimator's smallest budget at or above 2 (ignored by enumeration)."""
    return (registry or ESTIMATORS)[name].valid_budget(2)


def make_objective(batch: int, units: int, seed: int, dtype=torch.float64):
    """A random objective with interactions between units (not separable, not linear)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, units, generator=g, dtype=dtype)
    weight = torch.randn(batch, units, generator=g, dtype=dtype)
    coupling = torch.randn(units, units, generator=g, dtype=dtype)

    def f(b):
        quadratic = ((b - target) ** 2 * weight).sum(-1)
        pairwise = ((b @ coupling) * b).sum(-1)
        return quadratic + pairwise + torch.cos(3 * (b * weight).sum(-1))

    return f


def make_logits(batch: int, units: int, seed: int, dtype=torch.float64):
    """Random logits with the extremes |phi| = 8 present in every row."""
    g = torch.Generator().manual_seed(seed)
    phi = 3 * torch.randn(batch, units, generator=g, dtype=dtype)
    phi[:, 0] = 8.0
    phi[:, 1] = -8.0
    return phi


@pytest.fixture
def problem():
    return make_objective(6, 4, seed=1), make_logits(6, 4, seed=2)


def train_controls(estimator, f, logits, budget: int, steps: int, lr: float = 0.05, seed: int = 0) -> None:
    """Adam on a learned-control estimator's variance objective, ``steps`` estimates of 64 draws each."""
    import armgrad

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(estimator.parameters(), lr=lr)
    for _ in range(steps):
        armgrad.grad(f, logits.expand(64, *logits.shape), estimator, budget, generator=gen)
        opt.zero_grad()
        estimator.backward_variance()
        opt.step()


def summed_variance(f, logits, estimator, budget: int, draws: int = 4000, seed: int = 1) -> float:
    """The gradient estimate's variance summed over coordinates, from ``draws`` estimates."""
    from armgrad.diagnostics import draw_gradients

    estimates = draw_gradients(f, logits, estimator, budget, draws, generator=torch.Generator().manual_seed(seed))
    return float(estimates.var(0).sum())


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty data cache, so that no test reads or fills the user's."""
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


@pytest.fixture
def mnist_dir(tmp_path) -> str:
    """A folder of small MNIST IDX files (120 training, 30 test images), gzip-compressed."""
    from test_data import write_mnist

    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    return str(tmp_path / "data")
