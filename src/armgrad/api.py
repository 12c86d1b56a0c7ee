"""The public functions: ``estimate``, ``grad`` and ``exact``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_generator, check_noise
from .estimators import get_estimator
from .estimators.base import Estimate, Estimator, with_gradient
from .estimators.exact import Exact
from .families import BERNOULLI, Family


def _run(
    f: Callable, logits: torch.Tensor, est: Estimator, num_samples: int, generator, noise, options, what: str = "f"
) -> Estimate:
    """Check the budget, the options and ``f`` (named ``what`` in errors), draw or check the noise, estimate."""
    family = est.family
    est.check_budget(num_samples, family.event_shape(logits.shape))
    est.check_options(options)
    if not callable(f):
        sample = "b (S, *batch, D)" if family is BERNOULLI else "one-hot z (S, *batch, D, C)"
        raise TypeError(f"{what} must be callable, mapping {sample} to (S, *batch); got {type(f).__name__}")
    if noise is None:
        check_generator(generator, logits.device)
        noise = est.draw_noise(num_samples, logits, generator, **options)
    else:
        check_noise(noise, est.noise_shape(num_samples, logits.shape, **options), logits, est.name)
    return est.estimate(f, logits, noise, num_samples, **options)


def estimate_in(family: Family, f, logits, estimator, num_samples, generator, noise, options) -> torch.Tensor:
    """:func:`estimate` for the estimators of ``family``."""
    est = get_estimator(estimator, family)
    family.check_logits(logits)
    value, grad_estimate = _run(f, logits, est, num_samples, generator, noise, options)
    if grad_estimate is None:  # a pathwise estimator: the gradient flows through the value
        return value
    return with_gradient(value, logits, grad_estimate, family.event_dims)


def grad_in(family: Family, f, logits, estimator, num_samples, generator, noise, options) -> torch.Tensor:
    """:func:`grad` for the estimators of ``family``."""
    est = get_estimator(estimator, family)
    family.check_logits(logits)
    if not est.needs_df_db:
        with torch.no_grad():
            g = _run(f, logits.detach(), est, num_samples, generator, noise, options).grad
            assert g is not None  # an estimator that does not differentiate f returns its gradient
            return g
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        value, g = _run(f, leaf, est, num_samples, generator, noise, options)
        if g is None:
            (g,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True)
    return torch.zeros_like(leaf) if g is None else g.detach()


def exact_in(family: Family, f, logits, max_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`exact` for ``family``."""
    family.check_logits(logits)
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    value, grad_ = Exact(family).estimate(f, logits, None, 0, max_units=max_units)
    assert grad_ is not None
    return value, grad_


def estimate(
    f: Callable,
    logits: torch.Tensor,
    estimator="arm",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Monte Carlo estimate of ``E_{b ~ Bernoulli(sigmoid(logits))}[f(b)]`` whose gradient is the estimator's.

    Args:
        f: maps stacked samples ``b`` of shape ``(S, *batch, D)`` (floats in {0, 1}, or in (0, 1)
            for relaxed estimators) to ``(S, *batch)``. It is called exactly once.
        logits: ``(*batch, D)`` float tensor, ``phi``; may come from a network.
        estimator: a name from ``armgrad.ESTIMATORS`` or an estimator object.
        num_samples: the budget, in evaluations of ``f`` per batch element (even for pair
            estimators such as ``arm`` and ``disarm``; ignored by ``exact``).
        generator: the only source of randomness (the global one if ``None``).
        noise: optional uniforms of shape ``ESTIMATORS[name].noise_shape(num_samples, logits.shape)``,
            to feed several estimators the same noise (common random numbers).
        options: estimator options, e.g. ``temperature`` for ``gumbel``.

    Returns:
        ``(*batch)`` tensor. Its value is an unbiased estimate of ``E[f]`` (except for relaxed
        estimators). Its gradient w.r.t. ``logits`` is the estimator; its gradient w.r.t.
        anything ``f`` closes over is the pathwise gradient of the estimate.

    The estimator's gradient ``g`` enters through the surrogate
    ``value + sum_d g_d (phi_d - stop_gradient(phi_d))``, which is ``value`` in the forward pass and
    sends exactly ``g`` back to the logits (and on to whatever produced them).
    """
    return estimate_in(BERNOULLI, f, logits, estimator, num_samples, generator, noise, options)


def grad(
    f: Callable,
    logits: torch.Tensor,
    estimator="arm",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """The estimate of ``d E[f] / d logits`` itself: shape ``logits.shape``, no graph.

    Same arguments as :func:`estimate`. Estimators that do not differentiate ``f`` run it under
    ``torch.no_grad()``; the others (``needs_df_db``) under autograd, and a pathwise one's
    gradient (``gumbel``, ``st``) is the autograd gradient of its value.
    """
    return grad_in(BERNOULLI, f, logits, estimator, num_samples, generator, noise, options)


def exact(f: Callable, logits: torch.Tensor, *, max_units: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[f], d E[f] / d logits)`` by enumerating all ``2^D`` states (``D <= max_units``).

    Returns ``value`` of shape ``(*batch)``, attached to the graph of anything ``f`` closes over
    (so ``value.sum().backward()`` gives exact gradients for those), and ``grad`` of shape
    ``(*batch, D)`` without graph.
    """
    return exact_in(BERNOULLI, f, logits, max_units)
