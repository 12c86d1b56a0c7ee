"""REBAR and RELAX: REINFORCE with a control variate built from a continuous relaxation.

Notation as in docs/design.md section 1: ``phi`` logits ``(*batch, D)``, ``p = s(phi)``,
``z = phi + logit(u)``, ``b = H(z) = 1[z > 0]`` (a Bernoulli(p) draw), and ``z~`` drawn from
``z | b`` with fresh ``v ~ U(0, 1)``, reparameterised so that it depends on ``phi``:

    b = 1:  z~ =  log(1 + v / ((1 - v) (1 - p)))
    b = 0:  z~ = -log(1 + v / ((1 - v) p))

For any control ``c`` that is differentiable in ``z``,

    g = (f(b) - c(z~)) d log q(b) / d phi + d c(z) / d phi - d c(z~) / d phi

is unbiased (Tucker et al., 2017, eq. 3; Grathwohl et al., 2018, eq. 4): the first and last terms
together have the expectation of ``-d E[c(z)] / d phi``, which the middle term adds back. Keeping the
dependence of ``z~`` on ``phi`` is what makes the last term right; dropping it is a classic porting
bug that biases the estimate.

- REBAR: ``c(z) = eta f(s(z / tau))``, with scale ``eta`` and temperature ``tau``.
- RELAX: ``c(z) = eta f(s(z / tau)) + r_rho(s(z / tau))`` with a small neural network ``r``.

The control parameters are trained, as in the papers, to minimise the estimator's variance, i.e.
``E[|g|^2]`` (the mean is untouched by the control). The estimators are
:class:`~armgrad.estimators.base.LearnedControlEstimator` s (``nn.Module`` s): after each
estimate, ``backward_variance`` accumulates the gradient of
``mean |g|^2`` into the control parameters' ``.grad`` only (never into the model's parameters,
even when ``f`` closes over them), for the caller's own optimiser to step::

    relax = armgrad.ESTIMATORS["relax"].create(num_units=D)
    control_opt = torch.optim.Adam(relax.parameters(), lr=1e-3)
    loss = armgrad.estimate(f, logits, relax, num_samples=3).mean()
    loss.backward(); model_opt.step()                       # the model, as usual
    control_opt.zero_grad(); relax.backward_variance(); control_opt.step()   # the controls

Cost: three evaluations of ``f`` per draw (at ``b``, ``s(z / tau)`` and ``s(z~ / tau)``), made in one
stacked call, plus one backward pass through ``f``. ``f`` must accept relaxed values in (0, 1) and
be differentiable in them.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .base import BINARY_AND_RELAXED, Budget, Estimate, LearnedControlEstimator, evaluate, require_differentiable


def conditional_relaxed(logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z~ ~ z | b`` from uniforms ``v``, differentiable in ``logits`` (see the module docstring).

    Shapes: ``logits (*batch, D)``, ``b`` and ``v`` ``(S, *batch, D)`` -> ``(S, *batch, D)``.
    """
    # log(1 + odds / s(-phi)) = logaddexp(log odds, log s(-phi)) - log s(-phi): finite for any phi, and so
    # are its gradients (the direct form divides by a sigmoid that underflows to 0 at |phi| ~ 100 in
    # float32, and the branch torch.where does not take then sends 0 * inf = nan into the gradients)
    log_odds = torch.logit(v)
    low, high = F.logsigmoid(-logits), F.logsigmoid(logits)
    above = torch.logaddexp(log_odds, low) - low
    below = high - torch.logaddexp(log_odds, high)
    return torch.where(b > 0, above, below)


class ControlVariateEstimator(LearnedControlEstimator):
    """Base of REBAR and RELAX: the estimator of the module docstring with a control ``c``.

    Subclasses define :meth:`control`, mapping relaxed samples ``(S, *batch, D)`` and their
    ``f`` values ``(S, *batch)`` to ``c`` of shape ``(S, *batch)``.
    """

    unbiased = True
    evaluates_f_at = BINARY_AND_RELAXED
    budget = Budget(group=3, unit="triples", minimum=3)
    needs_df_db = True

    def __init__(self, num_units: int | None = None, temperature: float = 0.5, scale: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def noise_shape(self, num_samples, logits_shape, **options):
        return (2, num_samples // 3, *logits_shape)  # u for z and v for z~, one of each per draw

    def control(self, relaxed: torch.Tensor, f_relaxed: torch.Tensor) -> torch.Tensor:
        """REBAR's control: ``eta f(relaxed)``, the learned scale times ``f`` at the relaxed sample."""
        return self.scale.to(f_relaxed.dtype) * f_relaxed

    def estimate(self, f, logits, noise, num_samples) -> Estimate:
        """The estimate of the module docstring; in training mode, also the variance objective's gradient."""
        with torch.enable_grad():
            phi = logits.detach().requires_grad_(True)
            u, v = noise[0].to(phi.dtype), noise[1].to(phi.dtype)
            z = phi + torch.logit(u)
            b = (z > 0).to(phi.dtype)
            z_cond = conditional_relaxed(phi, b, v)
            tau = self.temperature.to(phi.dtype)
            relaxed = torch.sigmoid(torch.cat([z, z_cond]) / tau)
            stacked = torch.cat([b, relaxed])
            fb = evaluate(f, stacked)
            require_differentiable(fb, stacked, self.name)
            draws = b.shape[0]
            f_hard, f_relaxed = fb[:draws], fb[draws:]
            c = self.control(relaxed, f_relaxed)
            c_z, c_cond = c[:draws], c[draws:]
            (pathwise,) = torch.autograd.grad((c_z - c_cond).sum(), phi, create_graph=True)
            score = b - torch.sigmoid(phi.detach())
            grad = ((f_hard.detach() - c_cond).unsqueeze(-1) * score).mean(0) + pathwise / draws
            self.store_variance_gradient(grad)
        return Estimate(f_hard.mean(0), grad.detach())


class Rebar(ControlVariateEstimator):
    """REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, NeurIPS 2017).

    ``c(z) = eta f(s(z / tau))``; ``eta`` (``scale``) and ``tau`` (``temperature``) are parameters.
    ``num_units`` is accepted, and unused, so that every estimator class is created alike. By name
    (``"rebar"``), the registry's object is used: fixed controls ``eta = 1``, ``tau = 0.5``
    (unbiased, not trained).
    """

    name = "rebar"
    reference = "Tucker et al., NeurIPS 2017"
    summary = "REINFORCE + control eta f(s(z/tau)); f at b, s(z/tau), s(z~/tau)"


class Relax(ControlVariateEstimator):
    """RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud, ICLR 2018) for Bernoulli units.

    ``c(z) = eta f(s(z / tau)) + r(s(z / tau))``, ``r`` an MLP ``D -> hidden -> hidden -> 1``
    (tanh), whose last layer starts at zero so that RELAX starts as REBAR. Its size depends on
    ``D``: the registry's object (``num_units=None``) has no network and refuses to estimate; make
    one with ``ESTIMATORS["relax"].create(num_units=D)``.
    """

    name = "relax"
    reference = "Grathwohl et al., ICLR 2018"
    summary = "REBAR control + learned network r(s(z/tau))"

    def __init__(self, num_units: int | None = None, hidden: int = 32, temperature: float = 0.5, scale: float = 1.0):
        super().__init__(num_units, temperature, scale)
        self.network = None
        if num_units is not None:
            self.network = nn.Sequential(
                nn.Linear(num_units, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
            )
            last = cast(nn.Linear, self.network[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def estimate(self, f, logits, noise, num_samples) -> Estimate:
        if self.network is None:
            raise ValueError(
                "estimator 'relax' carries a learned control network: create it with "
                "armgrad.ESTIMATORS['relax'].create(num_units=D) and pass that object as the estimator"
            )
        return super().estimate(f, logits, noise, num_samples)

    def control(self, relaxed: torch.Tensor, f_relaxed: torch.Tensor) -> torch.Tensor:
        """RELAX's control: ``eta f(relaxed) + c(relaxed)``, with ``c`` the learned network."""
        assert self.network is not None  # estimate() refused the estimator without one
        first = cast(nn.Linear, self.network[0])
        if relaxed.shape[-1] != first.in_features:
            raise ValueError(
                f"this Relax estimator was built for {first.in_features} units, got logits with D = {relaxed.shape[-1]}"
            )
        if relaxed.dtype != first.weight.dtype:
            raise TypeError(
                f"this Relax estimator's network is {first.weight.dtype} but the logits are "
                f"{relaxed.dtype}: move it with .to({relaxed.dtype})"
            )
        return super().control(relaxed, f_relaxed) + self.network(relaxed).squeeze(-1)
