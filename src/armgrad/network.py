"""Stochastic binary networks: a chain of Bernoulli layers and the per-layer estimator recipe.

A chain ``x -> b_1 -> b_2 -> ... -> b_T`` with ``q(b_t | b_{t-1}) = Bernoulli(s(phi_t))`` and
``phi_t = layer_t(h_{t-1})`` (``h_0 = x``, ``h_t = b_t``). The objective ``f(b_1, ..., b_T)`` is a
function of a whole configuration, evaluated separately for every batch element.

The recipe (ARM paper, Algorithm 2; docs/design.md section 4), for every layer ``t``:

1. draw one ancestral sample ``b_1, ..., b_{T-1}`` (it fixes the layers below ``t``);
2. form the estimator's samples for layer ``t`` from its logits ``phi_t`` (an antithetic pair for
   ARM and DisARM, ``K`` draws for REINFORCE-LOO or ARMS, ...);
3. propagate EACH of those samples through the layers above with fresh Bernoulli draws;
4. evaluate ``f`` on every complete configuration, and let the estimator turn the values into
   the gradient for ``phi_t``.

For estimators that evaluate ``f`` only at binary points (:class:`BinaryPointEstimator` s, with
``sample``/``combine`` phases: reinforce, reinforce_loo, ar, arm, disarm, arms), the branches of
ALL layers are stacked into ONE call of ``f`` with ``sum_t K_t`` configurations (``2T`` for ARM).
The others make one call per layer; for the biased pathwise ones (gumbel, st) the layers above a
relaxed sample are drawn hard (their gradient path through later layers is not followed: both
are biased anyway). REBAR and RELAX (unbiased, ``f`` at binary and relaxed points) follow Tucker et
al. (2017, section 3.3): the layers above a relaxed sample are relaxed too, with one uniform per
upper unit shared by the hard sample and both relaxations, so that ``c(z)`` and ``c(z~)`` see the
same upper noise (:func:`_relaxed_configurations`). ``exact`` on a chain of several layers enumerates every configuration of every layer
jointly (``prod_t 2^{D_t}`` evaluations, at most ``2^20``): the exact expectation and gradients.

Every configuration evaluated is a sample from ``q(b_1, ..., b_T | x)``: each branch has the
right marginal given the layers below. So the mean of ``f`` over all of them is an unbiased
estimate of ``E_q[f]`` (each layer's estimator weights its own configurations, see
:func:`armgrad.estimators.base.value_of`, and the layers' estimates are averaged), and its
pathwise gradient trains whatever ``f`` closes over (a decoder)
with every evaluation the estimator paid for, rather than with one extra plain sample.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ._checks import check_logits
from ._random import uniform
from .estimators import get_estimator, select
from .estimators.base import (BINARY, BINARY_AND_RELAXED, ENUMERATION, RELAXED, BinaryPointEstimator, evaluate,
                              value_of, with_gradient)
from .estimators.exact import MAX_UNITS, all_states, check_units, log_prob

Layer = Callable[[torch.Tensor], torch.Tensor]


def _sample_bernoulli(logits: torch.Tensor, generator) -> torch.Tensor:
    u = uniform(logits.shape, generator, logits.dtype, logits.device)
    return (u < torch.sigmoid(logits)).to(logits.dtype)


def ancestral_sample(layers: Sequence[Layer], x: torch.Tensor, generator=None, num_samples: int | None = None,
                     sample_last: bool = True):
    """One sample of the chain: ``(samples, logits)``, lists of ``T`` tensors ``(*batch, D_t)``.

    With ``num_samples = K``, ``K`` independent samples per example, ``(K, *batch, D_t)``: the first
    layer's logits are computed once per example and shared by the ``K`` draws.
    ``logits`` keep their graph (to the layers' parameters); ``samples`` are binary, no graph.
    With ``sample_last=False`` the last layer's logits are computed but not sampled (``T - 1`` samples).
    """
    samples, logits, h = [], [], x
    for t, layer in enumerate(layers):
        phi = layer(h)
        if t == 0 and num_samples is not None:
            phi = phi.expand(num_samples, *phi.shape)
        check_logits(phi)
        logits.append(phi)
        if t < len(layers) - 1 or sample_last:
            h = _sample_bernoulli(phi.detach(), generator)
            samples.append(h)
    return samples, logits


def propagate(layers: Sequence[Layer], start: int, b: torch.Tensor, generator=None):
    """Fresh draws of the layers above ``start`` given ``b`` at layer ``start``: ``(samples, logits)``.

    ``b`` has any leading shape ``(S, *batch, D_start)``; returns lists for layers
    ``start + 1 .. T - 1``, without graph (these layers get their gradient from their own estimate).
    """
    samples, logits, h = [], [], b
    with torch.no_grad():
        for layer in layers[start + 1 :]:
            phi = layer(h)
            h = _sample_bernoulli(phi, generator)
            samples.append(h)
            logits.append(phi)
    return samples, logits


def _below(base_samples, base_logits, t: int, k: int):
    """The ancestral sample of the layers below ``t`` (and their detached logits), repeated for ``k`` branches."""
    return ([b.expand(k, *b.shape) for b in base_samples[:t]],
            [phi.detach().expand(k, *phi.shape) for phi in base_logits[:t]])


def _configurations(base_samples, base_logits, layers, t, branch, branch_logits, generator):
    """Complete configurations for the branches ``branch (K, *batch, D_t)`` of layer ``t``."""
    k = branch.shape[0]
    below, below_logits = _below(base_samples, base_logits, t, k)
    above, above_logits = propagate(layers, t, branch, generator)
    return below + [branch] + above, below_logits + [branch_logits.expand(k, *branch_logits.shape)] + above_logits


def _relaxed_configurations(base_samples, base_logits, layers, t, stacked, temperature, generator):
    """Configurations for REBAR/RELAX at layer ``t`` (Tucker et al. 2017, section 3.3): ``stacked`` holds
    ``S`` hard samples ``b``, then ``s(z / tau)`` and ``s(z~ / tau)`` (``3S`` rows). Every layer above
    draws ONE ``u`` per draw, shared by the three: the hard row continues with ``H(phi + logit(u))``
    (a Bernoulli(s(phi)) draw), the relaxed rows with ``s((phi + logit(u)) / tau)``, differentiable in
    the relaxed input below, so that the controls ``c(z)`` and ``c(z~)`` see the same upper noise. The
    value and the model's gradients come from the hard rows only; the relaxed rows feed the controls."""
    k, s = stacked.shape[0], stacked.shape[0] // 3
    below, below_logits = _below(base_samples, base_logits, t, k)
    samples, logits, h = [stacked], [base_logits[t].detach().expand(k, *base_logits[t].shape)], stacked
    tau = temperature.to(stacked.dtype)
    for layer in layers[t + 1 :]:
        phi = layer(h)
        u = uniform((s, *phi.shape[1:]), generator, phi.dtype, phi.device)
        z = phi + torch.logit(u.clamp_(min=torch.finfo(phi.dtype).tiny)).repeat(3, *([1] * (phi.dim() - 1)))
        h = torch.cat([(z[:s] > 0).to(phi.dtype), torch.sigmoid(z[s:] / tau)])
        samples.append(h)
        # the relaxed rows' logits stay attached: c(z) must be one differentiable function of z, also where
        # f reads the logits (the hard rows' are detached, as everywhere: no gradient reaches the layers)
        logits.append(torch.cat([phi[:s].detach(), phi[s:]]))
    return below + samples, below_logits + logits


def chain_estimate(
    objective: Callable,
    layers: Sequence[Layer],
    x: torch.Tensor,
    estimator="arm",
    num_samples: int = 2,
    *,
    generator: torch.Generator | None = None,
    **options,
) -> torch.Tensor:
    """Estimate ``E_q[f(b_1, ..., b_T)]`` for a chain of Bernoulli layers, with per-layer gradients.

    Args:
        objective: ``f(samples, logits) -> (S, *batch)``, where ``samples`` and ``logits`` are lists
            of ``T`` tensors ``(S, *batch, D_t)`` describing ``S`` complete configurations (the
            logits are detached: the layer parameters learn only through the estimator).
        layers: ``T`` callables; ``layers[0](x)`` gives ``phi_1 (*batch, D_1)`` and ``layers[t](b_t)``
            gives ``phi_{t+1}``, for inputs with any extra leading dimensions.
        x: the input, ``(*batch, ...)``.
        estimator: a name, an estimator object, or a list of ``T`` of them (one per layer, e.g.
            a RELAX control per layer).
        num_samples: the budget per layer, in evaluations of ``f`` (``T * num_samples`` in all).

    Returns:
        ``(*batch)``: the mean over layers of each layer's estimate of ``E_q[f]`` from the
        configurations it evaluated. Its gradient w.r.t. each ``phi_t`` (and so the layers'
        parameters) is the estimator's for layer ``t``; w.r.t. anything ``objective`` closes
        over, the pathwise gradient of that value.
    """
    estimators = list(estimator) if isinstance(estimator, (list, tuple)) else [estimator] * len(layers)
    if len(estimators) != len(layers):
        raise ValueError(f"got {len(estimators)} estimators for {len(layers)} layers: give one, or one per layer")
    specs = [get_estimator(e) for e in estimators]
    for spec in specs:
        spec.check_budget(num_samples)
        spec.check_options(options)
    if len(layers) > 1:
        _check_multilayer(specs, len(layers))
        if specs[0].evaluates_f_at == ENUMERATION:
            return _enumerate_chain(objective, layers, x, **options)
    # the estimator of layer t replaces b_t and redraws the layers above: b_T itself is never used
    base_samples, base_logits = ancestral_sample(layers, x, generator, sample_last=False)

    fused = [t for t, spec in enumerate(specs) if isinstance(spec, BinaryPointEstimator)]
    values, gradients = [], []  # each layer's estimate of E[f]; (phi_t, its estimated gradient)
    if fused:
        configs, pieces = [], []
        for t in fused:
            spec, phi = specs[t], base_logits[t].detach()
            noise = spec.draw_noise(num_samples, phi, generator)
            branch = spec.sample(phi, noise, **options)
            configs.append(_configurations(base_samples, base_logits, layers, t, branch, phi, generator))
            pieces.append((t, branch, noise))
        stacked, stacked_logits = configs[0] if len(configs) == 1 else (
            [torch.cat([c[j][i] for c in configs]) for i in range(len(layers))] for j in (0, 1))
        fb = evaluate(lambda _: objective(stacked, stacked_logits), stacked[0])
        fd, start, uniform = fb.detach(), 0, True
        for t, branch, noise in pieces:
            k = branch.shape[0]
            grad, weights = specs[t].combine(fd[start : start + k], branch, base_logits[t].detach(), noise)
            gradients.append((base_logits[t], grad))
            values.append((fb[start : start + k], weights))
            uniform = uniform and weights is None
            start += k
        # every fused layer evaluates num_samples configurations: with uniform weights, the mean
        # of the layers' means is the mean over all of them, taken in one reduction
        values = [(fb, None)] if uniform else values
    for t, spec in enumerate(specs):
        if isinstance(spec, BinaryPointEstimator):
            continue

        def layer_objective(branch, t=t, spec=spec):
            if spec.unbiased and spec.evaluates_f_at == BINARY_AND_RELAXED and t < len(layers) - 1:
                samples, logits = _relaxed_configurations(base_samples, base_logits, layers, t, branch,
                                                          spec.temperature, generator)
            else:
                samples, logits = _configurations(base_samples, base_logits, layers, t, branch,
                                                  base_logits[t].detach(), generator)
            return objective(samples, logits)

        # a pathwise estimator differentiates through the attached logits; the others detach them
        noise = spec.draw_noise(num_samples, base_logits[t], generator)
        value, grad = spec.estimate(layer_objective, base_logits[t], noise, num_samples, **options)
        values.append((value.unsqueeze(0), None))
        if grad is not None:
            gradients.append((base_logits[t], grad))
    if len(values) == 1:
        value = value_of(*values[0])
    else:
        value = torch.stack([value_of(v, w) for v, w in values]).mean(0)
    for phi, g in gradients:
        value = with_gradient(value, phi, g)
    return value


def _check_multilayer(specs, num_layers: int) -> None:
    """Refuse what the per-layer recipe cannot do without bias on a chain of several layers."""
    enumerating = [spec.evaluates_f_at == ENUMERATION for spec in specs]
    if any(enumerating) and not all(enumerating):
        raise ValueError(
            "estimator 'exact' enumerates every layer of the chain jointly: give it for all layers, "
            "not mixed with Monte Carlo estimators"
        )
    for spec in specs:
        if spec.unbiased and spec.evaluates_f_at == RELAXED:
            raise ValueError(
                f"estimator {spec.name!r} evaluates f only at relaxed points and claims no bias: the chain recipe "
                f"has no way to relax the layers above for it; use one that evaluates f at binary points: "
                f"{', '.join(select(unbiased=True, evaluates_f_at=BINARY, learned=False))}"
            )


def _enumerate_chain(objective, layers, x, max_units: int = MAX_UNITS) -> torch.Tensor:
    """``E_q[f]`` over every configuration of every layer, ``sum_b q(b) f(b)``, with exact gradients.

    ``q(b) = prod_t q(b_t | b_{t-1})`` keeps its graph to the layers' parameters, so autograd of
    the value gives the exact gradient for the layers (the score term ``sum_b q(b) f(b) d log q``)
    and for whatever ``objective`` closes over (``sum_b q(b) df``). At most ``2^max_units``
    configurations in all.
    """
    samples, logits, log_q, units = [], [], None, 0
    phi = layers[0](x).unsqueeze(0)  # (N = 1, *batch, D_1)
    for t, layer in enumerate(layers):
        if t:
            phi = layer(samples[-1])  # (N, *batch, D_t): one row per configuration of the layers below
        check_logits(phi)
        units += phi.shape[-1]
        check_units(units, max_units)
        states = all_states(phi.shape[-1], phi.dtype, phi.device)  # (M, D_t)
        m, rest = states.shape[0], phi.shape
        grow = lambda v: v.unsqueeze(0).expand(m, *v.shape).reshape(m * v.shape[0], *v.shape[1:])  # noqa: E731
        b = states.view(m, *([1] * (phi.dim() - 1)), phi.shape[-1]).expand(m, *rest).reshape(m * rest[0], *rest[1:])
        phi = grow(phi)
        samples, logits = [grow(s) for s in samples] + [b], [grow(p) for p in logits] + [phi]
        step = log_prob(b, phi)
        log_q = step if log_q is None else grow(log_q) + step
    fb = evaluate(lambda _: objective(samples, [p.detach() for p in logits]), samples[0])
    return value_of(fb, log_q.exp())
