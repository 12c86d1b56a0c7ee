"""Exact expectation and gradient by enumerating all ``2^D`` binary configurations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Estimate

MAX_UNITS = 20


def all_states(num_units: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """All ``2^D`` binary vectors, shape ``(2^D, D)``, in binary counting order."""
    codes = torch.arange(2**num_units, device=device).unsqueeze(-1)
    bits = 2 ** torch.arange(num_units - 1, -1, -1, device=device)
    return ((codes & bits) > 0).to(dtype)


def enumerated_states(logits, noise=None, max_units: int = MAX_UNITS) -> torch.Tensor:
    """All ``2^D`` states for every batch element, ``(2^D, *batch, D)``; refuses ``D > max_units``."""
    num_units = logits.shape[-1]
    if num_units > max_units:
        raise ValueError(
            f"exact enumeration over D={num_units} units needs 2**{num_units} = {2**num_units} "
            f"evaluations of f per batch element; the limit is D <= {max_units} "
            f"(raise it with max_units=, or use a Monte Carlo estimator)"
        )
    states = all_states(num_units, logits.dtype, logits.device)
    view = (states.shape[0],) + (1,) * (logits.dim() - 1) + (num_units,)
    return states.view(view).expand(states.shape[0], *logits.shape)


def exact(fb, b, logits, noise) -> Estimate:
    """Enumeration: ``E[f] = sum_b q(b) f(b)`` and ``g_d = sum_b q(b) f(b) (b_d - p_d)``.

    ``f`` is called once on all states, stacked as ``(2^D, *batch, D)``. The gradient equals
    ``p_d (1 - p_d) (E[f | b_d = 1] - E[f | b_d = 0])``. Refuses ``D > max_units`` with a clear
    error, since the cost is ``2^D`` evaluations of ``f`` per batch element.
    """
    log_q = (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)
    q = log_q.exp()
    value = (q * fb).sum(0)
    grad = ((q * fb.detach()).unsqueeze(-1) * (b - torch.sigmoid(logits))).sum(0)
    return Estimate(value, grad)
