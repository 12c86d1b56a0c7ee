"""Exact expectation and gradient by enumerating all ``2^D`` binary configurations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ENUMERATION, BinaryPointEstimator, Combined

MAX_UNITS = 20


def all_states(num_units: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """All ``2^D`` binary vectors, shape ``(2^D, D)``, in binary counting order."""
    codes = torch.arange(2**num_units, device=device).unsqueeze(-1)
    bits = 2 ** torch.arange(num_units - 1, -1, -1, device=device)
    return ((codes & bits) > 0).to(dtype)


def check_units(num_units: int, max_units: int = MAX_UNITS) -> None:
    if num_units > max_units:
        raise ValueError(
            f"exact enumeration over D={num_units} units needs 2**{num_units} = {2**num_units} "
            f"evaluations of f per batch element; the limit is D <= {max_units} "
            f"(raise it with max_units=, or use a Monte Carlo estimator)"
        )


def log_prob(b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``log q(b) = sum_d b_d log p_d + (1 - b_d) log (1 - p_d)``: ``(S, *batch, D) -> (S, *batch)``."""
    return (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)


class Exact(BinaryPointEstimator):
    """Enumeration: ``E[f] = sum_b q(b) f(b)`` and ``g_d = sum_b q(b) f(b) (b_d - p_d)``.

    ``f`` is called once on all states, stacked as ``(2^D, *batch, D)``; the value's weights are
    ``q(b)``. The gradient equals ``p_d (1 - p_d) (E[f | b_d = 1] - E[f | b_d = 0])``. The budget
    is ignored; ``D > max_units`` is refused with a clear error, since the cost is ``2^D``
    evaluations of ``f`` per batch element.
    """

    name, unbiased = "exact", True
    reference = "enumeration of all 2^D states"
    summary = "exact gradient by enumeration (small D)"
    evaluates_f_at = ENUMERATION
    options = ("max_units",)

    def evaluations(self, num_samples, num_units=None):
        if num_units is None:
            raise ValueError(f"{self.name!r} costs 2**D evaluations: pass num_units=D")
        return 2**num_units

    def check_budget(self, num_samples) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(f"num_samples must be an int (ignored by {self.name!r}), got {type(num_samples).__name__}")

    def noise_shape(self, num_samples, logits_shape):
        return None

    def sample(self, logits, noise, max_units: int = MAX_UNITS):
        """All ``2^D`` states for every batch element, ``(2^D, *batch, D)``."""
        num_units = logits.shape[-1]
        check_units(num_units, max_units)
        states = all_states(num_units, logits.dtype, logits.device)
        view = (states.shape[0],) + (1,) * (logits.dim() - 1) + (num_units,)
        return states.view(view).expand(states.shape[0], *logits.shape)

    def combine(self, fb, b, logits, noise) -> Combined:
        q = log_prob(b, logits).exp()
        return Combined(((q * fb).unsqueeze(-1) * (b - torch.sigmoid(logits))).sum(0), q)
