"""The augmentation family: AR, ARM, DisARM and ARMS.

Notation as in DESIGN.md section 1: ``phi`` logits ``(*batch, D)``, ``p = sigmoid(phi)``,
``u ~ Uniform(0, 1)``; all of these are unbiased and need only evaluations of ``f`` at binary
points.
"""

from __future__ import annotations

import torch

from .base import Estimate


def ar(fb, b, logits, noise) -> Estimate:
    """AR, Augment-REINFORCE (Yin & Zhou, ICLR 2019, eq. 5), averaged over ``S`` draws.

    ``g_d = 1/S sum_s f(1[u_s < p]) (1 - 2 u_s,d)``, ``u`` of shape ``(S, *batch, D)``; the samples
    are :func:`armgrad.estimators.score.independent_samples`. Unbiased; one f evaluation per draw.
    """
    grad = (fb.detach().unsqueeze(-1) * (1 - 2 * noise)).mean(0)
    return Estimate(fb.mean(0), grad)


def antithetic_pairs(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ARM pairs from shared uniforms: ``b1 = 1[u > s(-phi)]`` stacked on ``b2 = 1[u < s(phi)]``.

    Both halves are Bernoulli(s(phi)) draws, as negatively correlated as two such draws can be.
    Shapes: ``logits (*batch, D)``, ``u (P, *batch, D)`` -> ``(2P, *batch, D)``, the ``b1`` of
    every pair first; written straight into the stacked buffer that ``f`` receives.
    """
    pairs = u.shape[0]
    b = torch.empty((2 * pairs, *u.shape[1:]), dtype=logits.dtype, device=logits.device)
    torch.gt(u, torch.sigmoid(-logits), out=b[:pairs])
    torch.lt(u, torch.sigmoid(logits), out=b[pairs:])
    return b


def _pair_difference(fb, scale: float = 1.0):
    f1, f2 = fb.detach().chunk(2)
    return (scale * (f1 - f2) if scale != 1.0 else f1 - f2).unsqueeze(-1)


def _mean_over_pairs(g):
    return g[0] if g.shape[0] == 1 else g.mean(0)  # one pair: a view, not a copy


def arm(fb, b, logits, noise) -> Estimate:
    """ARM, Augment-REINFORCE-Merge (Yin & Zhou, ICLR 2019, Theorem 1).

    For each of ``P = num_samples / 2`` pairs, with one shared ``u`` of shape ``(P, *batch, D)``:
    ``g_d = (f(b1) - f(b2)) (u_d - 1/2)``, ``b1 = 1[u > s(-phi)]``, ``b2 = 1[u < s(phi)]``,
    averaged over pairs. Unbiased; two f evaluations per pair, made in one stacked call.
    """
    grad = _mean_over_pairs(_pair_difference(fb) * (noise - 0.5))
    return Estimate(fb.mean(0), grad)


def disarm(fb, b, logits, noise) -> Estimate:
    """DisARM / U2G (Dong, Mnih & Tucker, NeurIPS 2020; Yin et al., 2020): ARM Rao-Blackwellised.

    On the ARM pair: ``g_d = 1/2 (f(b1) - f(b2)) (-1)^{b2_d} 1[b1_d != b2_d] s(|phi_d|)``,
    averaged over the ``num_samples / 2`` pairs. It is ARM's estimate integrated over ``u`` given
    ``(b1, b2)``, so on the same noise its variance never exceeds ARM's. Unbiased.
    Computed as ``1/2 (f(b1) - f(b2)) (b1_d - b2_d) s(|phi_d|)``: for binary ``b``,
    ``(-1)^{b2} 1[b1 != b2] = b1 - b2``.
    """
    b1, b2 = b.chunk(2)
    grad = _mean_over_pairs(_pair_difference(fb, 0.5) * (b1 - b2)) * torch.sigmoid(logits.abs())
    return Estimate(fb.mean(0), grad)


def dirichlet_copula(u: torch.Tensor) -> torch.Tensor:
    """Mutually antithetic uniforms from a Dirichlet copula (Dimitriev & Zhou, ICML 2021).

    ``u`` of shape ``(n, ...)`` independent uniforms -> ``c`` of the same shape with
    ``e_k = -log u_k``, ``d_k = e_k / sum_j e_j`` (Dirichlet(1, ..., 1)) and
    ``c_k = (1 - d_k)^(n-1)``: each ``c_k`` is Uniform(0, 1), the ``c_k`` negatively dependent.
    """
    n = u.shape[0]
    e = -torch.log(u)
    d = e / e.sum(0, keepdim=True)
    return (1 - d) ** (n - 1)


def _arms_joint_low(m: torch.Tensor, n: int) -> torch.Tensor:
    """``J(m) = P(b_j = b_k = 1)`` under the Dirichlet copula for ``m = P(b = 1) <= 1/2``."""
    return torch.clamp(2 * m ** (1.0 / (n - 1)) - 1, min=0) ** (n - 1)


def arms_samples(logits, noise):
    """``n`` mutually antithetic Bernoulli draws per coordinate from the Dirichlet copula: ``(n, *batch, D)``.

    ``v_k = c_k`` if ``p < 1/2`` else ``1 - c_k``, ``b_k = 1[v_k < p]``; computed as
    ``b_k = 1[c_k < m]`` for ``phi < 0`` and ``1[c_k > m]`` otherwise, ``m = s(-|phi|)``.
    """
    c = dirichlet_copula(noise)
    m = torch.sigmoid(-logits.abs())
    return torch.where(logits < 0, c < m, c > m).to(logits.dtype)


def arms(fb, b, logits, noise) -> Estimate:
    """ARMS, antithetic REINFORCE with multiple samples (Dimitriev & Zhou, ICML 2021).

    ``n = num_samples >= 2`` mutually antithetic draws per coordinate from the Dirichlet copula
    (:func:`arms_samples`): ``v_k = c_k`` if ``p < 1/2`` else ``1 - c_k``, ``b_k = 1[v_k < p]``;

    ``g = n/(n-1) * 1/n sum_k (f_k - mean f) (b_k - p) * p(1-p) / (p - J(p))``

    with ``J(p) = P(b_j = b_k = 1)``. By the symmetry ``p - J(p) = m - J(m)`` with
    ``m = min(p, 1-p) = s(-|phi|)``, which is how it is computed (stable for large ``|phi|``).
    ``n = 2`` is DisARM in distribution; independent draws would give ``reinforce_loo``. Unbiased.
    """
    n = noise.shape[0]
    m = torch.sigmoid(-logits.abs())
    fd = fb.detach()
    centred = (fd - fd.mean(0, keepdim=True)).unsqueeze(-1)
    debias = (1 - m) * m / (m - _arms_joint_low(m, n))
    grad = (centred * (b - torch.sigmoid(logits))).sum(0) / (n - 1) * debias
    return Estimate(fb.mean(0), grad)
