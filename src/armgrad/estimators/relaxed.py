"""Biased pathwise estimators that differentiate through ``f``: Concrete/Gumbel and straight-through.

Both need ``f`` to be differentiable in ``b``; the Concrete estimator also evaluates ``f`` at
relaxed values in (0, 1), so ``f`` must accept them. Their gradient flows through the value
(``Estimate.grad is None``).
"""

from __future__ import annotations

import torch

from .base import BINARY, RELAXED, Estimate, Estimator, bernoulli, evaluate, require_differentiable


class Gumbel(Estimator):
    """Concrete / Gumbel-softmax relaxation (Maddison et al., 2017; Jang et al., 2017).

    ``b~ = s((phi + logit(u)) / tau)`` with ``u`` of shape ``(S, *batch, D)``; the gradient is the
    pathwise gradient of ``1/S sum_s f(b~_s)``. Biased: the relaxed objective is not ``E[f(b)]``;
    the bias shrinks as the temperature ``tau`` falls, while the variance grows.
    """

    name, unbiased = "gumbel", False
    reference = "Maddison, Mnih & Teh; Jang, Gu & Poole, ICLR 2017"
    summary = "Concrete relaxation, pathwise (option temperature=0.5)"
    evaluates_f_at = RELAXED
    needs_df_db = True
    options = ("temperature",)

    def estimate(self, f, logits, noise, num_samples, temperature: float = 0.5) -> Estimate:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        relaxed = torch.sigmoid((logits + torch.logit(noise)) / temperature)
        fb = evaluate(f, relaxed)
        require_differentiable(fb, relaxed, self.name)
        return Estimate(fb.mean(0), None)


class StraightThrough(Estimator):
    """Straight-through (Bengio et al., 2013): forward at ``b = 1[u < p]``, backward as if ``b = p``.

    ``b_st = b + p - stop_gradient(p)``, so ``g_d = 1/S sum_s df/db_d (b_s) p_d (1 - p_d)``.
    Biased unless ``f`` is linear in ``b``.
    """

    name, unbiased = "st", False
    reference = "Bengio, Leonard & Courville, 2013"
    summary = "straight-through: hard forward, backward as if b = p"
    evaluates_f_at = BINARY
    needs_df_db = True

    def estimate(self, f, logits, noise, num_samples) -> Estimate:
        p = torch.sigmoid(logits)
        hard = bernoulli(noise, p.detach())
        b = hard + (p - p.detach())  # exactly hard in the forward pass
        fb = evaluate(f, b)
        require_differentiable(fb, b, self.name)
        return Estimate(fb.mean(0), None)
