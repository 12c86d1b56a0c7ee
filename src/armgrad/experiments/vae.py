"""Discrete VAEs trained with any estimator of the registry (the DisARM protocol by default).

Reads top to bottom: configuration, the bounds, the training loss, evaluation, then
:func:`train_runs`: the runs' models, estimators and optimisers, resume, and the loop from batch
to checkpoint, for one run (``armgrad vae``) or several side by side (``armgrad study``). The
estimators know nothing of VAEs and the model nothing of estimators;
:func:`armgrad.network.chain_estimate` wires the encoder's layers to the estimator. The pieces every
run shares (the checkpoint file, the sharded backward pass, the results) come from :mod:`.training`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import cast

import torch

from .. import multisample
from .._random import for_runs
from ..data import load_dataset
from ..diagnostics import controls_frozen
from ..estimators import ENUMERATION, REGISTRY, get_estimator
from ..families import BERNOULLI, CATEGORICAL
from ..models import stacked
from ..models.vae import DiscreteVAE, bernoulli_log_prob
from ..network import chain_estimate
from . import parallel
from .mixture import RunMixture
from .reporting import log, progress
from .training import (
    LOG_EVERY,
    ConfigurationError,
    DivergenceGuard,
    RunLog,
    TrainingConfig,
    adam,
    backward_step,
    check_same_configuration,
    common_results,
    control_parameters,
    estimator_state,
    finish,
    load_estimator_state,
    make_estimators,
    noise_generators,
    restore_generators,
    training_row,
    with_controls,
    zero_grads,
)


@dataclass
class VAEConfig(TrainingConfig):
    dataset: str = "fashion-mnist"
    steps: int = 1_000_000
    out: str = "runs/vae"
    prior_lr: float = 1e-2  # SGD, prior logits
    grad_var_draws: int = 20  # encoder-gradient estimates drawn for its variance, at each evaluation
    objective: str = "elbo"  # or "iwae": the num_samples-sample importance-weighted bound (one stochastic layer)
    protocol: str = "disarm"  # which paper's setting the batch, learning rates and prior follow (PROTOCOLS)
    categories: int | None = None  # C: categorical latent variables of C categories; None: binary units
    latent_vars: int = 200  # D per stochastic layer: binary units, or categorical variables (the CLI's default: 20)

    @property
    def family(self):
        """The latent variables' family: Bernoulli units, or categorical variables with ``categories``."""
        return BERNOULLI if self.categories is None else CATEGORICAL

    @property
    def event_shape(self) -> tuple:
        return (self.latent_vars,) if self.categories is None else (self.latent_vars, self.categories)


# Each paper's training setting: what --protocol sets unless a flag says otherwise. The DisARM protocol
# (Dong et al. 2020) learns the prior; the Double-CV and RODEO papers (Titsias & Shi 2022, Shi et al.
# 2022) keep it fixed at p = 1/2 (an SGD learning rate of 0) and use Adam 1e-3, 3e-4 on Fashion-MNIST.
PROTOCOLS = {
    "disarm": {"batch_size": 50, "lr": 1e-4, "prior_lr": 1e-2},
    "rodeo": {"batch_size": 100, "lr": 1e-3, "prior_lr": 0.0},
}


def protocol_values(protocol: str, dataset: str) -> dict:
    """The batch size and learning rates of ``protocol`` on ``dataset``."""
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    values = dict(PROTOCOLS[protocol])
    if protocol == "rodeo" and dataset.startswith("fashion-mnist"):
        values["lr"] = 3e-4
    return values


@torch.no_grad()
def importance_weighted_bound(
    model: DiscreteVAE,
    x: torch.Tensor,
    num_samples: int,
    generator=None,
    example_chunk: int = 100,
    sample_chunk: int = 100,
    desc: str | None = None,
) -> torch.Tensor:
    """``log (1/K) sum_k p(x, b_k) / q(b_k | x)`` per example, ``(N,)``, in chunks (flat memory).

    With ``K = 1`` it is the ELBO of one sample. Memory is bounded by
    ``example_chunk * sample_chunk * 784`` floats whatever ``N`` and ``K``. With ``desc``, shows
    its progress (it can take as long as thousands of training steps).
    """
    bounds = []
    bar = progress(total=x.shape[0], desc=desc, unit="image", disable=desc is None)
    for start in range(0, x.shape[0], example_chunk):
        xb = x[start : start + example_chunk]
        parts = []
        for k0 in range(0, num_samples, sample_chunk):
            k = min(sample_chunk, num_samples - k0)
            samples, log_q = model.sample_posterior(xb, k, generator)
            parts.append(torch.logsumexp(model.log_joint(xb, samples) - log_q, dim=0))
        bounds.append(torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_samples))
        bar.update(xb.shape[0])
    bar.close()
    return torch.cat(bounds)


def training_loss(model, x, generator, *, estimators, num_samples) -> torch.Tensor:
    """The loss of one training step: the estimated negative ELBO (with a multi-sample estimator, the negative
    ``num_samples``-sample bound), averaged over the examples of ``x`` ``(*runs, batch, 784)``: a scalar, or
    ``(R,)`` for R runs side by side. Its gradient w.r.t. the encoder is the estimators', w.r.t. the
    decoder and prior the pathwise gradient of the estimate."""
    if isinstance(estimators[0], multisample.MultiSampleEstimator):
        return -multisample_bound(model, x, estimators[0], num_samples, generator).mean(-1)
    negative_elbo = chain_estimate(
        partial(model.negative_elbo, x),
        model.encoder_layers(),
        x,
        estimators,
        num_samples,
        generator=generator,
        family=model.family,
        validate=False,  # the loop's divergence guard reads the loss (a host read per check is a wait per step)
    )
    return negative_elbo.mean(-1)


def multisample_bound(model, x, estimator, num_samples, generator) -> torch.Tensor:
    """The estimate of ``L_K`` per example: ``log_weight = log p(x, b) - log q(b | x)`` with the live logits."""
    (layer,) = model.encoder_layers()
    logits = layer(x)

    def log_weight(b):  # (S, batch, D) -> (S, batch)
        return model.log_joint(x, [b]) - bernoulli_log_prob(logits.expand_as(b), b)

    return multisample.estimate(log_weight, logits, estimator, num_samples, generator=generator)


def make_vae_estimators(config, model, device) -> list:
    """The estimator of each stochastic layer; one multi-sample estimator for the IWAE objective."""
    if config.objective == "iwae":
        return [multisample.get_estimator(config.estimator)]
    return make_estimators(config.estimator, model.num_layers, model.prior_logits.numel(), device, model.family)


def encoder_gradient_variance(model, x, estimators, num_samples, draws: int, generator) -> float:
    """Mean over encoder parameters of the variance of their gradient, over ``draws`` estimates on ``x``."""
    params = [p for p in model.encoder.parameters()]
    grads = []
    with controls_frozen(estimators):
        for _ in range(draws):
            loss = training_loss(model, x, generator, estimators=estimators, num_samples=num_samples)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return float(torch.stack(grads).var(0).mean())


def evaluate(model, data, estimators, config: VAEConfig, step: int, final: bool) -> dict:
    """Test ELBO (one sample), the K-sample bound at the end, and the encoder-gradient variance."""
    gen = torch.Generator(config.device).manual_seed(10_000 * config.seed + step)  # apart from training
    device = config.device
    test = data.split("test").to(device)
    row = {"test_elbo": float(importance_weighted_bound(model, test, 1, gen).mean()), "test_bound": None}
    if config.objective == "iwae":  # the training objective's own bound, on the test set
        row["test_bound_k"] = float(importance_weighted_bound(model, test, config.num_samples, gen).mean())
    if final:  # None until then: not computed (an empty cell in metrics.csv)
        row["test_bound"] = float(
            importance_weighted_bound(
                model, test, config.test_samples, gen, desc=f"test bound (K={config.test_samples})"
            ).mean()
        )
    fixed = data.split("train")[: config.batch_size].to(device)
    row["grad_var"] = encoder_gradient_variance(
        model, fixed, estimators, config.num_samples, config.grad_var_draws, gen
    )
    return row


def train(config: VAEConfig, resume: bool = False) -> dict:
    """Train, evaluate and checkpoint one VAE; return (and write) its results."""
    return train_runs([config], resume)[0]


def train_runs(configs: list, resume: bool = False, stop_at: int | None = None) -> list:
    """Train the VAE runs ``configs`` side by side in this process; return each one's results.

    One run trains its own model. R runs (``armgrad study``: they differ in seed and estimator
    only) train as one model whose parameters are stacked along a run axis
    (:mod:`armgrad.models.stacked`): each matrix product is one batched product for all runs, the
    estimators see ``(R, batch)`` as two batch dims, one optimiser step updates every run. Each run
    still has what it has alone: the same initial weights, batches and noise (its own generators;
    :class:`armgrad._random.RunGenerators` draws each run's slice from its own), its own folder,
    metrics and checkpoint (the checkpoint it would write alone, so either way resumes the other).
    ``stop_at``: stop after the checkpoint at that step, without the final evaluation (to bring
    runs whose checkpoints lag behind the others' up to them).
    """
    check_runs(configs)
    first, device, num_runs = configs[0], configs[0].device, len(configs)
    shards = parallel.check_shards(first.shards, first.batch_size)  # under torchrun: one per process
    configs = [replace(c, shards=shards) for c in configs]
    main = parallel.is_main()  # the first process evaluates and writes
    runs = [RunLog(Path(c.out), c, write=main) for c in configs]
    saved = [run.resume() if resume else None for run in runs]
    saved_at = [0 if state is None else state["step"] for state in saved]
    if len(set(saved_at)) > 1:  # killed between the runs' checkpoints: the laggards catch up first
        behind = [c for c, at in zip(configs, saved_at) if at < max(saved_at)]
        log.info("%d run(s) resume behind the others: training them to step %d first", len(behind), max(saved_at))
        train_runs(behind, resume=True, stop_at=max(saved_at))
        return train_runs(configs, resume=True, stop_at=stop_at)

    # ---- the runs: each model initialised as alone, then stacked (one run: its model as it is) ----
    data = load_dataset(first.dataset, first.data_dir)
    alone = []
    for config in configs:
        torch.manual_seed(config.seed)  # initial weights
        alone.append(
            DiscreteVAE(
                config.model,
                data.train_mean,
                units=config.latent_vars,
                slope=config.slope,
                categories=config.categories,
            ).to(device)
        )
    model = stacked.stack(alone)
    alone_estimators = [make_vae_estimators(c, m, device) for c, m in zip(configs, alone)]
    estimators = (
        alone_estimators[0]
        if num_runs == 1
        else RunMixture.for_runs([e[0] for e in alone_estimators], cast(int, model.num_layers), first.family)
    )
    optimizers = vae_optimizers(model, estimators, first)
    alone_optimizers = (
        [optimizers]
        if num_runs == 1
        # what each run's checkpoint holds
        else [vae_optimizers(m, e, first) for m, e in zip(alone, alone_estimators)]
    )
    data_gens = [torch.Generator().manual_seed(c.seed) for c in configs]  # batches and dynamic binarisation
    noise_gens = [noise_generators(c, shards) for c in configs]  # each run's, one stream per shard
    start, running = 0, [list[float]() for _ in configs]  # the training metric since the last evaluation
    if saved[0] is not None:
        states = [cast(dict, s) for s in saved]  # every run has a checkpoint (lagging ones caught up above)
        for config, state, data_gen, gens in zip(configs, states, data_gens, noise_gens):
            check_same_configuration(config, state["config"])
            restore_generators(state, data_gen, gens)
        model.load_state_dict(stacked.stack_states([s["model"] for s in states], model.state_dict()))
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(
                stacked.stack_optimizer_states([s["optimizers"][name] for s in states], optimizer)
            )
        load_estimator_state(estimators, states[0]["estimators"])  # learned controls: one run alone
        start, running = states[0]["step"], [s["running"] for s in states]

    # ---- the loop: batch, loss and gradient, step, log, evaluate, checkpoint ----
    loss_fn = parallel.wrap(model, partial(training_loss, model, estimators=estimators, num_samples=first.num_samples))
    run_axis = -(first.family.event_dims + 2)  # of every tensor drawn: (R, batch, D) or (R, batch, D, C)
    noise = [for_runs([gens[s] for gens in noise_gens], run_axis) for s in range(shards)]  # shard s: each run's s
    mine = parallel.my_shards(shards)  # all of them alone; this process's one under torchrun
    controls = control_parameters(estimators)  # learned by the estimators, outside DDP
    metric = "train_elbo" if first.objective == "elbo" else "train_bound"
    steps = first.steps if stop_at is None else stop_at
    bar = progress(
        total=steps,
        initial=start,
        disable=not main,
        desc=f"{first.model} {first.estimator}" if num_runs == 1 else f"{first.model}, {num_runs} runs",
    )
    window_start = runs[0].elapsed()
    guard = DivergenceGuard(first, data.train.shape[1], start)
    pending = []  # each step's loss per run, still on the device
    for step in range(start, steps):
        xs = [
            data.train_batch(torch.randint(data.train.shape[0], (c.batch_size,), generator=g), g)
            for c, g in zip(configs, data_gens)
        ]
        x = (xs[0] if num_runs == 1 else torch.stack(xs)).to(
            device, non_blocking=True
        )  # (R, batch, 784); one run: no R
        zero_grads(optimizers.values())
        try:
            pending.append(backward_step(loss_fn, x, noise, mine, estimators).reshape(num_runs))
        except ValueError as error:  # non-finite logits or f: the parameters diverged at the last step
            guard.step_failed(error, step)
        parallel.average_grads(controls)  # DDP averages the model's gradients, not these
        for optimizer in optimizers.values():
            optimizer.step()
        bar.update(1)
        done = step + 1
        final = done == first.steps
        evaluating = done % first.eval_every == 0 or final
        checkpoint = done % first.checkpoint_every == 0 or final or done == stop_at
        if done % LOG_EVERY == 0 or evaluating or checkpoint:  # the one read of the losses from the device
            for r, values in enumerate(parallel.mean_over_processes(torch.stack(pending)).T.tolist()):
                guard.check_losses(values, done)
                running[r] += [-v for v in values]
            pending = []
            recent = [v for values in running for v in values[-LOG_EVERY:]]
            bar.set_postfix({metric: f"{sum(recent) / len(recent):.2f}"})
        if evaluating or checkpoint:
            guard.check_parameters(model, done)  # before an evaluation or a checkpoint sees them
            unstack_into(model, optimizers, alone, alone_optimizers)
        if evaluating:
            for r, (config, run) in enumerate(zip(configs, runs)):
                row = None
                if main:
                    row = training_row(runs[0], done, window_start, metric, running[r])
                    row.update(evaluate(alone[r], data, alone_estimators[r], config, done, final))
                run.record(parallel.broadcast(row))
            running, window_start = [[] for _ in configs], runs[0].elapsed()
        if checkpoint:
            guard.saved(done)
            parallel.collect(noise_gens[0], mine)  # torchrun: every shard's noise state, to the first process
            for r, (config, run) in enumerate(zip(configs, runs)):
                run.set_elapsed(runs[0].elapsed())  # the runs share one clock
                run.save(
                    done,
                    {
                        "config": asdict(config),
                        "model": alone[r].state_dict(),
                        "optimizers": {name: o.state_dict() for name, o in alone_optimizers[r].items()},
                        "estimators": estimator_state(alone_estimators[r]),
                        "data_gen": data_gens[r].get_state(),
                        "noise_gens": [g.get_state() for g in noise_gens[r]],
                        "running": running[r],
                        "extra": {},
                    },
                )
    bar.close()
    if stop_at is not None and stop_at < first.steps:
        return [None] * num_runs

    # ---- the results, one folder per run ----
    return [
        finish_vae(
            run, {**common_results(config, run, metric, runs_in_process=num_runs), "data_files": data.files}, config
        )
        for config, run in zip(configs, runs)
    ]


def vae_optimizers(model, estimators, config) -> dict:
    """Adam on the encoder and decoder, SGD on the prior logits, Adam on learned controls if any."""
    return with_controls(
        {
            "model": adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), config.lr),
            "prior": torch.optim.SGD([model.prior_logits], lr=config.prior_lr),
        },
        estimators,
        config.control_lr,
    )


def unstack_into(model, optimizers, alone, alone_optimizers) -> None:
    """Copy each run's slice of the stacked model and optimiser states into its own model and optimisers."""
    if model is alone[0]:  # one run: they are its own
        return
    state = model.state_dict()
    for r, (m, opts) in enumerate(zip(alone, alone_optimizers)):
        m.load_state_dict(stacked.unstack_state(state, r, m.state_dict()))
        for name, optimizer in optimizers.items():
            opts[name].load_state_dict(
                stacked.unstack_optimizer_state(optimizer.state_dict(), r, opts[name].param_groups)
            )


# what may differ between runs trained side by side (and ``out``, each run's folder)
PER_RUN = ("seed", "estimator", "out")


def check_config(config: VAEConfig) -> None:
    """Refuse, before any data is read, a configuration that cannot train: one line naming what is wrong."""
    if config.categories is not None and config.categories < 2:
        raise ConfigurationError(f"--categories must be at least 2, got {config.categories}")
    if config.latent_vars < 1:
        raise ConfigurationError(f"--latent-vars must be at least 1, got {config.latent_vars}")
    layers = int(config.model[-1]) if config.model[-1].isdigit() else 1
    if config.objective == "iwae":
        if layers != 1:
            raise ConfigurationError(
                f"--objective iwae trains models with one stochastic layer (linear, nonlinear), not {config.model}"
            )
        if config.categories is not None:
            raise ConfigurationError(
                "--objective iwae trains binary latents: the multi-sample estimators have no categorical form; "
                "drop --categories or use --objective elbo"
            )
        try:
            spec = multisample.get_estimator(config.estimator)
            spec.check_budget(config.num_samples)
        except ValueError as error:
            raise ConfigurationError(
                f"--objective iwae --estimator {config.estimator} --num-samples {config.num_samples}: {error}"
            ) from None
        return
    spec = vae_estimator(config)
    if spec.evaluates_f_at == ENUMERATION:
        states = "2^D" if config.categories is None else "C^D"
        raise ConfigurationError(
            f"--estimator {spec.name} enumerates {states} states, and these latents have D = {config.latent_vars}"
            f" per layer: choose a Monte Carlo estimator"
        )
    try:
        spec.check_budget(config.num_samples, config.event_shape)
    except ValueError as error:
        raise ConfigurationError(f"--num-samples {config.num_samples}: {error}") from None


def vae_estimator(config: VAEConfig):
    """The estimator the config names, in its latents' family: one line when it has no form there."""
    if config.estimator in multisample.ESTIMATORS and config.estimator not in REGISTRY[config.family]:
        raise ConfigurationError(
            f"--estimator {config.estimator} estimates the multi-sample bound: add --objective iwae"
        )
    try:
        return get_estimator(config.estimator, config.family)
    except ValueError as error:
        latents = "categorical latents (--categories)" if config.categories else "binary latents"
        raise ConfigurationError(f"--estimator {config.estimator} cannot train {latents}: {error}") from None


def default_num_samples(config: VAEConfig) -> int:
    """The smallest budget of at least 2 evaluations that the estimator accepts for these latents
    (``arsm`` at 10 categories: 46; ``indecater``: D C)."""
    if config.objective == "iwae":
        try:
            return multisample.get_estimator(config.estimator).valid_budget(2)
        except ValueError as error:
            raise ConfigurationError(f"--objective iwae --estimator {config.estimator}: {error}") from None
    return vae_estimator(config).valid_budget(2, config.event_shape)


def with_latent_default(config: VAEConfig, given) -> VAEConfig:
    """20 categorical variables per layer with ``--categories`` unless ``latent_vars`` is in ``given``."""
    if config.categories is not None and "latent_vars" not in given:
        return replace(config, latent_vars=20)
    return config


def with_defaults(config: VAEConfig, given) -> VAEConfig:
    """What the command line leaves unsaid: 20 categorical variables with ``--categories`` (binary: 200
    units), and each estimator's smallest budget of at least 2 evaluations."""
    config = with_latent_default(config, given)
    if "num_samples" not in given:
        config = replace(config, num_samples=default_num_samples(config))
    return config


def check_runs(configs: list) -> None:
    """Refuse runs that cannot train (:func:`check_config`) or cannot train side by side: another shape or
    setting, learned controls, shards."""
    if len(configs) > 1:
        _check_side_by_side(configs)
    for config in configs:
        check_config(config)


def _check_side_by_side(configs: list) -> None:
    first = asdict(configs[0])
    for config in configs[1:]:
        other = asdict(config)
        differ = sorted(k for k in first if k not in PER_RUN and first[k] != other[k])
        if differ:
            raise ConfigurationError(
                f"runs trained in one process share everything but {', '.join(PER_RUN)}; "
                f"{config.out} differs from {configs[0].out} in {', '.join(differ)}"
            )
    specs = [multisample.get_estimator(c.estimator) if c.objective == "iwae" else vae_estimator(c) for c in configs]
    for config, spec in zip(configs, specs):
        if spec.learned:
            raise ConfigurationError(
                f"{config.estimator} learns control parameters: train it one run per process "
                f"(armgrad vae), not in a batch of runs"
            )
        if config.shards != 1:
            raise ConfigurationError("runs trained in one process use one shard each (torchrun is for one large run)")
    if len({spec.name for spec in specs}) > 1:
        RunMixture.check(specs, configs[0].num_samples, configs[0].event_shape)


def latent_shape(config: VAEConfig) -> str:
    """The latents of one layer, as the report groups runs by them: ``"200 binary"``, ``"20x10 categorical"``."""
    if config.categories is None:
        return f"{config.latent_vars} binary"
    return f"{config.latent_vars}x{config.categories} categorical"


def finish_vae(run, results: dict, config: VAEConfig) -> dict:
    """Add the VAE's numbers to the loop's results; write results.json and the curves (:func:`finish`)."""
    last = run.rows[-1]
    results.update(
        test_elbo=last["test_elbo"],
        test_bound=last["test_bound"],
        test_samples=config.test_samples,
        grad_var=last["grad_var"],
        objective=config.objective,
        protocol=config.protocol,
        latents=latent_shape(config),
    )
    if config.objective == "iwae":
        results["test_bound_k"] = last["test_bound_k"]
    curves = (
        ("train_elbo", "train ELBO (1 sample)")
        if config.objective == "elbo"
        else ("train_bound", f"train bound (K={config.num_samples})"),
        ("test_elbo", "test ELBO (1 sample)"),
    )
    return finish(run, results, curves, f"{config.dataset} {config.model} {config.estimator}")
