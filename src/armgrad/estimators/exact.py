"""Exact expectation and gradient by enumerating every state: ``2^D`` binary vectors, ``C^D`` one-hot configurations."""

from __future__ import annotations

import torch

from ..families import BERNOULLI, Family
from .base import ENUMERATION, BinaryPointEstimator, Combined, per_sample

MAX_UNITS = 20


def all_states(num_units: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """All ``2^D`` binary vectors, shape ``(2^D, D)``, in binary counting order."""
    return BERNOULLI.states(num_units, dtype, device)


def check_units(num_units: int, max_units: int = MAX_UNITS) -> None:
    if num_units > max_units:
        raise ValueError(
            f"exact enumeration over D={num_units} units needs 2**{num_units} = {2**num_units} "
            f"evaluations of f per batch element; the limit is D <= {max_units} "
            f"(raise it with max_units=, or use a Monte Carlo estimator)"
        )


def check_states(family: Family, event_shape, max_units: int = MAX_UNITS) -> None:
    """Refuse an enumeration of more than ``2^max_units`` states, naming the count."""
    if family is BERNOULLI:
        check_units(tuple(event_shape)[-1], max_units)
        return
    count = family.num_states(event_shape)
    if count > 2**max_units:
        d, c = event_shape
        raise ValueError(
            f"exact enumeration over D={d} variables of C={c} categories needs C**D = {count} evaluations of f "
            f"per batch element; the limit is 2**{max_units} = {2**max_units} states "
            f"(raise it with max_units=, or use a Monte Carlo estimator)"
        )


def log_prob(b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log q(b) = sum_d b_d log p_d + (1 - b_d) log (1 - p_d)``: ``(S, *batch, D) -> (S, *batch)``."""
    return BERNOULLI.log_prob(b, logits)


class Exact(BinaryPointEstimator):
    """Enumeration: ``E[f] = sum_b q(b) f(b)`` and ``g = sum_b q(b) f(b) d log q(b) / d phi``.

    ``f`` is called once on all states, stacked as ``(M, *batch, *event)`` (``M = 2^D`` binary
    vectors, or ``C^D`` one-hot configurations); the value's weights are ``q(b)``. For Bernoulli
    units the gradient equals ``p_d (1 - p_d) (E[f | b_d = 1] - E[f | b_d = 0])``. The budget is
    ignored; more than ``2^max_units`` states are refused with a clear error, since each costs an
    evaluation of ``f`` per batch element.
    """

    name, unbiased = "exact", True
    summary = "exact gradient by enumeration (small D)"
    evaluates_f_at = ENUMERATION
    options = ("max_units",)

    def __init__(self, family: Family = BERNOULLI):
        self.family = family
        self.reference = "enumeration of all 2^D states" if family is BERNOULLI else "enumeration of all C^D states"

    def evaluations(self, num_samples, event_shape=None):
        if event_shape is None:
            raise ValueError(f"{self.name!r} costs one evaluation per state: pass the event shape (D, or (D, C))")
        return self.family.num_states(event_shape)

    def check_budget(self, num_samples, event_shape=None) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(f"num_samples must be an int (ignored by {self.name!r}), got {type(num_samples).__name__}")

    def noise_shape(self, num_samples, logits_shape, **options):
        return None

    def sample(self, logits, noise, max_units: int = MAX_UNITS):
        """Every state for every batch element, ``(M, *batch, *event)``."""
        event = self.family.event_shape(logits.shape)
        check_states(self.family, event, max_units)
        states = self.family.states(event, logits.dtype, logits.device)
        batch_dims = logits.dim() - len(event)
        view = (states.shape[0],) + (1,) * batch_dims + tuple(event)
        return states.view(view).expand(states.shape[0], *logits.shape)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        q = self.family.log_prob(b, logits).exp()
        return Combined((per_sample(q * fb, self.family.event_dims) * self.family.score(b, logits)).sum(0), q)
