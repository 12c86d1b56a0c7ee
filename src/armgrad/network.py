"""Stochastic binary networks: a chain of Bernoulli layers and the per-layer estimator recipe.

A chain ``x -> b_1 -> b_2 -> ... -> b_T`` with ``q(b_t | b_{t-1}) = Bernoulli(s(phi_t))`` and
``phi_t = layer_t(h_{t-1})`` (``h_0 = x``, ``h_t = b_t``). The objective ``f(b_1, ..., b_T)`` is a
function of a whole configuration, evaluated separately for every batch element.

The recipe (ARM paper, Algorithm 2; DESIGN.md section 1), for every layer ``t``:

1. draw one ancestral sample ``b_1, ..., b_{T-1}`` (it fixes the layers below ``t``);
2. form the estimator's samples for layer ``t`` from its logits ``phi_t`` (an antithetic pair for
   ARM and DisARM, ``K`` draws for REINFORCE-LOO or ARMS, ...);
3. propagate EACH of those samples through the layers above with fresh Bernoulli draws;
4. evaluate ``f`` on every complete configuration, and let the estimator turn the values into
   the gradient for ``phi_t``.

For estimators that evaluate ``f`` only at binary points (those with ``sample``/``combine``
phases: reinforce, reinforce_loo, ar, arm, disarm, arms), the branches of ALL layers are stacked
into ONE call of ``f`` with ``sum_t K_t`` configurations (``2T`` for ARM). The pathwise
estimators (gumbel, st) make one call per layer, and the layers above a relaxed sample are drawn
hard (their gradient path through later layers is not followed: both are biased anyway).
REBAR and RELAX work on one-layer chains only: with layers above, their control ``c(z)`` would
need the upper layers relaxed too, with noise shared between ``c(z)`` and ``c(z~)`` (Tucker et al.,
2017, section 3.3), which is not implemented; drawing them hard would bias the gradient, so a
clear error is raised instead.

Every configuration evaluated is a sample from ``q(b_1, ..., b_T | x)``: each branch has the
right marginal given the layers below. So the mean of ``f`` over all of them is an unbiased
estimate of ``E_q[f]``, and its pathwise gradient trains whatever ``f`` closes over (a decoder)
with every evaluation the estimator paid for, rather than with one extra plain sample.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ._checks import check_logits
from .estimators import get_estimator
from .estimators.base import evaluate, with_gradient

Layer = Callable[[torch.Tensor], torch.Tensor]


def _sample_bernoulli(logits: torch.Tensor, generator) -> torch.Tensor:
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
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


def _configurations(base_samples, base_logits, layers, t, branch, branch_logits, generator):
    """Complete configurations for the branches ``branch (K, *batch, D_t)`` of layer ``t``."""
    k = branch.shape[0]
    below = [b.expand(k, *b.shape) for b in base_samples[:t]]
    below_logits = [phi.detach().expand(k, *phi.shape) for phi in base_logits[:t]]
    above, above_logits = propagate(layers, t, branch, generator)
    return below + [branch] + above, below_logits + [branch_logits.expand(k, *branch_logits.shape)] + above_logits


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
        ``(*batch)``: the mean of ``f`` over every configuration evaluated. Its gradient w.r.t. each
        ``phi_t`` (and so the layers' parameters) is the estimator's for layer ``t``; w.r.t. anything
        ``objective`` closes over, the pathwise gradient of that mean.
    """
    estimators = list(estimator) if isinstance(estimator, (list, tuple)) else [estimator] * len(layers)
    if len(estimators) != len(layers):
        raise ValueError(f"got {len(estimators)} estimators for {len(layers)} layers: give one, or one per layer")
    specs = [get_estimator(e) for e in estimators]
    for spec in specs:
        spec.check_budget(num_samples)
        spec.check_options(options)
        if spec.differentiates_f and len(layers) > 1:
            raise ValueError(
                f"estimator {spec.name!r} is supported on one-layer chains only: its control variate would "
                f"need the {len(layers) - 1} layer(s) above relaxed with shared noise, which armgrad does not "
                f"implement (see armgrad.network); use arm, disarm, reinforce_loo, arms, ar or reinforce"
            )
    # the estimator of layer t replaces b_t and redraws the layers above: b_T itself is never used
    base_samples, base_logits = ancestral_sample(layers, x, generator, sample_last=False)

    fused = [t for t, spec in enumerate(specs) if spec.sample is not None]
    values, gradients = [], []  # (phi_t, its estimated gradient) for every layer
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
        start = 0
        for t, branch, noise in pieces:
            k = branch.shape[0]
            result = specs[t].combine(fb[start : start + k], branch, base_logits[t].detach(), noise)
            gradients.append((base_logits[t], result.grad))
            start += k
        values.append(fb)
    for t, spec in enumerate(specs):
        if spec.sample is not None:
            continue
        phi = base_logits[t] if spec.pathwise else base_logits[t].detach()

        def layer_objective(branch, t=t, phi=phi):
            samples, logits = _configurations(base_samples, base_logits, layers, t, branch, phi.detach(), generator)
            return objective(samples, logits)

        noise = spec.draw_noise(num_samples, phi, generator)
        result = spec.fn(layer_objective, phi, noise, num_samples, **options)
        values.append(result.value.unsqueeze(0).expand(num_samples, *result.value.shape))
        if result.grad is not None:
            gradients.append((base_logits[t], result.grad))
    value = (values[0] if len(values) == 1 else torch.cat(values)).mean(0)
    for phi, g in gradients:
        value = with_gradient(value, phi, g)
    return value
