"""Multi-sample objectives: the K-sample importance-weighted bound and estimators made for it.

The objective (docs/design.md section 3, "multi-sample"), per batch element::

    L_K = E[log 1/K sum_k w_k],   w_k = exp(log_weight(b_k)),   b_1..b_K ~ q = Bernoulli(s(phi)) independent

``log_weight`` maps stacked samples ``b`` ``(S, *batch, D)`` to log-weights ``(S, *batch)``; it is
called once per estimate. In a VAE it is ``log p(x, b) - log q(b | x)``, and its ``-log q`` depends
on the logits: keep that dependence (close over the live logits). For ``K >= 2`` it is part of the
gradient of ``L_K``: dropping it biases the estimate, unlike for the single-sample ELBO, where the
score function's mean is zero. :func:`estimate` returns a value whose gradient w.r.t. the logits is
the estimator's term for the sampling distribution plus that pathwise term, and w.r.t. anything
else ``log_weight`` closes over (a decoder) the pathwise gradient::

    logits = encoder(x)                                   # (batch, D)
    def log_weight(b):                                    # (S, batch, D) -> (S, batch)
        log_q = Bernoulli(logits=logits).log_prob(b).sum(-1)   # the live logits
        return decoder_log_joint(x, b) - log_q
    bound = armgrad.multisample.estimate(log_weight, logits, "vimco", num_samples=5)
    (-bound.mean()).backward()

Estimators (``ESTIMATORS``), each unbiased for the gradient of ``L_K``:

- ``vimco`` (Mnih & Rezende, ICML 2016): ``K >= 2`` independent samples (K evaluations);
  ``g = sum_k (L - L_{-k}) (b_k - p)``, ``L = log 1/K sum_j w_j``, ``L_{-k}`` the same with ``w_k``
  replaced by the geometric mean of the others (where that is zero, the baseline is 0).
- ``local_disarm`` (Dong, Mnih & Tucker, NeurIPS 2020, multi-sample DisARM): ``K`` antithetic pairs
  ``(b_k, b~_k)`` (2K evaluations); the value is ``L_K`` at the first members, and pair ``k`` adds
  DisARM's term of ``L(b_1..b_K) - L(b_1..b~_k..b_K)`` with the other samples held:
  ``g = sum_k 1/2 (L - L^(k)) (b_k - b~_k) s(|phi|)``. It estimates the gradient of the same ``L_K``
  (over K independent samples), not of a bound over the 2K coupled ones.
- ``reinforce``: ``g = sum_k L (b_k - p)``, the baseline every paper shows.

So ``num_samples = K`` is always the K of the bound: the objective never changes when the estimator
does; ``local_disarm`` pays 2K evaluations of ``log_weight`` for it. One stochastic layer
(``logits`` of shape ``(*batch, D)``); chains of layers are not supported here. The relaxed
estimators (gumbel, st) are not offered: ``q(b)`` at a relaxed ``b`` is not the density the bound
needs.
"""

from __future__ import annotations

import difflib
import itertools
import math
from abc import abstractmethod
from collections.abc import Callable

import torch

from ._checks import check_finite, check_logits
from .estimators import ESTIMATORS as SINGLE_SAMPLE
from .estimators import registry
from .estimators.antithetic import AntitheticPairs
from .estimators.base import Budget, Estimate, Estimator, with_gradient
from .estimators.exact import MAX_UNITS, all_states, check_units, log_prob
from .estimators.score import IndependentDraws


def bound(log_w: torch.Tensor) -> torch.Tensor:
    """``log 1/K sum_k exp(log_w_k)`` over the first dimension: ``(K, *batch) -> (*batch)``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def evaluate_log_weights(log_weight: Callable, b: torch.Tensor) -> torch.Tensor:
    """Call ``log_weight`` once on ``b`` ``(S, *batch, D)``; check ``(S, *batch)``, float, no nan or +inf.

    A single ``-inf`` (a zero weight) is legitimate; the caller refuses a batch element whose
    weights are all zero.
    """
    out = log_weight(b)
    expected = tuple(b.shape[:-1])
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise TypeError(
            f"log_weight must return a floating-point torch.Tensor of shape {expected} (S, *batch), "
            f"got {type(out).__name__ if not isinstance(out, torch.Tensor) else out.dtype}"
        )
    if tuple(out.shape) != expected:
        raise ValueError(
            f"log_weight returned shape {tuple(out.shape)}, expected {expected}: it receives samples "
            f"of shape (S, *batch, D) = {tuple(b.shape)} and returns one log-weight per sample and "
            f"batch element"
        )
    check_finite(
        torch.where(out.detach() == -math.inf, 0.0, out.detach()),
        "log_weight returned nan or +inf (-inf, a zero weight, is allowed)",
    )
    return out


def _replace_each(first: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
    """``L`` with the k-th log-weight replaced by ``replacement[k]``, for every k: ``(K, *batch)``."""
    k = first.shape[0]
    eye = torch.eye(k, dtype=torch.bool, device=first.device).view(k, k, *([1] * (first.dim() - 1)))
    return bound(torch.where(eye, replacement.unsqueeze(1), first.unsqueeze(0)).transpose(0, 1))


class MultiSampleEstimator(Estimator):
    """An estimator of the gradient of ``L_K``: ``sample(logits, noise)`` and ``combine(log_w, b, logits,
    noise) -> Estimate(value, grad)``, where ``value`` keeps ``log_w``'s graph (the pathwise part)."""

    @abstractmethod
    def sample(self, logits: torch.Tensor, noise) -> torch.Tensor:
        """The samples ``(S, *batch, D)`` at which the log-weights are evaluated, from detached ``logits``."""

    @abstractmethod
    def combine(self, log_w: torch.Tensor, b: torch.Tensor, logits: torch.Tensor, noise) -> Estimate:
        """``Estimate(value, grad)`` from the log-weights ``log_w`` ``(S, *batch)`` of the samples ``b``."""

    def estimate(self, log_weight, logits, noise, num_samples) -> Estimate:
        phi = logits.detach()
        b = self.sample(phi, noise)
        log_w = evaluate_log_weights(log_weight, b)
        return self.combine(log_w, b, phi, noise)

    def value(self, log_w: torch.Tensor) -> torch.Tensor:
        """``L_K`` at the samples that define it (with the graph of ``log_w``)."""
        first = log_w[: self.bound_samples(log_w)]
        if not torch.isfinite(first).any(0).all():
            raise ValueError("every log-weight of a batch element is -inf (all K weights zero): the bound is -inf")
        return bound(first)

    def bound_samples(self, log_w) -> int:
        """How many of the evaluated samples (the first ones) make the bound ``L_K``: all of them."""
        return log_w.shape[0]


class VIMCO(MultiSampleEstimator):
    """VIMCO (Mnih & Rezende, 2016): each sample's learning signal is ``L_K - L_K^(-k)``, with ``w_k``
    replaced by the geometric mean of the other weights; ``K`` evaluations."""

    name, unbiased = "vimco", True
    sample = IndependentDraws.sample
    reference = "Mnih & Rezende, ICML 2016"
    summary = "leave-one-out signal L - L_{-k}, w_k replaced by the others' geometric mean"
    budget = Budget(unit="samples", minimum=2)

    def combine(self, log_w, b, logits, noise) -> Estimate:
        """The leave-one-out signals times the score of each sample, summed over the ``K`` samples."""
        value = self.value(log_w)
        lw = log_w.detach()
        k = lw.shape[0]
        finite = torch.isfinite(lw)
        zero_others = (~finite).sum(0, keepdim=True) - (~finite).long()  # zero weights among the others
        finite_sum = torch.where(finite, lw, 0.0).sum(0, keepdim=True)
        geometric = (finite_sum - torch.where(finite, lw, 0.0)) / (k - 1)  # log of the others' geometric mean
        geometric = torch.where(zero_others > 0, -math.inf, geometric)
        loo = _replace_each(lw, geometric)
        baseline = torch.where(torch.isfinite(loo), loo, torch.zeros_like(loo))  # independent of b_k either way
        signal = value.detach() - baseline
        return Estimate(value, (signal.unsqueeze(-1) * self.family.score(b, logits)).sum(0))


class LocalDisARM(MultiSampleEstimator):
    """Multi-sample DisARM (Dong, Mnih & Tucker, 2020): ``K`` antithetic pairs; pair ``k`` gets DisARM's
    gradient on ``L_K`` with the other samples held, ``L_K - L_K^(k)`` with ``b_k`` swapped for its
    partner; ``2K`` evaluations for the bound of ``K``."""

    name, unbiased = "local_disarm", True
    sample = AntitheticPairs.sample  # b_k = 1[u_k > s(-phi)] stacked on b~_k = 1[u_k < s(phi)]
    reference = "Dong, Mnih & Tucker, NeurIPS 2020 (multi-sample DisARM)"
    summary = "K antithetic pairs; pair k: DisARM on L_K with the other samples held"
    budget = Budget(unit="antithetic pairs (2K evaluations)", minimum=1)

    def evaluations(self, num_samples, num_units=None):
        return 2 * num_samples

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples, *logits_shape)

    def bound_samples(self, log_w):
        """The first sample of each pair makes the bound: ``K`` of the ``2K`` evaluated."""
        return log_w.shape[0] // 2

    def combine(self, log_w, b, logits, noise) -> Estimate:
        """Per pair, half the bound's change when its sample is swapped for the partner, times
        ``(b1 - b2) s(|phi|)``, summed over the pairs."""
        value = self.value(log_w)
        first, second = log_w.detach().chunk(2)
        delta = value.detach().unsqueeze(0) - _replace_each(first, second)  # L - L^(k)
        check_finite(
            delta,
            "the bound is -inf when one sample is swapped for its antithetic partner "
            "(all other weights zero): local_disarm's difference is undefined",
        )
        b1, b2 = b.chunk(2)
        grad = (0.5 * delta.unsqueeze(-1) * (b1 - b2)).sum(0) * torch.sigmoid(logits.abs())
        return Estimate(value, grad)


class Reinforce(MultiSampleEstimator):
    """REINFORCE on the bound: ``L_K`` itself is every sample's learning signal; ``K`` evaluations."""

    name, unbiased = "reinforce", True
    sample = IndependentDraws.sample
    reference = "Williams, Machine Learning 1992 (the bound as the learning signal)"
    summary = "score function L (b_k - p) for every sample"

    def combine(self, log_w, b, logits, noise) -> Estimate:
        """``L_K`` times the score of each sample, summed over the samples."""
        value = self.value(log_w)
        return Estimate(value, (value.detach().unsqueeze(-1) * self.family.score(b, logits)).sum(0))


ESTIMATORS: dict[str, MultiSampleEstimator] = registry(VIMCO(), LocalDisARM(), Reinforce())  # type: ignore[assignment]


def get_estimator(estimator) -> MultiSampleEstimator:
    """A multi-sample estimator by name (with a suggestion), or passed through."""
    if isinstance(estimator, MultiSampleEstimator):
        return estimator
    if not isinstance(estimator, str):
        raise TypeError(
            f"estimator must be a name from armgrad.multisample.ESTIMATORS or a multi-sample "
            f"estimator, got {type(estimator).__name__}"
        )
    if estimator in ESTIMATORS:
        return ESTIMATORS[estimator]
    known = ", ".join(ESTIMATORS)
    if estimator in SINGLE_SAMPLE:
        raise ValueError(
            f"estimator {estimator!r} estimates single-sample objectives (armgrad.estimate); for the "
            f"K-sample bound use one of {known}"
        )
    close = difflib.get_close_matches(estimator, ESTIMATORS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown multi-sample estimator {estimator!r}.{hint} Known: {known}")


def estimate(
    log_weight: Callable,
    logits: torch.Tensor,
    estimator="vimco",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Monte Carlo estimate of ``L_K`` (``K = num_samples``) whose gradient is the estimator's.

    Args:
        log_weight: maps ``b`` ``(S, *batch, D)`` to log-weights ``(S, *batch)``; called once. Close
            over the live logits for ``-log q(b)`` (see the module docstring).
        logits: ``(*batch, D)``.
        estimator: a name from :data:`ESTIMATORS` or a :class:`MultiSampleEstimator`.
        num_samples: ``K``, the number of samples in the bound (``local_disarm`` evaluates 2K).
        generator, noise: as for :func:`armgrad.estimate`.

    Returns:
        ``(*batch)``: ``logsumexp_k log_w_k - log K`` at the samples, whose gradient w.r.t. the
        logits is the estimator's (plus the pathwise term through ``log_weight``).
    """
    from .api import _run

    check_logits(logits)
    value, grad = _run(log_weight, logits, get_estimator(estimator), num_samples, generator, noise, {}, "log_weight")
    assert grad is not None  # every multi-sample estimator returns the term for the sampling distribution
    return with_gradient(value, logits, grad)


def exact(log_weight: Callable, logits: torch.Tensor, num_samples: int, *, max_tuples: int = 2**16) -> torch.Tensor:
    """``L_K`` exactly, by enumerating every K-tuple of the ``2^D`` states: ``(*batch)``.

    The value keeps its graph (to the logits through ``q`` and ``log_weight``, and to whatever
    ``log_weight`` closes over), so autograd gives the exact gradient. ``log_weight`` is called once on
    the ``2^D`` states; ``(2^D)^K <= max_tuples``.
    """
    check_logits(logits)
    units = logits.shape[-1]
    check_units(units, MAX_UNITS)
    if (2**units) ** num_samples > max_tuples:
        raise ValueError(
            f"exact L_K with D={units} and K={num_samples} has (2^D)^K = {(2**units) ** num_samples} "
            f"tuples; the limit is {max_tuples} (max_tuples=)"
        )
    states = all_states(units, logits.dtype, logits.device)
    b = states.view(states.shape[0], *([1] * (logits.dim() - 1)), units).expand(states.shape[0], *logits.shape)
    log_w = evaluate_log_weights(log_weight, b)  # (M, *batch)
    log_q = log_prob(b, logits)  # (M, *batch), attached to the logits
    tuples = torch.tensor(
        list(itertools.product(range(states.shape[0]), repeat=num_samples)), device=logits.device
    ).T  # (K, M^K)
    probability = log_q[tuples].sum(0).exp()  # (M^K, *batch)
    return (probability * bound(log_w[tuples])).sum(0)
