"""Diagnostics: is an estimator unbiased, and what does its variance cost?

For a given ``f`` and ``logits`` (small ``D``, so that :func:`armgrad.exact` can enumerate),
:func:`compare` draws many independent gradient estimates from each estimator, in one vectorised
call per chunk, and reports per estimator:

- the per-coordinate bias and its z-score ``(mean - exact) / sqrt(var / R)`` over ``R`` draws,
  with the largest ``|z|`` and a chi-square p-value of ``sum z^2`` (both should look like noise
  for an unbiased estimator; a sign slip gives ``|z|`` in the tens or hundreds). A z-test needs
  the rare outcome of each unit to show up: with ``m = s(-|phi|)`` the chance of the rarer value,
  a coordinate whose draws contain fewer than ``min_rare_events`` rare outcomes in expectation
  (``R * evaluations * m``) is not tested, and the number left out is reported. (The mean of
  such a coordinate is carried by a Poisson number of rare draws, and the sample standard error
  shrinks with it: at 100 expected rare draws a spurious ``|z| > 5`` has probability ~1e-4.)
- the per-coordinate variance, its mean, and variance x f-evaluations, the cost-normalised
  figure that compares estimators fairly at equal compute;
- the mean squared error against the exact gradient.

Example::

    report = armgrad.diagnostics.compare(f, logits, ["reinforce", "arm", "disarm"], num_draws=5000)
    print(report.table())

Categorical variables: the same functions with ``family="categorical"`` and logits ``(*batch, D, C)``
(a coordinate ``(d, c)``'s rarer outcome is ``z_d = c`` or not, whichever is less likely).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import api
from .estimators import BINARY, REGISTRY, get_estimator, select
from .estimators.base import LearnedControlEstimator, evaluate
from .families import FAMILIES, Family


def family_of(family) -> Family:
    """A family object from a name (``"bernoulli"``, ``"categorical"``) or the object itself."""
    if isinstance(family, Family):
        return family
    if family in FAMILIES:
        return FAMILIES[family]
    raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}")


def default_estimators(family="bernoulli") -> list[str]:
    """Every unbiased, stateless estimator of ``family`` that evaluates ``f`` at discrete points only."""
    return select(REGISTRY[family_of(family)], unbiased=True, evaluates_f_at=BINARY, learned=False, needs_df_db=False)


def draw_gradients(
    f: Callable,
    logits: torch.Tensor,
    estimator="arm",
    num_samples: int = 2,
    num_draws: int = 1000,
    *,
    generator: torch.Generator | None = None,
    max_elements: int = 2**24,
    family="bernoulli",
    **options,
) -> torch.Tensor:
    """``num_draws`` independent gradient estimates, shape ``(num_draws, *batch, D)`` (``(num_draws, *batch,
    D, C)`` for ``family="categorical"``).

    The draws are vectorised: the logits are repeated along a new leading batch dimension and
    ``f`` sees them folded into its sample dimension (``(S * R, *batch, D)``), so any ``f`` that
    honours the stacked calling convention works unchanged. Chunks keep at most about
    ``max_elements`` sample entries in memory at once.
    """
    family = family_of(family)
    family.check_logits(logits)
    _check_draws(num_draws, 1, "one estimate per draw")
    est = get_estimator(estimator, family)
    with controls_frozen([estimator]):
        return _draw(f, logits.detach(), est, num_samples, num_draws, generator, max_elements, options)


def _check_draws(num_draws, minimum: int, why: str) -> None:
    """``num_draws`` must be an int of at least ``minimum`` (``why`` says why, in the error)."""
    if isinstance(num_draws, bool) or not isinstance(num_draws, int):
        raise TypeError(f"num_draws must be an int, got {type(num_draws).__name__}")
    if num_draws < minimum:
        raise ValueError(f"num_draws must be at least {minimum} ({why}), got {num_draws}")


@contextlib.contextmanager
def controls_frozen(estimators):
    """Put estimators with trainable controls in eval mode (no variance gradients) for a while."""
    modules = [e for e in estimators if isinstance(e, LearnedControlEstimator)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _draw(f, phi, est, num_samples, num_draws, generator, max_elements, options):
    family = est.family
    batch = family.batch_shape(phi.shape)
    per_draw = max(1, est.evaluations(num_samples, family.event_shape(phi.shape)) * phi.numel())
    chunk = max(1, min(num_draws, max_elements // per_draw))

    def folded(b: torch.Tensor) -> torch.Tensor:  # b: (S, R, *batch, *event) -> (S, R, *batch)
        s, r = b.shape[:2]
        return evaluate(f, b.reshape(s * r, *b.shape[2:]), family.event_dims).reshape(s, r, *batch)

    draws = []
    for start in range(0, num_draws, chunk):
        r = min(chunk, num_draws - start)
        draws.append(api.grad_in(family, folded, phi.expand(r, *phi.shape), est, num_samples, generator, None, options))
    return torch.cat(draws)


def bias_z_scores(draws: torch.Tensor, exact_grad: torch.Tensor) -> torch.Tensor:
    """Per-coordinate z-scores ``(mean - exact) / sqrt(var / R)`` of ``R`` draws ``(R, *shape)``.

    Where the draws have (numerically) zero variance, a difference within floating-point
    round-off counts as ``z = 0`` and a larger one as a large ``z``.
    """
    r = draws.shape[0]
    mean = draws.mean(0)
    se = (draws.var(0) / r).sqrt()
    scale = exact_grad.abs().max() + mean.abs().max() + torch.finfo(draws.dtype).tiny
    floor = 100 * torch.finfo(draws.dtype).eps * scale
    return (mean - exact_grad) / torch.clamp(se, min=floor)


def chi2_pvalue(z: torch.Tensor) -> float:
    """Upper-tail p-value of ``sum z^2`` under ``chi^2`` with ``z.numel()`` degrees of freedom."""
    k = z.numel()
    stat = (z.double() ** 2).sum()
    return float(torch.special.gammaincc(torch.tensor(k / 2, dtype=torch.float64), stat / 2))


@dataclass
class EstimatorStats:
    """One estimator's diagnostics; tensors have the shape of the logits ``(*batch, D)``."""

    name: str
    unbiased: bool
    evaluations: int
    num_draws: int
    mean: torch.Tensor
    variance: torch.Tensor
    bias: torch.Tensor
    z: torch.Tensor
    mse: float
    testable: torch.Tensor
    seconds: float = 0.0

    @property
    def untested(self) -> int:
        """Coordinates left out of the z-test: too few rare outcomes expected in the draws."""
        return int((~self.testable).sum())

    @property
    def max_abs_z(self) -> float:
        z = self.z[self.testable]
        return float(z.abs().max()) if z.numel() else float("nan")

    @property
    def chi2_pvalue(self) -> float:
        z = self.z[self.testable]
        return chi2_pvalue(z) if z.numel() else float("nan")

    @property
    def mean_variance(self) -> float:
        return float(self.variance.mean())

    @property
    def variance_x_cost(self) -> float:
        return self.mean_variance * self.evaluations

    def to_dict(self) -> dict:
        """Every number of the row, JSON-ready (``results.json`` of ``armgrad demo``)."""
        return {
            "estimator": self.name,
            "unbiased": self.unbiased,
            "f_evaluations": self.evaluations,
            "num_draws": self.num_draws,
            "max_abs_bias_z": self.max_abs_z,
            "bias_chi2_pvalue": self.chi2_pvalue,
            "untested_coordinates": self.untested,
            "mean_abs_bias": float(self.bias.abs().mean()),
            "mean_variance": self.mean_variance,
            "variance_x_cost": self.variance_x_cost,
            "mse": self.mse,
            "seconds": self.seconds,
            "variance": self.variance.tolist(),
            "bias": self.bias.tolist(),
        }


@dataclass
class Report:
    """The result of :func:`compare`: ``rows`` per estimator, the exact gradient, and a table."""

    rows: list[EstimatorStats]
    exact_grad: torch.Tensor
    exact_value: torch.Tensor
    num_samples: int

    def __getitem__(self, name: str) -> EstimatorStats:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The comparison, JSON-ready: the budget, the exact gradient and every estimator's row."""
        return {
            "num_samples": self.num_samples,
            "exact_grad": self.exact_grad.tolist(),
            "estimators": [row.to_dict() for row in self.rows],
        }

    def table(self) -> str:
        """A Markdown table: one row per estimator, sorted as given."""
        head = (
            "| estimator | unbiased | f evals | max abs bias z | chi2 p | untested | mean variance "
            "| variance x cost | MSE |\n|---|---|---|---|---|---|---|---|---|\n"
        )
        lines = [
            f"| {r.name} | {'yes' if r.unbiased else 'no'} | {r.evaluations} | {r.max_abs_z:.2f} "
            f"| {r.chi2_pvalue:.3f} | {r.untested} | {r.mean_variance:.4g} | {r.variance_x_cost:.4g} | {r.mse:.4g} |"
            for r in self.rows
        ]
        return head + "\n".join(lines) + "\n"


def compare(
    f: Callable,
    logits: torch.Tensor,
    estimators: Sequence | None = None,
    num_samples: int = 2,
    num_draws: int = 1000,
    *,
    generator: torch.Generator | None = None,
    options: dict | None = None,
    min_rare_events: float = 100.0,
    family="bernoulli",
) -> Report:
    """Draw ``num_draws`` estimates from each estimator at the same budget; compare with ``exact``.

    Args:
        f, logits: as in :func:`armgrad.estimate`; ``D`` must be small enough to enumerate.
        estimators: names (or estimator objects); by default :func:`default_estimators`. Each is run at
            ``num_samples`` f evaluations, rounded up to its smallest valid budget (e.g. 2 for ``arm``
            when ``num_samples=1``), and the row records the evaluations actually spent.
        options: per-estimator options, ``{name: {option: value}}``.
        min_rare_events: leave a coordinate out of the z-test when fewer rare outcomes of its
            unit are expected among the draws (see the module docstring).
        family: ``"bernoulli"`` (logits ``(*batch, D)``) or ``"categorical"`` (``(*batch, D, C)``).
    """
    import time

    family = family_of(family)
    _check_draws(num_draws, 2, "a variance and a bias test need two draws at least")
    options = options or {}
    estimators = default_estimators(family) if estimators is None else estimators
    exact_value, exact_grad = api.exact_in(family, f, logits.detach(), 20)
    event = family.event_shape(logits.shape)
    probs = family.probs(logits.detach())
    rarer = torch.minimum(probs, 1 - probs)
    rows = []
    for name in estimators:
        est = get_estimator(name, family)
        budget = est.valid_budget(num_samples, event)
        start = time.perf_counter()
        draws = draw_gradients(
            f, logits, est, budget, num_draws, generator=generator, family=family, **options.get(est.name, {})
        )
        seconds = time.perf_counter() - start
        mean = draws.mean(0)
        evaluations = est.evaluations(budget, event)
        rare = num_draws * evaluations * rarer
        rows.append(
            EstimatorStats(
                name=est.name,
                unbiased=est.unbiased,
                evaluations=evaluations,
                num_draws=num_draws,
                mean=mean,
                variance=draws.var(0),
                bias=mean - exact_grad,
                z=bias_z_scores(draws, exact_grad),
                mse=float(((draws - exact_grad) ** 2).mean()),
                testable=rare >= min_rare_events,
                seconds=seconds,
            )
        )
    return Report(rows, exact_grad, exact_value.detach(), num_samples)


def exact_variance_1d(estimator, logit: float, f0: float, f1: float) -> float:
    """Exact variance of a one-unit, one-draw estimate for ``f(0) = f0``, ``f(1) = f1``.

    One draw is one unit of the estimator's budget (a pair for ARM and DisARM). The closed forms
    live with the estimators (``Estimator.one_unit_variance``); an estimator without one is refused.
    """
    est = get_estimator(estimator)
    variance = est.one_unit_variance(logit, f0, f1)
    if variance is None:
        raise ValueError(f"no closed-form variance for {est.name!r}; known: {', '.join(closed_form_estimators())}")
    return variance


def closed_form_estimators() -> list[str]:
    """The estimators whose one-unit variance has a closed form (:func:`exact_variance_1d`)."""
    return [n for n in select() if get_estimator(n).one_unit_variance(0.0, 0.0, 1.0) is not None]
