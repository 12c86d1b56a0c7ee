"""Categorical estimators on coupled draws: DisARM (stick-breaking and importance-weighted) and CARMS.

Notation (docs/design.md section 9): logits ``phi`` ``(*batch, D, C)``, ``p = softmax(phi)``.

Stick-breaking (Dong, Mnih & Tucker, NeurIPS 2021): a categorical draw is a chain of ``C - 1`` binary
decisions with logits ``eta_i = phi_i - logsumexp_{j > i} phi_j`` (``s(eta_i) = p_i / sum_{j >= i} p_j``):
``b_i = 1[u_i < s(eta_i)]``, ``z`` = the first ``i`` with ``b_i = 1`` (``C - 1`` if none). The antithetic
partner reads ``1 - u``. Categories may first be put in a fixed order of their logits (option
``order``: ``None``, ``"ascending"``, ``"descending"``), a permutation treated as a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..families import CATEGORICAL
from .base import BinaryPointEstimator, Budget, Combined, per_sample

ORDERS = (None, "ascending", "descending")


def _check_order(order) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of None, 'ascending', 'descending' (the categories' order for the "
                         f"stick-breaking chain), got {order!r}")


def _permutation(logits: torch.Tensor, order):
    """The categories' order for the chain (``None``: as given), ``(*batch, D, C)`` or ``None``."""
    if order is None:
        return None
    return torch.argsort(logits, -1, descending=order == "descending")


def _stick_logits(phi: torch.Tensor):
    """``eta_i = phi_i - logsumexp_{j > i} phi_j`` ``(..., C - 1)`` and ``logsumexp_{j > i} phi_j`` itself."""
    tail = torch.logcumsumexp(phi.flip(-1), -1).flip(-1)[..., 1:]  # logsumexp_{j > i}, i = 0 .. C-2
    return phi[..., :-1] - tail, tail


def _chain(decisions: torch.Tensor) -> torch.Tensor:
    """The category index of binary chains ``(..., C - 1)``: the first decision that is 1, else ``C - 1``."""
    stop = F.pad(decisions, (0, 1), value=1.0)
    return stop.argmax(-1)


def _one_hot(index: torch.Tensor, categories: int, perm, dtype) -> torch.Tensor:
    """One-hot of chain positions ``index``, mapped back through ``perm`` to the original categories."""
    z = F.one_hot(index, categories).to(dtype)
    return z if perm is None else torch.zeros_like(z).scatter_(-1, perm.expand(z.shape), z)


class StickBreakingPairs(BinaryPointEstimator):
    """Base of the DisARM estimators: ``P = num_samples / 2`` antithetic pairs of stick-breaking chains.

    Noise: ``(P, *batch, D, C - 1)`` uniforms; chain 1 decides ``1[u > s(-eta)]`` and chain 2
    ``1[u < s(eta)]`` (binary ARM's pair on every node), written ``b1`` then ``b2`` as ``f`` receives them.
    """

    family = CATEGORICAL
    budget = Budget(group=2, unit="antithetic pairs", minimum=2)
    options = ("order",)

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples // 2, *logits_shape[:-1], logits_shape[-1] - 1)

    def _chains(self, logits, noise, order):
        _check_order(order)
        perm = _permutation(logits, order)
        phi = logits if perm is None else torch.gather(logits, -1, perm)
        eta, tail = _stick_logits(phi)
        b1 = (noise > torch.sigmoid(-eta)).to(logits.dtype)
        b2 = (noise < torch.sigmoid(eta)).to(logits.dtype)
        return perm, phi, eta, tail, b1, b2

    def sample(self, logits, noise, order=None):
        perm, _, _, _, b1, b2 = self._chains(logits, noise, order)
        categories = logits.shape[-1]
        z = _one_hot(_chain(torch.cat([b1, b2])), categories, perm, logits.dtype)
        return z

    def combine(self, fb, b, logits, noise, order=None) -> Combined:
        perm, phi, eta, tail, b1, b2 = self._chains(logits, noise, order)
        z1, z2 = _chain(b1), _chain(b2)
        diff = per_sample(0.5 * (fb[: noise.shape[0]] - fb[noise.shape[0] :]), 2)  # (P, *batch, 1, 1)
        grad = self.signal(diff, phi, eta, tail, b1, b2, z1, z2)
        return Combined(grad if perm is None else torch.zeros_like(grad).scatter_(-1, perm, grad))


class DisARM(StickBreakingPairs):
    """Categorical DisARM on the stick-breaking chain (Dong, Mnih & Tucker, NeurIPS 2021).

    With ``Df = f(z1) - f(z2)`` of the pair, per node ``i`` of each variable:
    ``g_eta_i = 1/2 Df [(b1_i - b2_i) s(|eta_i|) 1[i <= min(z1, z2)] + (b1_i - s(eta_i)) 1[z2 < i <= z1]
    - (b2_i - s(eta_i)) 1[z1 < i <= z2]]``: binary DisARM where both chains reached the node, a
    REINFORCE-like term where one did. The gradient for ``phi`` follows from ``eta(phi)``:
    ``g_phi_k = g_eta_k - p_k sum_{i < k} g_eta_i / sum_{j > i} p_j``. ``C = 2`` is binary DisARM on
    ``phi_0 - phi_1``. Two evaluations per pair; unbiased.
    """

    name, unbiased = "disarm", True
    reference = "Dong, Mnih & Tucker, NeurIPS 2021"
    summary = "antithetic stick-breaking chains, DisARM per node (option order)"

    def signal(self, diff, phi, eta, tail, b1, b2, z1, z2):
        nodes = torch.arange(eta.shape[-1], device=eta.device)
        both = nodes <= torch.minimum(z1, z2).unsqueeze(-1)
        only1 = (z2.unsqueeze(-1) < nodes) & (nodes <= z1.unsqueeze(-1))
        only2 = (z1.unsqueeze(-1) < nodes) & (nodes <= z2.unsqueeze(-1))
        s = torch.sigmoid(eta)
        g_eta = (both * (b1 - b2) * torch.sigmoid(eta.abs()) + only1 * (b1 - s) - only2 * (b2 - s)) * diff
        g_eta = g_eta.mean(0)  # (*batch, D, C - 1)
        # d eta_i / d phi_k = 1[i = k] - 1[k > i] exp(phi_k - logsumexp_{j > i} phi_j)
        share = torch.exp(phi.unsqueeze(-2) - tail.unsqueeze(-1))  # (*batch, D, C - 1 (i), C (k))
        later = nodes.unsqueeze(-1) < torch.arange(phi.shape[-1], device=phi.device)
        pushed = -(g_eta.unsqueeze(-1) * share * later).sum(-2)
        return pushed + F.pad(g_eta, (0, 1))


class DisARMIW(StickBreakingPairs):
    """Categorical DisARM with importance weights (Dong, Mnih & Tucker, NeurIPS 2021).

    On a pair of stick-breaking chains over the categories in ascending order of their logits, per variable:
    ``g = 1/2 w (f(z1) - f(z2)) (e_{z1} - e_{z2})`` with ``w = q(z1) q(z2) / P(z1, z2)`` for the coupling:
    ``w = prod_{i < m} (1 - s_i)^2 / (1 - 2 s_i) * s(|eta_m|)``, ``m = min(z1, z2)``, ``s_i = s(eta_i)``
    (0 where ``z1 = z2``). Two evaluations per pair; unbiased.

    The order is always ascending: importance weighting needs ``P(a, b) > 0`` for every pair, and both
    chains pass node ``i`` only where ``s_i < 1/2``. In ascending order ``s_i`` is the smallest of the
    ``C - i`` remaining probabilities over their sum, at most ``1/3`` on every node a pair must pass; in
    another order a pair can be impossible and the estimate biased (the enumeration tests show it).
    """

    name, unbiased = "disarm_iw", True
    options = ()

    def sample(self, logits, noise):
        return super().sample(logits, noise, order="ascending")

    def combine(self, fb, b, logits, noise) -> Combined:
        return super().combine(fb, b, logits, noise, order="ascending")
    reference = "Dong, Mnih & Tucker, NeurIPS 2021"
    summary = "antithetic stick-breaking pair, importance-weighted (option order)"

    def signal(self, diff, phi, eta, tail, b1, b2, z1, z2):
        m = torch.minimum(z1, z2)
        nodes = torch.arange(eta.shape[-1], device=eta.device)
        # log of (1 - s)^2 / (1 - 2 s) on nodes both chains passed (only possible where s < 1/2)
        passable = eta < 0  # both chains can pass node i only where s_i < 1/2
        safe = torch.where(passable, eta, -torch.ones_like(eta))
        factor = torch.where(passable, 2 * F.logsigmoid(-safe) - torch.log1p(-2 * torch.sigmoid(safe)), 0.0)
        log_w = (factor * (nodes < m.unsqueeze(-1))).sum(-1)
        at_m = torch.gather(eta.abs().expand(m.shape + eta.shape[-1:]), -1,
                            m.clamp(max=eta.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        w = torch.exp(log_w + F.logsigmoid(at_m))  # (P, *batch, D)
        categories = phi.shape[-1]
        onehots = F.one_hot(z1, categories).to(phi.dtype) - F.one_hot(z2, categories).to(phi.dtype)
        return (diff * w.unsqueeze(-1) * onehots).mean(0)


class CARMS(BinaryPointEstimator):
    """CARMS, categorical ARMS (Dimitriev & Zhou, 2021): ``M = num_samples`` jointly antithetic draws.

    Per variable: a random cyclic order of the categories (one of ``C`` rotations), then inverse-CDF
    draws from ``M`` of the ``n = max(M, 3)`` uniforms of the Dirichlet copula ``U_m = (1 - d_m)^{n-1}``,
    ``d ~ Dirichlet(1_n)``;
    ``g_d = 1/(M (M-1)) sum_i (e_{z^i_d} - p_d) sum_{j != i} r_d(z^i_d, z^j_d) (f(z^i) - f(z^j))`` with
    ``r_d(a, b) = p_a p_b / P_d(a, b)``, ``P_d`` the exact pair marginal of the sampler (its copula's
    rectangle probabilities averaged over the ``C`` rotations). Importance weighting needs
    ``P_d(a, b) > 0`` for every pair: for ``n >= 3`` the copula has a density on
    ``x^{1/(n-1)} + y^{1/(n-1)} > 1`` and every category is last in one rotation, so every pair can
    occur; the fully antithetic ``n = 2`` copula lives on a line and makes pairs impossible for
    ``C >= 3`` (biased, as the enumeration tests showed), hence two draws take two of three jointly
    antithetic uniforms. Independent draws with ``r = 1`` would be REINFORCE-LOO. The reference code
    smooths and clips the ratio (a small bias); this one is exact.

    Noise: ``(M + 2, *batch, D)``: ``M`` uniforms for the Dirichlet, one more for its third dimension
    when ``M = 2`` (unused otherwise), and one for the rotation.
    """

    name, unbiased = "carms", True
    reference = "Dimitriev & Zhou, 2021 (arXiv 2110.14002)"
    summary = "M jointly antithetic draws (Dirichlet copula), exact pair-marginal weights"
    family = CATEGORICAL
    budget = Budget(unit="jointly antithetic draws", minimum=2)

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples + 2, *logits_shape[:-1])

    @staticmethod
    def copula_dimension(draws: int) -> int:
        return max(draws, 3)

    def _copula_uniforms(self, noise):
        m = noise.shape[0] - 2
        n = self.copula_dimension(m)
        e = -torch.log(noise[:n])
        d = e[:m] / e.sum(0, keepdim=True)
        return torch.exp((n - 1) * torch.log1p(-d))  # (M, *batch, D)

    @staticmethod
    def _rotation(noise, categories):
        r = (noise[-1] * categories).long().clamp_(max=categories - 1)  # (*batch, D)
        return (r.unsqueeze(-1) + torch.arange(categories, device=noise.device)) % categories

    def sample(self, logits, noise):
        categories = logits.shape[-1]
        perm = self._rotation(noise, categories)
        cum = torch.gather(torch.softmax(logits, -1), -1, perm).cumsum(-1)  # (*batch, D, C) in rotated order
        u = self._copula_uniforms(noise)
        position = (cum <= u.unsqueeze(-1)).sum(-1).clamp_(max=categories - 1)  # (M, *batch, D)
        index = torch.gather(perm.expand(*position.shape, categories), -1, position.unsqueeze(-1)).squeeze(-1)
        return F.one_hot(index, categories).to(logits.dtype)

    @staticmethod
    def pair_marginal(logits: torch.Tensor, m: int) -> torch.Tensor:
        """``P(z^i = a, z^j = b)`` for two draws of an ``m``-dimensional copula, ``(*batch, D, C, C)``,
        averaged over the rotations."""
        categories = logits.shape[-1]
        p = torch.softmax(logits, -1)
        rotations = (torch.arange(categories, device=p.device).unsqueeze(-1)
                     + torch.arange(categories, device=p.device)) % categories  # (R, C): rotation r, position k
        rolled = p[..., rotations]  # (*batch, D, R, C)
        high = torch.zeros_like(rolled).scatter_(-1, rotations.expand_as(rolled), rolled.cumsum(-1))
        high = high.clamp(max=1.0)
        low = (high - p.unsqueeze(-2)).clamp(min=0.0)
        k = 1.0 / (m - 1)

        def copula(x, y):
            return torch.clamp(x.unsqueeze(-1) ** k + y.unsqueeze(-2) ** k - 1, min=0) ** (m - 1)

        rect = copula(high, high) - copula(low, high) - copula(high, low) + copula(low, low)
        return rect.mean(-3)  # (*batch, D, C, C)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        m = fb.shape[0]
        p = torch.softmax(logits, -1)
        joint = self.pair_marginal(logits, self.copula_dimension(m))
        ratio = (p.unsqueeze(-1) * p.unsqueeze(-2)) / joint.clamp(min=torch.finfo(p.dtype).tiny)
        index = b.argmax(-1)  # (M, *batch, D)
        rows = torch.gather(ratio.expand(m, *ratio.shape), -2,
                            index.view(*index.shape, 1, 1).expand(*index.shape, 1, ratio.shape[-1])).squeeze(-2)
        r = torch.gather(rows.unsqueeze(1).expand(m, m, *rows.shape[1:]), -1,
                         index.unsqueeze(0).expand(m, *index.shape).unsqueeze(-1)).squeeze(-1)  # (M_i, M_j, *batch, D)
        delta = (fb.unsqueeze(1) - fb.unsqueeze(0)).view(m, m, *fb.shape[1:], 1)  # f_i - f_j
        weight = (r * delta).sum(1)  # (M, *batch, D)
        return Combined((weight.unsqueeze(-1) * (b - p)).sum(0) / (m * (m - 1)))
