"""Categorical latent variables: the ARM family's categorical estimators, proven against enumeration.

The same contract as :func:`armgrad.estimate` (docs/design.md sections 2 and 10), for ``D`` independent
categorical variables of ``C >= 2`` categories:

- ``logits``: ``(*batch, D, C)``, ``softmax`` over the last dimension;
- ``f`` receives one-hot float samples ``(S, *batch, D, C)`` (``gumbel``: points of the simplex) and
  returns ``(S, *batch)``; it is called once per estimate, every pseudo-sample stacked on ``S``;
- ``num_samples`` counts evaluations of ``f`` per batch element, in each estimator's budget rule
  (``arsm``: multiples of ``C(C-1)/2 + 1``; ``ars``: of ``C``; ``indecater``: of ``D C``; pairs: even);
- every batch element's estimate uses its own noise.

Example::

    from armgrad import categorical
    logits = torch.zeros(50, 20, 10, requires_grad=True)       # 50 examples, 20 variables, 10 categories
    value = categorical.estimate(f, logits, "disarm", num_samples=2)
    value.mean().backward()                                     # logits.grad: categorical DisARM's estimate
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .api import estimate_in, exact_in, grad_in
from .estimators import CATEGORICAL_ESTIMATORS as ESTIMATORS
from .estimators.exact import MAX_UNITS
from .families import CATEGORICAL

__all__ = ["ESTIMATORS", "estimate", "exact", "grad"]


def estimate(
    f: Callable,
    logits: torch.Tensor,
    estimator="disarm",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Monte Carlo estimate of ``E_{z ~ Cat(softmax(logits))}[f(z)]`` whose gradient is the estimator's.

    Args:
        f: maps one-hot samples ``(S, *batch, D, C)`` to ``(S, *batch)``; called exactly once.
        logits: ``(*batch, D, C)`` float tensor.
        estimator: a name from ``armgrad.categorical.ESTIMATORS`` or a categorical estimator object.
        num_samples: evaluations of ``f`` per batch element, in the estimator's budget rule.
        generator: the only source of randomness (the global one if ``None``).
        noise: optional uniforms of shape ``ESTIMATORS[name].noise_shape(num_samples, logits.shape)``.
        options: estimator options (``temperature``, ``order``, ``draws``, ``max_units``).

    Returns:
        ``(*batch)``: an estimate of ``E[f]`` (unbiased for the unbiased estimators), whose gradient
        w.r.t. ``logits`` is the estimator's and w.r.t. anything ``f`` closes over is pathwise.

    Raises:
        TypeError, ValueError: naming the argument, for bad logits (``C < 2``, fewer than two dims,
        non-float, non-finite), a budget outside the rule, an unknown estimator or option, a
        binary-only estimator, or an ``f`` that returns the wrong shape, type or a non-finite value.
    """
    return estimate_in(CATEGORICAL, f, logits, estimator, num_samples, generator, noise, options)


def grad(
    f: Callable,
    logits: torch.Tensor,
    estimator="disarm",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """The estimate of ``d E[f] / d logits`` itself: shape ``(*batch, D, C)``, no graph.

    Same arguments as :func:`estimate`.
    """
    return grad_in(CATEGORICAL, f, logits, estimator, num_samples, generator, noise, options)


def exact(f: Callable, logits: torch.Tensor, *, max_units: int = MAX_UNITS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[f], d E[f] / d logits)`` by enumerating all ``C^D`` configurations (at most ``2^max_units``).

    ``value`` ``(*batch)`` keeps the graph of anything ``f`` closes over; ``grad`` ``(*batch, D, C)``
    has none.
    """
    return exact_in(CATEGORICAL, f, logits, max_units)
