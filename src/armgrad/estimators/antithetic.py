"""The augmentation family: AR, ARM, DisARM and ARMS.

Notation as in docs/design.md section 1: ``phi`` logits ``(*batch, D)``, ``p = sigmoid(phi)``,
``u ~ Uniform(0, 1)``; all of these are unbiased and evaluate ``f`` only at binary points. The
one-unit closed-form variances are integrals over ``u`` (``m = min(p, 1 - p)``, ``Df = f1 - f0``,
``g = p (1 - p) Df``); the tests check them by sampling and by quadrature.
"""

from __future__ import annotations

import math

import torch

from .base import BinaryPointEstimator, Budget, Combined
from .score import IndependentDraws


def _sigmoid(logit: float) -> float:
    return 1 / (1 + math.exp(-logit))


class AR(IndependentDraws):
    """AR, Augment-REINFORCE (Yin & Zhou, ICLR 2019, eq. 5), averaged over ``S`` draws.

    ``g_d = 1/S sum_s f(1[u_s < p]) (1 - 2 u_s,d)``, ``u`` of shape ``(S, *batch, D)``.
    Unbiased; one f evaluation per draw.
    """

    name, unbiased = "ar", True
    reference = "Yin & Zhou, ICLR 2019"
    summary = "augment-REINFORCE f(1[u<p])(1 - 2u)"

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        return Combined((fb.unsqueeze(-1) * (1 - 2 * noise)).mean(0))

    def one_unit_variance(self, logit, f0, f1):
        p = _sigmoid(logit)
        prim = lambda u: -((1 - 2 * u) ** 3) / 6  # noqa: E731  int (1 - 2u)^2 du
        second = f1**2 * (prim(p) - prim(0)) + f0**2 * (prim(1) - prim(p))
        return second - (p * (1 - p) * (f1 - f0)) ** 2


class AntitheticPairs(BinaryPointEstimator):
    """Base of ARM and DisARM: ``P = num_samples / 2`` antithetic pairs, one uniform ``u`` per pair."""

    budget = Budget(group=2, unit="antithetic pairs", minimum=2)

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples // 2, *logits_shape)

    def sample(self, logits, noise):
        """``b1 = 1[u > s(-phi)]`` stacked on ``b2 = 1[u < s(phi)]``: ``(2P, *batch, D)``, every ``b1`` first.

        Both halves are Bernoulli(s(phi)) draws, as negatively correlated as two such draws can be;
        written straight into the stacked buffer that ``f`` receives.
        """
        pairs = noise.shape[0]
        b = torch.empty((2 * pairs, *noise.shape[1:]), dtype=logits.dtype, device=logits.device)
        torch.gt(noise, torch.sigmoid(-logits), out=b[:pairs])
        torch.lt(noise, torch.sigmoid(logits), out=b[pairs:])
        return b


def _halves(t: torch.Tensor, pairs: int):
    """The ``b1`` half and the ``b2`` half of ``t`` (dim 0): one view each (one pair: without its pair dim)."""
    return (t[0], t[1]) if pairs == 1 else (t[:pairs], t[pairs:])


def _mean_over_pairs(g: torch.Tensor, pairs: int) -> torch.Tensor:
    return g if pairs == 1 else g.mean(0)


class ARM(AntitheticPairs):
    """ARM, Augment-REINFORCE-Merge (Yin & Zhou, ICLR 2019, Theorem 1).

    For each of ``P = num_samples / 2`` pairs, with one shared ``u`` of shape ``(P, *batch, D)``:
    ``g_d = (f(b1) - f(b2)) (u_d - 1/2)``, ``b1 = 1[u > s(-phi)]``, ``b2 = 1[u < s(phi)]``,
    averaged over pairs. Unbiased; two f evaluations per pair, made in one stacked call.
    """

    name, unbiased = "arm", True
    reference = "Yin & Zhou, ICLR 2019"
    summary = "antithetic pair (f(b1) - f(b2))(u - 1/2)"

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        pairs = noise.shape[0]
        f1, f2 = _halves(fb, pairs)
        u = noise[0] if pairs == 1 else noise
        return Combined(_mean_over_pairs((f1 - f2).unsqueeze(-1) * (u - 0.5), pairs))

    def one_unit_variance(self, logit, f0, f1):
        # the pair differs only on u < m or u > 1 - m, where the estimate is +-Df (u - 1/2)
        p = _sigmoid(logit)
        m, df = min(p, 1 - p), f1 - f0
        prim = lambda u: (u - 0.5) ** 3 / 3  # noqa: E731
        return 2 * df**2 * (prim(m) - prim(0)) - (p * (1 - p) * df) ** 2


class DisARM(AntitheticPairs):
    """DisARM / U2G (Dong, Mnih & Tucker, NeurIPS 2020; Yin et al., 2020): ARM Rao-Blackwellised.

    On the ARM pair: ``g_d = 1/2 (f(b1) - f(b2)) (-1)^{b2_d} 1[b1_d != b2_d] s(|phi_d|)``,
    averaged over the ``num_samples / 2`` pairs. It is ARM's estimate integrated over ``u`` given
    ``(b1, b2)``, so on the same noise its variance never exceeds ARM's. Unbiased.
    Computed as ``1/2 (f(b1) - f(b2)) (b1_d - b2_d) s(|phi_d|)``: for binary ``b``,
    ``(-1)^{b2} 1[b1 != b2] = b1 - b2``.
    """

    name, unbiased = "disarm", True
    reference = "Dong, Mnih & Tucker, NeurIPS 2020 (= U2G, Yin et al. 2020)"
    summary = "ARM with u integrated out given the pair"

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        pairs = noise.shape[0]
        (f1, f2), (b1, b2) = _halves(fb, pairs), _halves(b, pairs)
        g = _mean_over_pairs((f1 - f2).unsqueeze(-1) * (b1 - b2), pairs)  # a new tensor: the rest in place
        return Combined(g.mul_(torch.sigmoid(logits.abs())).mul_(0.5))

    def one_unit_variance(self, logit, f0, f1):
        # the value Df s(|phi|) / 2 with probability 2m, else 0
        p = _sigmoid(logit)
        m, df = min(p, 1 - p), f1 - f0
        return 2 * m * (df * (1 - m) / 2) ** 2 - (p * (1 - p) * df) ** 2


def dirichlet_copula(u: torch.Tensor) -> torch.Tensor:
    """Mutually antithetic uniforms from a Dirichlet copula (Dimitriev & Zhou, ICML 2021).

    ``u`` of shape ``(n, ...)`` independent uniforms -> ``c`` of the same shape with
    ``e_k = -log u_k``, ``d_k = e_k / sum_j e_j`` (Dirichlet(1, ..., 1)) and
    ``c_k = (1 - d_k)^(n-1)``: each ``c_k`` is Uniform(0, 1), the ``c_k`` negatively dependent.
    """
    n = u.shape[0]
    e = -torch.log(u)
    d = e / e.sum(0, keepdim=True)
    # (1 - d)^(n-1) in log space: in float32, 1 - d rounds away the ~1/n that matters once n reaches ~1e5
    return torch.exp((n - 1) * torch.log1p(-d))


def _arms_joint_low(m: torch.Tensor, n: int) -> torch.Tensor:
    """``J(m) = P(b_j = b_k = 1)`` under the Dirichlet copula for ``m = P(b = 1) <= 1/2``:
    ``(2 m^(1/(n-1)) - 1)^(n-1)``, computed as ``exp((n-1) log1p(2 expm1(log(m)/(n-1))))`` so that large
    ``n`` (where ``m^(1/(n-1))`` is within 1e-7 of 1) keeps float32's precision."""
    x = 2 * torch.expm1(torch.log(m) / (n - 1))  # 2 m^(1/(n-1)) - 2, in (-2, 0]
    inside = x > -1
    return torch.where(
        inside, torch.exp((n - 1) * torch.log1p(torch.where(inside, x, torch.zeros_like(x)))), torch.zeros_like(x)
    )


class ARMS(BinaryPointEstimator):
    """ARMS, antithetic REINFORCE with multiple samples (Dimitriev & Zhou, ICML 2021).

    ``n = num_samples >= 2`` mutually antithetic draws per coordinate from the Dirichlet copula
    (:func:`dirichlet_copula`): ``v_k = c_k`` if ``p < 1/2`` else ``1 - c_k``, ``b_k = 1[v_k < p]``;

    ``g = n/(n-1) * 1/n sum_k (f_k - mean f) (b_k - p) * p(1-p) / (p - J(p))``

    with ``J(p) = P(b_j = b_k = 1)``. By the symmetry ``p - J(p) = m - J(m)`` with
    ``m = min(p, 1-p) = s(-|phi|)``, which is how it is computed (stable for large ``|phi|``).
    ``n = 2`` is DisARM in distribution; independent draws would give ``reinforce_loo``. Unbiased.
    """

    name, unbiased = "arms", True
    reference = "Dimitriev & Zhou, ICML 2021"
    summary = "n mutually antithetic draws (Dirichlet copula), LOO weights"
    budget = Budget(unit="mutually antithetic draws", minimum=2)

    def sample(self, logits, noise):
        """``b_k = 1[c_k < m]`` for ``phi < 0`` and ``1[c_k > m]`` otherwise, ``m = s(-|phi|)``: ``(n, *batch, D)``."""
        c = dirichlet_copula(noise)
        m = torch.sigmoid(-logits.abs())
        return torch.where(logits < 0, c < m, c > m).to(logits.dtype)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        n = noise.shape[0]
        m = torch.sigmoid(-logits.abs())
        centred = (fb - fb.mean(0, keepdim=True)).unsqueeze(-1)
        debias = (1 - m) * m / (m - _arms_joint_low(m, n))
        return Combined((centred * (b - torch.sigmoid(logits))).sum(0) / (n - 1) * debias)
