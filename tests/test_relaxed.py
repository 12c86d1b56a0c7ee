"""estimators/relaxed.py: Gumbel (Concrete) and straight-through, their published gradients written out at given
noise; the registry's suites show their bias."""

from __future__ import annotations

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import draw_gradients

from conftest import make_logits, make_objective


def test_gumbel_bias_shrinks_as_temperature_falls():
    f = make_objective(4, 3, seed=70)
    phi = make_logits(4, 3, seed=71).clamp(-2, 2)
    _, exact_grad = armgrad.exact(f, phi)
    bias = {}
    for tau in [1.0, 0.3, 0.05]:
        draws = draw_gradients(f, phi, "gumbel", 1, 40000, generator=torch.Generator().manual_seed(1), temperature=tau)
        bias[tau] = float((draws.mean(0) - exact_grad).abs().mean())
    assert bias[0.05] < bias[0.3] < bias[1.0], bias


@pytest.mark.parametrize("name,tau", [("gumbel", 0.3), ("gumbel", 1.7), ("st", None)])
def test_each_pathwise_gradient_is_its_papers_formula_at_the_given_noise(name, tau):
    """Written out per draw at the noise given, for ``f(b) = (c . b)^2`` (``df/db = 2 (c . b) c``): Concrete
    evaluates f at ``r = sigmoid((phi + logit u) / tau)`` with ``dr/dphi = r (1 - r) / tau``; straight-through at
    the hard ``b = 1[u < p]``, with ``db/dphi`` taken as ``p (1 - p)``."""
    g = torch.Generator().manual_seed(4)
    phi = torch.randn(3, 5, generator=g, dtype=torch.float64)
    c = torch.randn(3, 5, generator=g, dtype=torch.float64)
    f = lambda b: (b * c).sum(-1) ** 2  # noqa: E731
    noise = ESTIMATORS[name].draw_noise(4, phi, g)
    options = {} if tau is None else {"temperature": tau}
    grad = armgrad.grad(f, phi, name, 4, noise=noise, **options)
    df = lambda b: 2 * (b * c).sum(-1, keepdim=True) * c  # noqa: E731
    if name == "gumbel":
        r = torch.sigmoid((phi + torch.logit(noise)) / tau)
        expected = df(r) * r * (1 - r) / tau
    else:
        p = torch.sigmoid(phi)
        expected = df((noise < p).to(phi.dtype)) * p * (1 - p)
    torch.testing.assert_close(grad, expected.mean(0), rtol=1e-10, atol=1e-12)
