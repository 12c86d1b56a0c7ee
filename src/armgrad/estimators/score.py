"""Score-function (REINFORCE) estimators.

Notation as in DESIGN.md section 1: ``phi`` logits ``(*batch, D)``, ``p = sigmoid(phi)``,
``b ~ Bernoulli(p)``, and ``d log q(b) / d phi = b - p``.
"""

from __future__ import annotations

import torch

from .base import Estimate, bernoulli, evaluate


def reinforce(f, logits, noise, num_samples, **options) -> Estimate:
    """REINFORCE (Williams, 1992), averaged over ``S = num_samples`` independent draws.

    ``g_d = 1/S sum_s f(b_s) (b_s,d - p_d)``, ``b_s = 1[u_s < p]``, ``u`` of shape ``(S, *batch, D)``.
    Unbiased; one f evaluation per draw; high variance because ``f`` has no baseline.
    """
    p = torch.sigmoid(logits.detach())
    b = bernoulli(noise, p)
    fb = evaluate(f, b)
    grad = (fb.detach().unsqueeze(-1) * (b - p)).mean(0)
    return Estimate(fb.mean(0), grad)


def reinforce_loo(f, logits, noise, num_samples, **options) -> Estimate:
    """REINFORCE with the leave-one-out baseline (Kool et al., 2019; Mnih & Rezende, 2016 VIMCO-style).

    With ``K = num_samples >= 2`` independent draws ``b_k = 1[u_k < p]``:
    ``g_d = 1/K sum_k (f_k - mean_{j != k} f_j) (b_k,d - p_d)``.
    Unbiased, because each baseline is independent of the draw it multiplies.
    """
    p = torch.sigmoid(logits.detach())
    b = bernoulli(noise, p)
    fb = evaluate(f, b)
    fd = fb.detach()
    k = fd.shape[0]
    baseline = (fd.sum(0, keepdim=True) - fd) / (k - 1)
    grad = ((fd - baseline).unsqueeze(-1) * (b - p)).mean(0)
    return Estimate(fb.mean(0), grad)
