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
same upper noise (:func:`_relaxed_configurations`). ``exact`` on a chain of several layers enumerates
every configuration of every layer jointly (``prod_t 2^{D_t}`` evaluations, at most ``2^20``): the
exact expectation and gradients.

Categorical layers (``q(z_t | z_{t-1}) = Cat(softmax(phi_t))``, logits ``(*batch, D_t, C_t)``, one-hot
samples) follow the same recipe with the categorical estimators (:mod:`armgrad.categorical`), alone or
mixed with Bernoulli layers: each layer's family comes from its estimator (an object carries it, a
name is looked up in ``family``), and ``layers[t]`` receives the one-hot samples of the layer below.
REBAR and RELAX relax the layers above with sigmoids, so they refuse a chain with a categorical layer above.

Every configuration evaluated is a sample from ``q(b_1, ..., b_T | x)``: each branch has the
right marginal given the layers below. So the mean of ``f`` over all of them is an unbiased
estimate of ``E_q[f]`` (each layer's estimator weights its own configurations, see
:func:`armgrad.estimators.base.value_of`, and the layers' estimates are averaged), and its
pathwise gradient trains whatever ``f`` closes over (a decoder)
with every evaluation the estimator paid for, rather than with one extra plain sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch

from ._checks import check_generator
from ._random import uniform
from .estimators import REGISTRY, get_estimator, select
from .estimators.base import (
    BINARY,
    BINARY_AND_RELAXED,
    ENUMERATION,
    RELAXED,
    BinaryPointEstimator,
    evaluate,
    value_of,
    with_gradient,
)
from .estimators.exact import MAX_UNITS, check_units
from .families import BERNOULLI, FAMILIES, Family

Layer = Callable[[torch.Tensor], torch.Tensor]


def _sample(family: Family, logits: torch.Tensor, generator) -> torch.Tensor:
    u = uniform(logits.shape, generator, logits.dtype, logits.device)
    return family.sample(logits, u)


def _families(families, num_layers: int) -> list:
    return [BERNOULLI] * num_layers if families is None else list(families)


def ancestral_sample(
    layers: Sequence[Layer],
    x: torch.Tensor,
    generator=None,
    num_samples: int | None = None,
    sample_last: bool = True,
    families: Sequence[Family] | None = None,
    validate: bool = True,
):
    """One sample of the chain: ``(samples, logits)``, lists of ``T`` tensors ``(*batch, D_t)``
    (``(*batch, D_t, C_t)`` for a categorical layer; ``families``: one per layer, Bernoulli by default).

    With ``num_samples = K``, ``K`` independent samples per example, ``(K, *batch, D_t)``: the first
    layer's logits are computed once per example and shared by the ``K`` draws.
    ``logits`` keep their graph (to the layers' parameters); ``samples`` are binary, no graph.
    With ``sample_last=False`` the last layer's logits are computed but not sampled (``T - 1`` samples).
    ``validate=False`` skips the logits' finiteness check (see :func:`chain_estimate`).
    """
    families = _families(families, len(layers))
    samples, logits, h = [], [], x
    for t, layer in enumerate(layers):
        phi = layer(h)
        if t == 0 and num_samples is not None:
            phi = phi.expand(num_samples, *phi.shape)
        if validate:
            families[t].check_logits(phi)
        logits.append(phi)
        if t < len(layers) - 1 or sample_last:
            h = _sample(families[t], phi.detach(), generator)
            samples.append(h)
    return samples, logits


def propagate(
    layers: Sequence[Layer], start: int, b: torch.Tensor, generator=None, families: Sequence[Family] | None = None
):
    """Fresh draws of the layers above ``start`` given ``b`` at layer ``start``: ``(samples, logits)``.

    ``b`` has any leading shape ``(S, *batch, D_start)``; returns lists for layers
    ``start + 1 .. T - 1``, without graph (these layers get their gradient from their own estimate).
    """
    families = _families(families, len(layers))
    samples, logits, h = [], [], b
    with torch.no_grad():
        for layer, family in zip(layers[start + 1 :], families[start + 1 :]):
            phi = layer(h)
            h = _sample(family, phi, generator)
            samples.append(h)
            logits.append(phi)
    return samples, logits


def _below(base_samples, base_logits, t: int, k: int):
    """The ancestral sample of the layers below ``t`` (and their detached logits), repeated for ``k`` branches."""
    return (
        [b.expand(k, *b.shape) for b in base_samples[:t]],
        [phi.detach().expand(k, *phi.shape) for phi in base_logits[:t]],
    )


def _configurations(base_samples, base_logits, layers, t, branch, branch_logits, generator, families=None):
    """Complete configurations for the branches ``branch (K, *batch, D_t)`` of layer ``t``."""
    k = branch.shape[0]
    below, below_logits = _below(base_samples, base_logits, t, k)
    above, above_logits = propagate(layers, t, branch, generator, families)
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
    family=None,
    validate: bool = True,
    **options,
) -> torch.Tensor:
    """Estimate ``E_q[f(b_1, ..., b_T)]`` for a chain of Bernoulli or categorical layers, with per-layer gradients.

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
        family: the family of every layer (``"bernoulli"``, ``"categorical"``), or a list of one per layer,
            in which estimator names are looked up; by default an estimator object's own family, and
            Bernoulli for a name.
        validate: check that every layer's logits and the values of ``f`` at the fused configurations (the
            estimators that evaluate ``f`` only at binary points) are finite, with a clear ``ValueError``
            otherwise. Each check is a reduction and, on the CPU, a read back to the host; a training loop
            that watches its loss for divergence (armgrad's do) passes ``False``, and a non-finite value
            then shows in the value returned. The other estimators check their own ``f`` whatever it says.

    Returns:
        ``(*batch)``: the mean over layers of each layer's estimate of ``E_q[f]`` from the
        configurations it evaluated. Its gradient w.r.t. each ``phi_t`` (and so the layers'
        parameters) is the estimator's for layer ``t``; w.r.t. anything ``objective`` closes
        over, the pathwise gradient of that value.
    """
    if not layers:
        raise ValueError("chain_estimate needs at least one layer: layers is empty")
    for t, layer in enumerate(layers):
        if not callable(layer):
            raise TypeError(f"layers[{t}] must be callable (x -> phi_1, b_t -> phi_t+1), got {type(layer).__name__}")
    if isinstance(x, torch.Tensor):
        check_generator(generator, x.device)
    estimators = list(estimator) if isinstance(estimator, (list, tuple)) else [estimator] * len(layers)
    if len(estimators) != len(layers):
        raise ValueError(f"got {len(estimators)} estimators for {len(layers)} layers: give one, or one per layer")
    families = _layer_families(family, estimators)
    specs = [get_estimator(e, fam) for e, fam in zip(estimators, families)]
    for spec in specs:
        spec.check_options(options)
    if len(layers) > 1:
        _check_multilayer(specs, len(layers))
        if specs[0].evaluates_f_at == ENUMERATION:
            return _enumerate_chain(objective, layers, x, families, **options)
    # the estimator of layer t replaces b_t and redraws the layers above: b_T itself is never used
    base_samples, base_logits = ancestral_sample(
        layers, x, generator, sample_last=False, families=families, validate=validate
    )
    for spec, phi in zip(specs, base_logits):
        spec.check_budget(num_samples, spec.family.event_shape(phi.shape))

    fused = [t for t, spec in enumerate(specs) if isinstance(spec, BinaryPointEstimator)]
    values, gradients = [], []  # each layer's estimate of E[f]; (phi_t, its estimated gradient)
    if fused:
        configs, pieces = [], []
        for t in fused:
            spec, phi = cast(BinaryPointEstimator, specs[t]), base_logits[t].detach()
            noise = spec.draw_noise(num_samples, phi, generator, **options)
            branch = spec.sample(phi, noise, **options)
            configs.append(_configurations(base_samples, base_logits, layers, t, branch, phi, generator, families))
            pieces.append((t, phi, branch, noise))
        stacked, stacked_logits = (
            configs[0]
            if len(configs) == 1
            else ([torch.cat([c[j][i] for c in configs]) for i in range(len(layers))] for j in (0, 1))
        )
        fb = evaluate(lambda _: objective(stacked, stacked_logits), stacked[0], families[0].event_dims, validate)
        fd, start, uniform, alone = fb.detach(), 0, True, len(pieces) == 1  # one layer: all values are its own
        for t, phi, branch, noise in pieces:
            mine = slice(start, start + branch.shape[0])
            grad, weights = cast(BinaryPointEstimator, specs[t]).combine(
                fd if alone else fd[mine], branch, phi, noise, **options
            )
            gradients.append((base_logits[t], grad, specs[t].family))
            values.append((fb if alone else fb[mine], weights))
            uniform = uniform and weights is None
            start = mine.stop
        # every fused layer evaluates num_samples configurations: with uniform weights, the mean
        # of the layers' means is the mean over all of them, taken in one reduction
        values = [(fb, None)] if uniform else values
    for t, spec in enumerate(specs):
        if isinstance(spec, BinaryPointEstimator):
            continue

        def layer_objective(branch, t=t, spec=spec):
            if spec.unbiased and spec.evaluates_f_at == BINARY_AND_RELAXED and t < len(layers) - 1:
                samples, logits = _relaxed_configurations(
                    base_samples, base_logits, layers, t, branch, spec.temperature, generator
                )
            else:
                samples, logits = _configurations(
                    base_samples, base_logits, layers, t, branch, base_logits[t].detach(), generator, families
                )
            return objective(samples, logits)

        # a pathwise estimator differentiates through the attached logits; the others detach them
        noise = spec.draw_noise(num_samples, base_logits[t], generator, **options)
        layer_value, layer_grad = spec.estimate(layer_objective, base_logits[t], noise, num_samples, **options)
        values.append((layer_value.unsqueeze(0), None))
        if layer_grad is not None:
            gradients.append((base_logits[t], layer_grad, spec.family))
    if len(values) == 1:
        value = value_of(*values[0])
    else:
        value = torch.stack([value_of(v, w) for v, w in values]).mean(0)
    for phi, g, fam in gradients:
        value = with_gradient(value, phi, g, fam.event_dims)
    return value


def _layer_families(family, estimators) -> list:
    """The family of each layer: ``family`` (one, or one per layer) or each estimator object's own."""
    if family is None:
        return [getattr(e, "family", BERNOULLI) for e in estimators]
    wanted = list(family) if isinstance(family, (list, tuple)) else [family] * len(estimators)
    if len(wanted) != len(estimators):
        raise ValueError(f"got {len(wanted)} families for {len(estimators)} layers: give one, or one per layer")
    out = []
    for f in wanted:
        if isinstance(f, Family):
            out.append(f)
        elif f in FAMILIES:
            out.append(FAMILIES[f])
        else:
            raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, got {f!r}")
    return out


def _check_multilayer(specs, num_layers: int) -> None:
    """Refuse what the per-layer recipe cannot do without bias on a chain of several layers."""
    enumerating = [spec.evaluates_f_at == ENUMERATION for spec in specs]
    if any(enumerating) and not all(enumerating):
        raise ValueError(
            "estimator 'exact' enumerates every layer of the chain jointly: give it for all layers, "
            "not mixed with Monte Carlo estimators"
        )
    for t, spec in enumerate(specs):
        if spec.evaluates_f_at == BINARY_AND_RELAXED and any(s.family is not BERNOULLI for s in specs[t + 1 :]):
            raise ValueError(
                f"estimator {spec.name!r} relaxes the layers above its own with sigmoids, and a layer above is "
                f"{next(s.family.name for s in specs[t + 1 :] if s.family is not BERNOULLI)}; use an estimator "
                f"that evaluates f only at discrete points, such as 'disarm'"
            )
        if spec.unbiased and spec.evaluates_f_at == RELAXED:
            raise ValueError(
                f"estimator {spec.name!r} evaluates f only at relaxed points and claims no bias: the chain recipe "
                f"has no way to relax the layers above for it; use one that evaluates f at binary points: "
                f"{', '.join(select(REGISTRY[spec.family], unbiased=True, evaluates_f_at=BINARY, learned=False))}"
            )


def _enumerate_chain(objective, layers, x, families, max_units: int = MAX_UNITS) -> torch.Tensor:
    """``E_q[f]`` over every configuration of every layer, ``sum_b q(b) f(b)``, with exact gradients.

    ``q(b) = prod_t q(b_t | b_{t-1})`` keeps its graph to the layers' parameters, so autograd of
    the value gives the exact gradient for the layers (the score term ``sum_b q(b) f(b) d log q``)
    and for whatever ``objective`` closes over (``sum_b q(b) df``). At most ``2^max_units``
    configurations in all.
    """
    samples: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    log_q, units, count = torch.zeros(()), 0, 1
    phi = layers[0](x).unsqueeze(0)  # (N = 1, *batch, D_1)
    for t, (layer, family) in enumerate(zip(layers, families)):
        if t:
            phi = layer(samples[-1])  # (N, *batch, *event_t): one row per configuration of the layers below
        family.check_logits(phi)
        event = family.event_shape(phi.shape)
        units, count = units + event[0], count * family.num_states(event)
        if all(f is BERNOULLI for f in families):
            check_units(units, max_units)
        elif count > 2**max_units:
            raise ValueError(
                f"exact enumeration of the chain needs {count} configurations, more than "
                f"2**{max_units}; use a Monte Carlo estimator"
            )
        states = family.states(event, phi.dtype, phi.device)  # (M, *event)
        m, rest, event_dims = states.shape[0], phi.shape, len(event)
        grow = lambda v, m=m: v.unsqueeze(0).expand(m, *v.shape).reshape(m * v.shape[0], *v.shape[1:])  # noqa: E731
        view = (m,) + (1,) * (phi.dim() - event_dims) + tuple(event)
        b = states.view(view).expand(m, *rest).reshape(m * rest[0], *rest[1:])
        phi = grow(phi)
        samples, logits = [grow(s) for s in samples] + [b], [grow(p) for p in logits] + [phi]
        step = family.log_prob(b, phi)
        log_q = step if t == 0 else grow(log_q) + step
    fb = evaluate(lambda _: objective(samples, [p.detach() for p in logits]), samples[0], families[0].event_dims)
    return value_of(fb, log_q.exp())
