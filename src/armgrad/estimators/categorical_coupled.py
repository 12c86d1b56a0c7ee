"""Categorical estimators on coupled draws: DisARM (stick-breaking and importance-weighted) and CARMS.

Notation (docs/design.md section 10): logits ``phi`` ``(*batch, D, C)``, ``p = softmax(phi)``.

Stick-breaking (Dong, Mnih & Tucker, NeurIPS 2021): a categorical draw is a chain of ``C - 1`` binary
decisions with logits ``eta_i = phi_i - logsumexp_{j > i} phi_j`` (``s(eta_i) = p_i / sum_{j >= i} p_j``):
``b_i = 1[u_i < s(eta_i)]``, ``z`` = the first ``i`` with ``b_i = 1`` (``C - 1`` if none). The antithetic
partner reads ``1 - u``. Categories may first be put in a fixed order of their logits (option
``order``: ``None``, ``"ascending"``, ``"descending"``), a permutation treated as a constant.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F

from ..families import CATEGORICAL, one_hot, softmax
from .base import BinaryPointEstimator, Budget, Combined, per_sample

ORDERS = (None, "ascending", "descending")


def _check_order(order) -> None:
    if order not in ORDERS:
        raise ValueError(
            f"order must be one of None, 'ascending', 'descending' (the categories' order for the "
            f"stick-breaking chain), got {order!r}"
        )


def _permutation(logits: torch.Tensor, order):
    """The categories' order for the chain, ``perm[position] = category``, or ``None`` (as given)."""
    if order is None:
        return None
    return torch.argsort(logits, -1, descending=order == "descending")


def _positions(perm: torch.Tensor) -> torch.Tensor:
    """The inverse of ``perm``: ``position[category]``."""
    arange = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, arange)


def _category(z: torch.Tensor) -> torch.Tensor:
    """The index of one-hot ``z`` (a weighted sum: on short rows much cheaper than ``argmax``)."""
    return (z @ torch.arange(z.shape[-1], dtype=z.dtype, device=z.device)).long()


def _stick(logits: torch.Tensor, perm):
    """The chain's node probabilities ``s_i = p_i / sum_{j >= i} p_j`` ``(..., C - 1)``, the tail sums
    ``sum_{j > i} p_j`` ``(..., C - 1)`` and ``p`` ``(..., C)``, all in the chain's order."""
    phi = logits if perm is None else torch.gather(logits, -1, perm)
    p = softmax(phi)
    tail = p.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    head = p[..., :-1]
    return head / (head + tail), tail, p


def _chain(decisions: torch.Tensor) -> torch.Tensor:
    """The position in the chain of binary decisions ``(..., C - 1)``: the first decision that is 1, else ``C - 1``
    (the number of leading zeros)."""
    return (decisions.cumsum(-1) == 0).sum(-1)


class StickBreakingPairs(BinaryPointEstimator):
    """Base of the DisARM estimators: ``P = num_samples / 2`` antithetic pairs of stick-breaking chains.

    Noise: ``(P, *batch, D, C - 1)`` uniforms; chain 1 decides ``1[u > 1 - s]`` and chain 2 ``1[u < s]``
    on every node (binary ARM's pair), written ``z1`` then ``z2`` as ``f`` receives them. A chain's
    decisions after its own stop are never used, so :meth:`combine` needs only the two positions.
    """

    family = CATEGORICAL
    budget = Budget(group=2, unit="antithetic pairs", minimum=2)
    options: tuple[str, ...] = ("order",)

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples // 2, *logits_shape[:-1], logits_shape[-1] - 1)

    _last = None  # (noise, logits, order, the chain): what sample() computed, for the combine() that follows

    def sample(self, logits, noise, order=None):
        _check_order(order)
        perm = _permutation(logits, order)
        s, tail, p = _stick(logits, perm)
        position = _chain(torch.cat([noise > 1 - s, noise < s]))
        self._last = (noise, logits.data_ptr(), tuple(logits.shape), order, perm, s, tail, p, position)
        return self._one_hot(position, perm, logits)

    @staticmethod
    def _one_hot(position, perm, logits):
        z = one_hot(position, logits.shape[-1], logits.dtype)
        return z if perm is None else torch.zeros_like(z).scatter_(-1, perm.expand(z.shape), z)

    def combine(self, fb, b, logits, noise, order=None) -> Combined:
        _check_order(order)
        last, self._last = self._last, None
        if last is not None and last[0] is noise and last[1:4] == (logits.data_ptr(), tuple(logits.shape), order):
            perm, s, tail, p, position = last[4:]  # the chain sample() just built from this noise and these logits
        else:  # called on its own (or another thread's sample came between): the chain again, from b
            perm = _permutation(logits, order)
            s, tail, p = _stick(logits, perm)
            category = _category(b)
            position = (
                category
                if perm is None
                else torch.gather(_positions(perm).expand(*b.shape[:-1], -1), -1, category.unsqueeze(-1)).squeeze(-1)
            )
        return self._gradient(fb, position, perm, s, tail, p)

    @abstractmethod
    def signal(self, diff, s, tail, p, z1, z2) -> torch.Tensor:
        """The gradient for the logits in the chain's order, ``(*batch, D, C)``, from the pairs' half
        differences ``diff`` and the chains' stopping positions ``z1``, ``z2``."""

    def _gradient(self, fb, position, perm, s, tail, p) -> Combined:
        pairs = fb.shape[0] // 2
        diff = per_sample(0.5 * (fb[:pairs] - fb[pairs:]), 2)  # (P, *batch, 1, 1)
        grad = self.signal(diff, s, tail, p, position[:pairs], position[pairs:])
        return Combined(grad if perm is None else torch.zeros_like(grad).scatter_(-1, perm, grad))


class DisARM(StickBreakingPairs):
    """Categorical DisARM on the stick-breaking chain (Dong, Mnih & Tucker, NeurIPS 2021).

    With ``Df = f(z1) - f(z2)`` of the pair, per node ``i`` of each variable (``b_i`` a chain's decision,
    ``s_i = s(eta_i)``, ``eta_i = phi_i - logsumexp_{j > i} phi_j``):
    ``g_eta_i = 1/2 Df [(b1_i - b2_i) s(|eta_i|) 1[i <= min(z1, z2)] + (b1_i - s_i) 1[z2 < i <= z1]
    - (b2_i - s_i) 1[z1 < i <= z2]]``: binary DisARM where both chains reached the node, a
    REINFORCE-like term where one did. The gradient for ``phi`` follows from ``eta(phi)``:
    ``g_phi_k = g_eta_k - p_k sum_{i < k} g_eta_i / sum_{j > i} p_j``. ``C = 2`` is binary DisARM on
    ``phi_0 - phi_1``. Two evaluations per pair; unbiased.
    """

    name, unbiased = "disarm", True
    reference = "Dong, Mnih & Tucker, NeurIPS 2021"
    summary = "antithetic stick-breaking chains, DisARM per node (option order)"

    def signal(self, diff, s, tail, p, z1, z2):
        # With m = min(z1, z2), M = max(z1, z2) and sign = sign(z2 - z1) (0 when z1 = z2), the three terms are
        # sign [1[i = m] s(|eta_m|) - 1[m < i <= M] (1[i = M] - s_i)]: the chains differ first at node m, and
        # only the chain that went on to M reached the nodes after it.
        nodes = torch.arange(s.shape[-1], device=s.device)
        lo, hi = torch.minimum(z1, z2).unsqueeze(-1), torch.maximum(z1, z2).unsqueeze(-1)
        sign = per_sample(torch.sign(z2 - z1).to(s.dtype), 1) * diff  # (P, *batch, D, 1)
        first = (nodes == lo) * torch.maximum(s, 1 - s)
        after = ((nodes > lo) & (nodes <= hi)) * ((nodes == hi).to(s.dtype) - s)
        g_eta = ((first - after) * sign).mean(0)  # (*batch, D, C - 1)
        # d eta_i / d phi_k = 1[i = k] - 1[k > i] p_k / sum_{j > i} p_j
        reached = F.pad((g_eta / tail.clamp(min=torch.finfo(s.dtype).tiny)).cumsum(-1), (1, 0))  # sum_{i < k}
        return F.pad(g_eta, (0, 1)) - p * reached


class DisARMIW(StickBreakingPairs):
    """Categorical DisARM with importance weights (Dong, Mnih & Tucker, NeurIPS 2021).

    On a pair of stick-breaking chains over the categories in ascending order of their logits, per variable:
    ``g = 1/2 w (f(z1) - f(z2)) (e_{z1} - e_{z2})`` with ``w = q(z1) q(z2) / P(z1, z2)`` for the coupling:
    ``w = prod_{i < m} (1 - s_i)^2 / (1 - 2 s_i) * s(|eta_m|)``, ``m = min(z1, z2)``
    (0 where ``z1 = z2``). Two evaluations per pair; unbiased.

    The order is always ascending: importance weighting needs ``P(a, b) > 0`` for every pair, and both
    chains pass node ``i`` only where ``s_i < 1/2``. In ascending order ``s_i`` is the smallest of the
    ``C - i`` remaining probabilities over their sum, at most ``1/3`` on every node a pair must pass; in
    another order a pair can be impossible and the estimate biased (the enumeration tests showed it).
    """

    name, unbiased = "disarm_iw", True
    reference = "Dong, Mnih & Tucker, NeurIPS 2021"
    summary = "antithetic stick-breaking pair, importance-weighted (ascending order)"
    options = ()

    def sample(self, logits, noise):
        return super().sample(logits, noise, order="ascending")

    def combine(self, fb, b, logits, noise) -> Combined:
        return super().combine(fb, b, logits, noise, order="ascending")

    def signal(self, diff, s, tail, p, z1, z2):
        m = torch.minimum(z1, z2)
        nodes = torch.arange(s.shape[-1], device=s.device)
        # log of (1 - s)^2 / (1 - 2 s) on the nodes both chains passed (possible only where s < 1/2)
        safe = torch.where(s < 0.5, s, torch.zeros_like(s))
        factor = 2 * torch.log1p(-safe) - torch.log1p(-2 * safe)
        log_w = (factor * (nodes < m.unsqueeze(-1))).sum(-1)
        s_m = torch.gather(s.expand(m.shape + s.shape[-1:]), -1, m.clamp(max=s.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        w = torch.exp(log_w) * torch.maximum(s_m, 1 - s_m)  # (P, *batch, D)
        categories = p.shape[-1]
        onehots = one_hot(z1, categories, p.dtype) - one_hot(z2, categories, p.dtype)
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
        cum = torch.gather(softmax(logits), -1, perm).cumsum(-1)  # (*batch, D, C) in rotated order
        u = self._copula_uniforms(noise)
        position = (cum <= u.unsqueeze(-1)).sum(-1).clamp_(max=categories - 1)  # (M, *batch, D)
        index = torch.gather(perm.expand(*position.shape, categories), -1, position.unsqueeze(-1)).squeeze(-1)
        return one_hot(index, categories, logits.dtype)

    @staticmethod
    def _bounds(logits: torch.Tensor):
        """Each category's interval ``[low, high)`` of the CDF in every rotation: ``(*batch, D, R, C)`` each."""
        categories = logits.shape[-1]
        p = softmax(logits)
        rotations = (
            torch.arange(categories, device=p.device).unsqueeze(-1) + torch.arange(categories, device=p.device)
        ) % categories  # (R, C): rotation r, position k
        rolled = p[..., rotations]  # (*batch, D, R, C)
        high = torch.zeros_like(rolled).scatter_(-1, rotations.expand_as(rolled), rolled.cumsum(-1)).clamp(max=1.0)
        return (high - p.unsqueeze(-2)).clamp(min=0.0), high

    @staticmethod
    def _rectangle(low_a, high_a, low_b, high_b, n: int) -> torch.Tensor:
        """``P(U_i in [low_a, high_a), U_j in [low_b, high_b))`` under the ``n``-dimensional Dirichlet copula."""
        k = 1.0 / (n - 1)

        def copula(x, y):
            return torch.clamp(x**k + y**k - 1, min=0) ** (n - 1)

        return copula(high_a, high_b) - copula(low_a, high_b) - copula(high_a, low_b) + copula(low_a, low_b)

    @classmethod
    def pair_marginal(cls, logits: torch.Tensor, n: int) -> torch.Tensor:
        """``P(z^i = a, z^j = b)`` for two draws of an ``n``-dimensional copula, ``(*batch, D, C, C)``,
        averaged over the rotations (the whole table; :meth:`combine` computes only the pairs drawn)."""
        low, high = cls._bounds(logits)
        rect = cls._rectangle(low.unsqueeze(-1), high.unsqueeze(-1), low.unsqueeze(-2), high.unsqueeze(-2), n)
        return rect.mean(-3)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        m = fb.shape[0]
        p = softmax(logits)
        low, high = self._bounds(logits)  # (*batch, D, R, C)
        index = _category(b)  # (M, *batch, D)
        i, j = torch.triu_indices(m, m, 1, device=fb.device)  # the drawn pairs i < j (the ratio is symmetric)

        joint = self._rectangle(
            _pick(low, index[i]),
            _pick(high, index[i]),
            _pick(low, index[j]),
            _pick(high, index[j]),
            self.copula_dimension(m),
        ).mean(-1)  # (pairs, *batch, D)
        pa, pb = (
            torch.gather(p.expand(len(i), *p.shape), -1, index[i].unsqueeze(-1)).squeeze(-1),
            torch.gather(p.expand(len(j), *p.shape), -1, index[j].unsqueeze(-1)).squeeze(-1),
        )
        ratio = pa * pb / joint.clamp(min=torch.finfo(p.dtype).tiny)  # r(z^i, z^j) = r(z^j, z^i)
        delta = per_sample(fb[i] - fb[j], 1)  # (pairs, *batch, 1)
        pair = ratio * delta  # (pairs, *batch, D): r (f_i - f_j); draw j gets -r (f_i - f_j)
        weight = torch.zeros((m, *pair.shape[1:]), dtype=pair.dtype, device=pair.device)
        weight.index_add_(0, i, pair).index_add_(0, j, -pair)
        return Combined((weight.unsqueeze(-1) * (b - p)).sum(0) / (m * (m - 1)))


def _pick(bound: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``bound`` ``(*batch, D, R, C)`` at the categories ``index`` ``(P, *batch, D)``: ``(P, *batch, D, R)``."""
    rotations = bound.shape[-2]
    idx = index.unsqueeze(-1).unsqueeze(-1).expand(*index.shape, rotations, 1)
    return torch.gather(bound.expand(index.shape[0], *bound.shape), -1, idx).squeeze(-1)
