"""REBAR and RELAX: REINFORCE with a control variate built from a continuous relaxation.

Notation as in DESIGN.md section 1: ``phi`` logits ``(*batch, D)``, ``p = s(phi)``,
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
``E[|g|^2]`` (the mean is untouched by the control). The estimator objects are ``nn.Module`` s:
after each estimate, :meth:`ControlVariateEstimator.backward_variance` accumulates the gradient of
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

from dataclasses import replace

import torch
from torch import nn

from .base import Estimate, Estimator, evaluate, require_differentiable


def conditional_relaxed(logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z~ ~ z | b`` from uniforms ``v``, differentiable in ``logits`` (see the module docstring).

    Shapes: ``logits (*batch, D)``, ``b`` and ``v`` ``(S, *batch, D)`` -> ``(S, *batch, D)``.
    """
    odds = v / (1 - v)
    above = torch.log1p(odds / torch.sigmoid(-logits))
    below = -torch.log1p(odds / torch.sigmoid(logits))
    return torch.where(b > 0, above, below)


def _triples(num_samples: int, shape: torch.Size) -> tuple:
    return (2, num_samples // 3, *shape)  # u for z and v for z~, one of each per draw


class ControlVariateEstimator(nn.Module):
    """Base of REBAR and RELAX: the estimator of the module docstring with a control ``c``.

    Subclasses define :meth:`control`, mapping relaxed samples ``(S, *batch, D)`` and their
    ``f`` values ``(S, *batch)`` to ``c`` of shape ``(S, *batch)``.
    Pass the object wherever an estimator name is accepted (``armgrad.estimate(f, logits, est, 3)``).
    """

    spec: Estimator

    def __init__(self, num_units: int | None = None, temperature: float = 0.5, scale: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self._variance = None

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def as_estimator(self) -> Estimator:
        """The registry entry for this object, with its ``fn`` bound to these parameters."""
        return replace(self.spec, fn=self.estimate_fn)

    def control(self, relaxed: torch.Tensor, f_relaxed: torch.Tensor) -> torch.Tensor:
        return self.scale * f_relaxed

    def estimate_fn(self, f, logits, noise, num_samples) -> Estimate:
        """Estimator function (see :mod:`armgrad.estimators.base`); differentiates the variance too."""
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
            require_differentiable(fb, stacked, self.spec.name)
            draws = b.shape[0]
            f_hard, f_relaxed = fb[:draws], fb[draws:]
            c = self.control(relaxed, f_relaxed)
            c_z, c_cond = c[:draws], c[draws:]
            (pathwise,) = torch.autograd.grad((c_z - c_cond).sum(), phi, create_graph=True)
            score = b - torch.sigmoid(phi.detach())
            grad = ((f_hard.detach() - c_cond).unsqueeze(-1) * score).mean(0) + pathwise / draws
            self._store_variance_gradient(grad)
        return Estimate(f_hard.mean(0), grad.detach())

    def _store_variance_gradient(self, grad: torch.Tensor) -> None:
        """Differentiate ``mean |g|^2`` w.r.t. the trainable control parameters, right away.

        Done inside the estimate, with the graph retained, so that the caller may backpropagate
        the model's loss and call :meth:`backward_variance` in either order. Skipped in eval mode
        (``estimator.eval()``), e.g. while diagnostics draw many estimates.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not self.training or not params or not grad.requires_grad:
            self._variance = None
            return
        loss = (grad**2).sum(-1).mean()
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        self._variance = (loss.detach(), list(zip(params, grads)))

    def backward_variance(self) -> torch.Tensor:
        """Accumulate ``d mean|g|^2 / d control parameters`` of the last estimate into their ``.grad``.

        ``mean|g|^2`` (over the batch) is the variance objective of REBAR and RELAX: the control
        leaves the mean of ``g`` unchanged. Only this module's parameters receive gradient, even
        when ``f`` closes over model parameters. Returns the objective's value.
        """
        if self._variance is None:
            raise RuntimeError(
                f"{type(self).__name__}: no estimate with trainable controls made since the last call; "
                "call armgrad.estimate or armgrad.grad with this object first"
            )
        loss, grads = self._variance
        for param, g in grads:
            if g is not None:
                param.grad = g.detach() if param.grad is None else param.grad + g.detach()
        self._variance = None
        return loss


class Rebar(ControlVariateEstimator):
    """REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, NeurIPS 2017).

    ``c(z) = eta f(s(z / tau))``; ``eta`` (``scale``) and ``tau`` (``temperature``) are parameters.
    ``num_units`` is accepted, and unused, so that every estimator class is created alike.
    """


class Relax(ControlVariateEstimator):
    """RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud, ICLR 2018) for Bernoulli units.

    ``c(z) = eta f(s(z / tau)) + r(s(z / tau))``, ``r`` an MLP ``D -> hidden -> hidden -> 1``
    (tanh), whose last layer starts at zero so that RELAX starts as REBAR.
    """

    def __init__(self, num_units: int, hidden: int = 32, temperature: float = 0.5, scale: float = 1.0):
        super().__init__(num_units, temperature, scale)
        self.network = nn.Sequential(
            nn.Linear(num_units, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )
        nn.init.zeros_(self.network[-1].weight)
        nn.init.zeros_(self.network[-1].bias)

    def control(self, relaxed: torch.Tensor, f_relaxed: torch.Tensor) -> torch.Tensor:
        if relaxed.shape[-1] != self.network[0].in_features:
            raise ValueError(
                f"this Relax estimator was built for {self.network[0].in_features} units, got logits "
                f"with D = {relaxed.shape[-1]}"
            )
        if relaxed.dtype != self.network[0].weight.dtype:
            raise TypeError(
                f"this Relax estimator's network is {self.network[0].weight.dtype} but the logits are "
                f"{relaxed.dtype}: move it with .to({relaxed.dtype})"
            )
        return self.scale * f_relaxed + self.network(relaxed).squeeze(-1)


def _spec(name: str, reference: str, summary: str, create) -> Estimator:
    return Estimator(
        name, fn=None, unbiased=True, reference=reference, summary=summary, relaxed=True,
        group=3, group_name="triples", min_samples=3,
        noise_shape=_triples, differentiates_f=True, create=create,
    )


Rebar.spec = _spec("rebar", "Tucker et al., NeurIPS 2017",
                   "REINFORCE + control eta f(s(z/tau)); f at b, s(z/tau), s(z~/tau)", Rebar)
Relax.spec = _spec("relax", "Grathwohl et al., ICLR 2018",
                   "REBAR control + learned network r(s(z/tau))", Relax)
