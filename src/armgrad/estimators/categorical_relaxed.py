"""Biased pathwise categorical estimators: straight-through, Gumbel-softmax, ST Gumbel-softmax, Gumbel-Rao, ReinMax.

Each differentiates ``f`` through its input (``needs_df_db``): ``f`` must be differentiable in the one-hot
vectors it receives; ``gumbel`` also evaluates ``f`` at points of the simplex. Notation: ``phi``
``(*batch, D, C)``, ``pi = softmax(phi)``, ``pi_tau = softmax(phi / tau)``, ``G = -log(-log u)`` Gumbel
noise, ``z`` the one-hot draw ``argmax(phi + G)`` (:meth:`armgrad.families.Categorical.sample`). Option
``temperature`` (``tau``), default 1. Their gradient flows through the value (``Estimate.grad is None``).
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from ..families import CATEGORICAL, softmax
from .base import BINARY, RELAXED, Estimate, Estimator, evaluate, require_differentiable


def _temperature(temperature, name: str, minimum: float = 0.0) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > minimum:
        if minimum:
            raise ValueError(
                f"estimator {name!r} needs temperature >= {minimum:g} (as its authors' code requires), "
                f"got {temperature!r}"
            )
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


class Pathwise(Estimator):
    """Base: ``1/S sum_s f(y_s)`` with ``y`` attached to the logits by :meth:`relax`."""

    family = CATEGORICAL
    unbiased = False
    evaluates_f_at = BINARY
    needs_df_db = True
    options: tuple[str, ...] = ("temperature",)

    @abstractmethod
    def relax(self, logits: torch.Tensor, noise: torch.Tensor, tau: float, **options) -> torch.Tensor:
        """The points ``f`` is evaluated at, attached to ``logits``: ``(S, *batch, D, C)``."""

    def estimate(self, f, logits, noise, num_samples, temperature: float = 1.0, **options) -> Estimate:
        y = self.relax(logits, noise, _temperature(temperature, self.name), **options)
        fy = evaluate(f, y, 2)
        require_differentiable(fy, y, self.name)
        return Estimate(fy.mean(0), None)


class StraightThrough(Pathwise):
    """Straight-through (Bengio et al., 2013): forward at ``z``, backward through ``pi_tau``:
    ``y = z + pi_tau - stop_gradient(pi_tau)``. At ``tau = 1`` exact in expectation for ``f`` linear in ``z``."""

    name = "st"
    reference = "Bengio, Leonard & Courville, 2013"
    summary = "straight-through: forward z, backward through softmax(phi / tau)"

    def relax(self, logits, noise, tau):
        soft = softmax(logits / tau)
        return CATEGORICAL.sample(logits.detach(), noise) + (soft - soft.detach())


class Gumbel(Pathwise):
    """Gumbel-softmax / Concrete (Jang, Gu & Poole; Maddison, Mnih & Teh, ICLR 2017): ``f`` at
    ``y = softmax((phi + G) / tau)``, a point of the simplex, differentiated pathwise."""

    name = "gumbel"
    reference = "Maddison, Mnih & Teh; Jang, Gu & Poole, ICLR 2017"
    summary = "Gumbel-softmax relaxation, f at simplex points (option temperature)"
    evaluates_f_at = RELAXED

    def relax(self, logits, noise, tau):
        return softmax((logits - torch.log(-torch.log(noise))) / tau)


class STGumbel(Pathwise):
    """Straight-through Gumbel-softmax (Jang, Gu & Poole, ICLR 2017; ``F.gumbel_softmax(hard=True)``):
    forward at ``z = argmax(phi + G)``, backward through ``softmax((phi + G) / tau)``."""

    name = "st_gumbel"
    reference = "Jang, Gu & Poole, ICLR 2017"
    summary = "forward z = argmax(phi + G), backward through softmax((phi + G) / tau)"

    def relax(self, logits, noise, tau):
        perturbed = logits - torch.log(-torch.log(noise))
        soft = softmax(perturbed / tau)
        return CATEGORICAL.sample(logits.detach(), noise) + (soft - soft.detach())


class GumbelRao(Pathwise):
    """Gumbel-Rao (Paulus, Maddison & Krause, ICLR 2021): ST Gumbel-softmax with the backward pass averaged
    over ``K`` Gumbel draws conditional on the sampled category (option ``draws``, default 10).

    Given ``z = i`` and ``E ~ Exp(1)^C``: ``phi_i + G_i = log Z - log E_i`` and, for ``j != i``,
    ``phi_j + G_j = -log(E_j exp(-phi_j) + E_i / Z)`` (``Z = sum exp phi``); the backward pass goes
    through ``1/K sum_k softmax((phi + G^k) / tau)`` with the ``G^k`` held constant. Same mean as
    ST Gumbel-softmax, lower variance. Noise: ``(S (K + 1), *batch, D, C)``.
    """

    name = "gumbel_rao"
    reference = "Paulus, Maddison & Krause, ICLR 2021"
    summary = "ST Gumbel-softmax, backward averaged over K conditional Gumbels (option draws=10)"
    options = ("temperature", "draws")

    def noise_shape(self, num_samples, logits_shape, draws: int = 10, **options):
        return (num_samples * (1 + _draws(draws)), *logits_shape)

    def relax(self, logits, noise, tau, draws: int = 10):
        k = _draws(draws)
        s = noise.shape[0] // (k + 1)
        phi = logits.detach()
        z = CATEGORICAL.sample(phi, noise[:s])  # (S, *batch, D, C)
        offset = conditional_gumbels(phi, z, noise[s:].view(k, s, *noise.shape[1:]))  # G^k, held constant
        soft = softmax((logits + offset) / tau).mean(0)
        return z + (soft - soft.detach())


def conditional_gumbels(phi: torch.Tensor, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Gumbels ``G`` drawn given the category: ``phi + G`` has the law of independent ``Gumbel(phi_c)`` given that
    its argmax is ``z``'s category (Paulus, Maddison & Krause, ICLR 2021, appendix). ``phi (*batch, D, C)``, ``z``
    one-hot ``(S, *batch, D, C)``, uniforms ``u (K, S, *batch, D, C)`` -> ``G`` of ``u``'s shape.

    With ``E = -log u ~ Exp(1)`` and ``Z = sum exp phi``: the maximum ``phi_i + G_i = log Z - log E_i`` (the max of
    the race is ``Gumbel(log Z)``, independent of its argmax) and, for ``j != i``, the ``Gumbel(phi_j)`` truncated
    below it, ``phi_j + G_j = -log(E_j exp(-phi_j) + E_i / Z)``.
    """
    log_e = torch.log(-torch.log(u))
    log_z = torch.logsumexp(phi, -1, keepdim=True)
    log_e_i = (log_e * z).sum(-1, keepdim=True)  # log E at the sampled category
    top = log_z - log_e_i
    others = -torch.logaddexp(log_e - phi, log_e_i - log_z)
    return torch.where(z.bool(), top, others) - phi


def _draws(draws) -> int:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(
            f"draws (the number of conditional Gumbel draws of 'gumbel_rao') must be an int >= 1, got {draws!r}"
        )
    return draws


class _ReinMaxCore(torch.autograd.Function):
    """Forward: the one-hot draw ``z``; backward: ReinMax's second-order (Heun) gradient."""

    @staticmethod
    def forward(ctx, logits, z, tau):
        ctx.save_for_backward(logits, z)
        ctx.tau = tau
        return z.clone()

    @staticmethod
    def backward(ctx, grad_z):
        logits, z = ctx.saved_tensors
        pi = softmax(logits)
        half = 0.5 * (softmax(logits / ctx.tau) + z)
        g1 = 2 * grad_z * half
        g1 = g1 - half * g1.sum(-1, keepdim=True)
        g0 = -0.5 * grad_z * pi
        g0 = g0 - pi * g0.sum(-1, keepdim=True)
        g = g0 + g1
        return g - g.mean(-1, keepdim=True), None, None


class ReinMax(Pathwise):
    """ReinMax (Liu et al., NeurIPS 2023): forward at ``z ~ Cat(pi)``; backward
    ``2 J(pi_half) df/dz - 1/2 J(pi) df/dz``, centred, with ``pi_half = (pi_tau + z) / 2`` and
    ``J(x) = diag(x) - x x^T``. At ``tau = 1`` exact in expectation for ``f`` quadratic in ``z``.
    Refuses ``tau < 1``, as its authors' code does."""

    name = "reinmax"
    reference = "Liu, Zhang, Gao, Chen & Wang, NeurIPS 2023"
    summary = "second-order straight-through (Heun's method), tau >= 1"

    def estimate(self, f, logits, noise, num_samples, temperature: float = 1.0, **options) -> Estimate:
        _temperature(temperature, self.name, minimum=1.0 - 1e-12)
        return super().estimate(f, logits, noise, num_samples, temperature, **options)

    def relax(self, logits, noise, tau):
        z = CATEGORICAL.sample(logits.detach(), noise)
        return _ReinMaxCore.apply(logits.expand_as(z), z, tau)
