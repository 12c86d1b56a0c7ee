"""Score-function (REINFORCE) estimators, written once for every distribution family.

Notation as in docs/design.md section 1: ``phi`` logits ``(*batch, D)``, ``p = sigmoid(phi)``,
``b ~ Bernoulli(p)``, and ``d log q(b) / d phi = b - p``; for categorical variables ``phi`` is
``(*batch, D, C)``, ``b`` one-hot and the score ``b - softmax(phi)`` (:mod:`armgrad.families`).
"""

from __future__ import annotations

import math

from ..families import BERNOULLI, Family
from .base import BinaryPointEstimator, Budget, Combined, per_sample


class IndependentDraws(BinaryPointEstimator):
    """Base of the estimators that evaluate ``f`` at ``S`` independent draws ``b_s = 1[u_s < p]``
    (for categorical variables, the one-hot Gumbel-max draws of :meth:`armgrad.families.Categorical.sample`)."""

    def __init__(self, family: Family = BERNOULLI):
        self.family = family

    def sample(self, logits, noise):
        """``S`` independent draws from the uniforms ``noise`` ``(S, *logits.shape)``, of the same shape."""
        return self.family.sample(logits, noise)


class Reinforce(IndependentDraws):
    """REINFORCE (Williams, 1992), averaged over ``S = num_samples`` independent draws.

    ``g_d = 1/S sum_s f(b_s) (b_s,d - p_d)``, ``b_s = 1[u_s < p]``, ``u`` of shape ``(S, *batch, D)``.
    Unbiased; one f evaluation per draw; high variance because ``f`` has no baseline.
    """

    name, unbiased = "reinforce", True
    reference = "Williams, Machine Learning 1992"
    summary = "score function f(b)(b - p)"

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        return Combined((per_sample(fb, self.family.event_dims) * self.family.score(b, logits)).mean(0))

    def one_unit_variance(self, logit, f0, f1):
        p = 1 / (1 + math.exp(-logit))
        second = p * f1**2 * (1 - p) ** 2 + (1 - p) * f0**2 * p**2
        return second - (p * (1 - p) * (f1 - f0)) ** 2


class ReinforceLOO(IndependentDraws):
    """REINFORCE with the leave-one-out baseline (Kool, van Hoof & Welling, 2019).

    With ``K = num_samples >= 2`` independent draws ``b_k = 1[u_k < p]``:
    ``g_d = 1/K sum_k (f_k - mean_{j != k} f_j) (b_k,d - p_d)``, which for ``K = 2`` is
    ``1/2 (f_1 - f_2)(b_1,d - b_2,d)`` (computed so). Unbiased, because each baseline is independent of
    the draw it multiplies.
    """

    name, unbiased = "reinforce_loo", True
    reference = "Kool, van Hoof & Welling, ICLR workshop 2019"
    summary = "score function with leave-one-out baseline"
    budget = Budget(minimum=2)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        k = fb.shape[0]
        if k == 2:
            # the same estimate written as a pair, 1/2 (f_1 - f_2)(b_1 - b_2): exactly zero where the two draws
            # agree, as the exact expression is (the general form leaves rounding noise there, which Adam's
            # normalised first steps turn into full-size steps of random sign)
            return Combined(per_sample(0.5 * (fb[0] - fb[1]), self.family.event_dims) * (b[0] - b[1]))
        baseline = (fb.sum(0, keepdim=True) - fb) / (k - 1)
        return Combined((per_sample(fb - baseline, self.family.event_dims) * self.family.score(b, logits)).mean(0))
