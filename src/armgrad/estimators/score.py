"""Score-function (REINFORCE) estimators.

Notation as in DESIGN.md section 1: ``phi`` logits ``(*batch, D)``, ``p = sigmoid(phi)``,
``b ~ Bernoulli(p)``, and ``d log q(b) / d phi = b - p``.

Each estimator that evaluates ``f`` only at binary points comes in two phases (see
:mod:`armgrad.estimators.base`): ``sample(logits, noise) -> b`` of shape ``(S, *batch, D)`` and
``combine(fb, b, logits, noise) -> Estimate`` from the values ``fb = f(b)`` of shape ``(S, *batch)``.
"""

from __future__ import annotations

import torch

from .base import Estimate, bernoulli


def independent_samples(logits, noise):
    """``b_s = 1[u_s < p]``: ``S`` independent Bernoulli draws, ``(S, *batch, D)``."""
    return bernoulli(noise, torch.sigmoid(logits))


def reinforce(fb, b, logits, noise) -> Estimate:
    """REINFORCE (Williams, 1992), averaged over ``S = num_samples`` independent draws.

    ``g_d = 1/S sum_s f(b_s) (b_s,d - p_d)``, ``b_s = 1[u_s < p]``, ``u`` of shape ``(S, *batch, D)``.
    Unbiased; one f evaluation per draw; high variance because ``f`` has no baseline.
    """
    grad = (fb.detach().unsqueeze(-1) * (b - torch.sigmoid(logits))).mean(0)
    return Estimate(fb.mean(0), grad)


def reinforce_loo(fb, b, logits, noise) -> Estimate:
    """REINFORCE with the leave-one-out baseline (Kool, van Hoof & Welling, 2019).

    With ``K = num_samples >= 2`` independent draws ``b_k = 1[u_k < p]``:
    ``g_d = 1/K sum_k (f_k - mean_{j != k} f_j) (b_k,d - p_d)``.
    Unbiased, because each baseline is independent of the draw it multiplies.
    """
    fd = fb.detach()
    k = fd.shape[0]
    baseline = (fd.sum(0, keepdim=True) - fd) / (k - 1)
    grad = ((fd - baseline).unsqueeze(-1) * (b - torch.sigmoid(logits))).mean(0)
    return Estimate(fb.mean(0), grad)
