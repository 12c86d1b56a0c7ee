"""Categorical estimators that evaluate ``f`` at modified copies of one draw: AR, ARS, ARSM, ARSM+, IndeCateR.

Notation (docs/design.md section 10): logits ``phi`` ``(*batch, D, C)``, ``p = softmax(phi)``. The ARSM
family (Yin, Yue & Zhou, ICML 2019) augments each variable with ``pi ~ Dirichlet(1_C)``, written as
``E = -log u`` (``u`` uniform, ``pi = E / sum E``), and draws ``z = argmin_c (log pi_c - phi_c)``, the
exponential race, which is the Gumbel-max draw of :meth:`armgrad.families.Categorical.sample` on the
same ``u``. A swap ``c <-> j`` exchanges entries ``c`` and ``j`` of ``pi`` in every variable at once;
``pi`` swapped is again Dirichlet(1), so every swapped configuration is itself a draw from ``q`` and
the estimate of ``E[f]`` is the mean over all the configurations evaluated. ``F[c, j] = f(z^{c<->j})``
is symmetric and ``F[j, j] = f(z)``.
"""

from __future__ import annotations

import torch

from ..families import CATEGORICAL, one_hot_argmax, softmax
from .base import BinaryPointEstimator, Budget, Combined, per_sample
from .score import IndependentDraws


def _race(logits: torch.Tensor, log_e: torch.Tensor) -> torch.Tensor:
    """One-hot ``argmax_c (phi_c - log E_c)``, broadcasting ``logits`` over ``log_e``'s leading dims."""
    return one_hot_argmax(logits - log_e)


def _log_e(u: torch.Tensor) -> torch.Tensor:
    """``log E`` for ``E = -log u ~ Exp(1)``."""
    return torch.log(-torch.log(u))


def _dirichlet(u: torch.Tensor) -> torch.Tensor:
    """``pi = E / sum_c E_c``, Dirichlet(1_C), from uniforms ``u`` ``(..., C)``."""
    e = -torch.log(u)
    return e / e.sum(-1, keepdim=True)


def _swapped(log_e: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """``log E`` with its categories permuted by each row of ``perms`` ``(P, ..., C)``: ``(P, *log_e.shape)``."""
    if perms.dim() == 2:
        perms = perms.view(perms.shape[0], *[1] * (log_e.dim() - 1), perms.shape[1])
    index = perms.expand(perms.shape[0], *log_e.shape)
    return torch.gather(log_e.expand(perms.shape[0], *log_e.shape), -1, index)


def _swap_permutation(c: torch.Tensor, j: torch.Tensor, categories: int) -> torch.Tensor:
    """Index maps of the swaps ``c <-> j`` (broadcast shapes, a trailing dim of ``C`` added)."""
    i = torch.arange(categories, device=c.device)
    c, j = c.unsqueeze(-1), j.unsqueeze(-1)
    return torch.where(i == c, j, torch.where(i == j, c, i))


class CategoricalAR(IndependentDraws):
    """AR for categorical variables (Yin, Yue & Zhou, ICML 2019): ``g_{d,c} = 1/S sum_s f(z_s) (1 - C pi_{s,d,c})``.

    One evaluation per draw; ``pi`` is the Dirichlet behind the draw. (The ARSM toy code's
    ``f(z)(1 - pi)`` is this divided by ``C`` plus a constant over categories; this is the unscaled form.)
    """

    name, unbiased = "ar", True
    reference = "Yin, Yue & Zhou, ICML 2019"
    summary = "augment-REINFORCE f(z)(1 - C pi), pi ~ Dirichlet(1)"

    def __init__(self):
        super().__init__(CATEGORICAL)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        pi = _dirichlet(noise)
        return Combined((per_sample(fb, 2) * (1 - logits.shape[-1] * pi)).mean(0))


class ARS(BinaryPointEstimator):
    """ARS, augment-REINFORCE-swap (Yin, Yue & Zhou, ICML 2019): one random reference category per draw.

    For each draw a reference ``j`` (uniform, one per batch element and draw, shared by the ``D``
    variables) and the ``C`` joint swaps ``z^{m<->j}`` (``m = j`` is the draw itself):
    ``g_{d,c} = (F[c, j] - 1/C sum_m F[m, j]) (1 - C pi_{d,j})``. ``C`` evaluations per draw.

    Noise: ``(draws, *batch, D, C + 1)``; the first ``C`` columns are the Dirichlet's uniforms, the
    last column of variable 0 picks ``j``.
    """

    name, unbiased = "ars", True
    reference = "Yin, Yue & Zhou, ICML 2019"
    summary = "C swaps of pi with one random reference category"
    family = CATEGORICAL
    budget = Budget(unit="draws of C swaps", group_of=lambda shape: shape[-1], rule="C")

    def noise_shape(self, num_samples, logits_shape, **options):
        categories = logits_shape[-1]
        return (num_samples // categories, *logits_shape[:-1], categories + 1)

    def sample(self, logits, noise):
        categories = logits.shape[-1]
        u, j = noise[..., :categories], self._reference(noise, categories)
        perms = _swap_permutation(torch.arange(categories, device=u.device).view(-1, *[1] * j.dim()), j, categories)
        perms = perms.unsqueeze(-2).expand(categories, *u.shape)  # (C, draws, *batch, D, C)
        z = _race(logits, _swapped(_log_e(u), perms))
        return z.reshape(-1, *z.shape[2:])

    @staticmethod
    def _reference(noise, categories):
        return (noise[..., 0, categories] * categories).long().clamp_(max=categories - 1)  # (draws, *batch)

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        categories = logits.shape[-1]
        u, j = noise[..., :categories], self._reference(noise, categories)
        f = fb.view(categories, *j.shape).movedim(0, -1)  # (draws, *batch, C): F[m, j] over m
        pi_j = torch.gather(_dirichlet(u), -1, j.view(*j.shape, 1, 1).expand(*u.shape[:-1], 1))  # (draws, *batch, D, 1)
        signal = (f - f.mean(-1, keepdim=True)).unsqueeze(-2)  # (draws, *batch, 1, C)
        return Combined((signal * (1 - categories * pi_j)).mean(0))


def _pairs(categories: int, device=None):
    """The distinct joint swaps: the identity first, then every pair ``c < j``; and ``index[c, j]``, the
    swap's position among them (``index[j, j] = 0``, the draw itself)."""
    c, j = torch.triu_indices(categories, categories, 1, device=device)
    first = torch.zeros(1, dtype=torch.long, device=device)
    perms = _swap_permutation(torch.cat([first, c]), torch.cat([first, j]), categories)  # (P, C)
    index = torch.zeros(categories, categories, dtype=torch.long, device=device)
    position = torch.arange(1, c.numel() + 1, device=device)
    index[c, j], index[j, c] = position, position
    return perms, index


def arsm_evaluations(categories: int) -> int:
    """Distinct joint swaps per draw of ARSM: ``C(C-1)/2 + 1``."""
    return categories * (categories - 1) // 2 + 1


class ARSM(BinaryPointEstimator):
    """ARSM, augment-REINFORCE-swap-merge (Yin, Yue & Zhou, ICML 2019).

    Per draw, ``f`` at the ``C(C-1)/2 + 1`` distinct joint swaps (every pair ``c < j``, and the draw);
    ``g_{d,c} = sum_j (F[c, j] - 1/C sum_m F[m, j]) (1/C - pi_{d,j})``, averaged over draws. The
    reference codes evaluate the full ``C x C`` grid, duplicates included; this one evaluates each
    distinct swap once (46 evaluations per draw at ``C = 10``).
    """

    name, unbiased = "arsm", True
    reference = "Yin, Yue & Zhou, ICML 2019"
    summary = "every joint swap of pi, merged: C(C-1)/2 + 1 evaluations per draw"
    family = CATEGORICAL
    budget = Budget(
        unit="draws of all joint swaps", group_of=lambda shape: arsm_evaluations(shape[-1]), rule="C(C-1)/2 + 1"
    )
    partial_integration = False

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples // arsm_evaluations(logits_shape[-1]), *logits_shape)

    def sample(self, logits, noise):
        perms, _ = _pairs(logits.shape[-1], noise.device)
        z = _race(logits, _swapped(_log_e(noise), perms))  # (P, draws, *batch, D, C)
        return z.reshape(-1, *z.shape[2:])

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        categories = logits.shape[-1]
        perms, index = _pairs(categories, noise.device)
        f = fb.view(perms.shape[0], *noise.shape[:-2]).movedim(0, -1)[..., index]  # (draws, *batch, C, C)
        centred = f - f.mean(-1, keepdim=True)
        weight = 1 / categories - _dirichlet(noise)  # (draws, *batch, D, C): over j
        if self.partial_integration:
            weight = weight * self._varies(b, perms.shape[0], index)
        return Combined((weight @ centred).mean(0))

    @staticmethod
    def _varies(b, num_swaps, index):
        """``1[the pseudo actions z_d^{c<->j} of variable d over c are not all equal]``, ``(draws, *batch, D, C_j)``."""
        z = b.view(num_swaps, -1, *b.shape[1:]).argmax(-1).movedim(0, -1)  # (draws, *batch, D, P)
        row = z[..., index]  # (draws, *batch, D, C_c, C_j)
        return (row.amax(-2) != row.amin(-2)).to(b.dtype)


class ARSMPlus(ARSM):
    """ARSM+ (Dong, Mnih & Tucker, NeurIPS 2021, "partial integration"): ARSM with each term
    ``(1/C - pi_{d,j})`` kept only where variable ``d``'s pseudo actions in row ``j`` are not all equal."""

    name = "arsm_plus"
    reference = "Dong, Mnih & Tucker, NeurIPS 2021 (ARSM with partial integration)"
    summary = "ARSM with the rows where a variable never moves dropped"
    partial_integration = True


class IndeCateR(BinaryPointEstimator):
    """IndeCateR, the CatLog-derivative trick (De Smet, Sansone & Zuidberg Dos Martires, NeurIPS 2023).

    With ``N`` draws ``z^n`` and ``f`` at every draw with variable ``d`` set to each category ``k``:
    ``g_{d,c} = p_{d,c} (fbar_{d,c} - sum_k p_{d,k} fbar_{d,k})``, ``fbar_{d,k} = 1/N sum_n f(z^n, z_d := k)``.
    ``N D C`` evaluations. The value is ``1/D sum_d sum_k p_{d,k} fbar_{d,k}`` (each ``d`` an
    unbiased estimate of ``E[f]``), so the evaluations are weighted ``p_{d,k} / (N D)``.
    """

    name, unbiased = "indecater", True
    reference = "De Smet, Sansone & Zuidberg Dos Martires, NeurIPS 2023"
    summary = "every variable set to every category, per draw: D C evaluations"
    family = CATEGORICAL
    budget = Budget(unit="draws with every variable set to every category", group_of=lambda s: s[0] * s[1], rule="D C")

    def noise_shape(self, num_samples, logits_shape, **options):
        return (num_samples // (logits_shape[-1] * logits_shape[-2]), *logits_shape)

    def sample(self, logits, noise):
        variables, categories = logits.shape[-2:]
        batch = noise.dim() - 3
        z = CATEGORICAL.sample(logits, noise)[:, None, None]  # (N, 1, 1, *batch, D, C)
        own = torch.eye(variables, dtype=torch.bool, device=noise.device).view(
            1, variables, 1, *[1] * batch, variables, 1
        )
        category = torch.eye(categories, dtype=noise.dtype, device=noise.device).view(
            1, 1, categories, *[1] * batch, 1, categories
        )
        configs = torch.where(own, category, z)  # (N, D, C, *batch, D, C)
        return configs.reshape(-1, *configs.shape[3:])

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        variables, categories = logits.shape[-2:]
        f = fb.view(-1, variables, categories, *fb.shape[1:])  # (N, D, C, *batch)
        fbar = f.mean(0).movedim(0, -1).movedim(0, -1)  # (*batch, D, C)
        p = softmax(logits)
        baseline = (p * fbar).sum(-1, keepdim=True)
        weights = (p.movedim(-1, 0).movedim(-1, 0) / (f.shape[0] * variables)).expand(f.shape)
        return Combined(p * (fbar - baseline), weights.reshape(fb.shape))
