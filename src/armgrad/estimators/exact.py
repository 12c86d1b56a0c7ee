"""Exact expectation and gradient by enumerating all ``2^D`` binary configurations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Estimate, evaluate

MAX_UNITS = 20


def all_states(num_units: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """All ``2^D`` binary vectors, shape ``(2^D, D)``, in binary counting order."""
    codes = torch.arange(2**num_units, device=device).unsqueeze(-1)
    bits = 2 ** torch.arange(num_units - 1, -1, -1, device=device)
    return ((codes & bits) > 0).to(dtype)


def exact(f, logits, noise, num_samples, max_units: int = MAX_UNITS, **options) -> Estimate:
    """Enumeration: ``E[f] = sum_b q(b) f(b)`` and ``g_d = sum_b q(b) f(b) (b_d - p_d)``.

    ``f`` is called once on all states, stacked as ``(2^D, *batch, D)``. The gradient equals
    ``p_d (1 - p_d) (E[f | b_d = 1] - E[f | b_d = 0])``. Refuses ``D > max_units`` with a clear
    error, since the cost is ``2^D`` evaluations of ``f`` per batch element.
    """
    phi = logits.detach()
    num_units = phi.shape[-1]
    if num_units > max_units:
        raise ValueError(
            f"exact enumeration over D={num_units} units needs 2**{num_units} = {2**num_units} "
            f"evaluations of f per batch element; the limit is D <= {max_units} "
            f"(raise it with max_units=, or use a Monte Carlo estimator)"
        )
    states = all_states(num_units, phi.dtype, phi.device)
    view = (states.shape[0],) + (1,) * (phi.dim() - 1) + (num_units,)
    b = states.view(view).expand(states.shape[0], *phi.shape)
    log_q = (b * F.logsigmoid(phi) + (1 - b) * F.logsigmoid(-phi)).sum(-1)
    q = log_q.exp()
    fb = evaluate(f, b)
    value = (q * fb).sum(0)
    grad = ((q * fb.detach()).unsqueeze(-1) * (b - torch.sigmoid(phi))).sum(0)
    return Estimate(value, grad)
