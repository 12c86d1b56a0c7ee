"""Many VAE runs in one process, trained side by side: the engine of ``armgrad study``.

R runs of one model shape and training setting (they differ in seed and estimator) train as ONE
model whose parameters are stacked along a run axis (:mod:`armgrad.models.stacked`): every matrix
product is one batched product for all runs, the estimators see ``(R, batch)`` as two batch dims,
and one optimiser step updates every run. Each run keeps what it has alone: its own folder with
``metrics.csv``, ``results.json``, curves and ``checkpoint.pt`` (in the format of ``armgrad vae``,
so either can resume the other's run), its own data and noise generators
(:class:`armgrad._random.RunGenerators` draws each run's slice from its own), the same initial
weights, batches and noise as alone. A run of the batch therefore trains the model the run alone
trains, up to the order of floating-point sums in the batched products.

Reads top to bottom: the runs' models and states, then the loop (batches, loss, backward, step,
log, evaluate, checkpoint), then the results. Runs whose estimators differ share the batch when
their estimators evaluate ``f`` at binary points with the same budget (one call of the decoder for
all of them); estimators with learned controls train one run per process (``armgrad vae``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from .._random import for_runs
from ..data import load_dataset
from .. import multisample
from ..estimators import get_estimator
from ..models import stacked
from ..models.vae import BinaryVAE
from . import parallel
from .reporting import log, progress
from .training import (LOG_EVERY, ConfigurationError, RunLog, adam, check_same_configuration, common_results)
from .vae import VAEConfig, evaluate, finish_vae, make_vae_estimators, negative_bound
from .mixture import RunMixture

# what may differ between the runs of one batch (and ``out``, each run's folder)
PER_RUN = ("seed", "estimator", "out")


def check_batch(configs: list) -> None:
    """Refuse runs that cannot share one process: another shape or setting, learned controls, shards."""
    first = dataclasses.asdict(configs[0])
    for config in configs[1:]:
        other = dataclasses.asdict(config)
        differ = sorted(k for k in first if k not in PER_RUN and first[k] != other[k])
        if differ:
            raise ConfigurationError(f"runs trained in one process share everything but {', '.join(PER_RUN)}; "
                                     f"{config.out} differs from {configs[0].out} in {', '.join(differ)}")
    specs = [multisample.get_estimator(c.estimator) if c.objective == "iwae" else get_estimator(c.estimator)
             for c in configs]
    for config, spec in zip(configs, specs):
        if spec.learned:
            raise ConfigurationError(f"{config.estimator} learns control parameters: train it one run per process "
                                     f"(armgrad vae), not in a batch of runs")
        if config.shards != 1:
            raise ConfigurationError("runs trained in one process use one shard each (torchrun is for one large run)")
    if len({spec.name for spec in specs}) > 1:
        RunMixture.check(specs, configs[0].num_samples)


def train_batch(configs: list, resume: bool = False, stop_at: int | None = None) -> list:
    """Train the runs ``configs`` side by side; return each run's results (``None`` for a run stopped early).

    ``stop_at``: stop after the checkpoint at that step, without the final evaluation (used to bring
    runs whose checkpoints lag behind the others' up to them before they train together).
    """
    check_batch(configs)
    first, device = configs[0], configs[0].device
    runs = [RunLog(Path(c.out), c) for c in configs]
    saved = [run.resume() if resume else None for run in runs]
    steps_saved = sorted({s["step"] for s in saved if s is not None} | ({0} if None in saved else set()))
    if len(steps_saved) > 1:  # killed between the runs' checkpoints: bring the laggards up to the others
        behind = [c for c, s in zip(configs, saved) if (0 if s is None else s["step"]) < steps_saved[-1]]
        log.info("%d run(s) resume behind the others: training them to step %d first", len(behind), steps_saved[-1])
        train_batch(behind, resume=True, stop_at=steps_saved[-1])
        return train_batch(configs, resume=True, stop_at=stop_at)

    # ---- the runs: models as each would be initialised alone, then stacked ----
    data = load_dataset(first.dataset, first.data_dir)
    alone = []
    for config in configs:
        torch.manual_seed(config.seed)
        alone.append(BinaryVAE(config.model, data.train_mean, slope=config.slope).to(device))
    model = stacked.stack(alone)  # one run: its own model, unstacked
    alone_estimators = [make_vae_estimators(c, alone[0], device) for c in configs]
    estimators = RunMixture.for_runs([e[0] for e in alone_estimators], model.num_layers)
    optimizers = {
        "model": adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), first.lr),
        "prior": torch.optim.SGD([model.prior_logits], lr=first.prior_lr),
    }
    alone_optimizers = [optimizers] if len(alone) == 1 else [  # what each run's checkpoint holds
        {"model": adam(list(m.encoder.parameters()) + list(m.decoder.parameters()), first.lr),
         "prior": torch.optim.SGD([m.prior_logits], lr=first.prior_lr)} for m in alone]
    data_gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    noise_gens = [torch.Generator(device).manual_seed(parallel.noise_seed(c.seed, 0)) for c in configs]
    noise = for_runs(noise_gens)
    start, running = 0, [[] for _ in configs]
    if saved[0] is not None:
        for config, state, gen, noise_gen in zip(configs, saved, data_gens, noise_gens):
            check_same_configuration(config, state["config"])
            gen.set_state(state["data_gen"])
            noise_gen.set_state(state["noise_gens"][0])
        model.load_state_dict(stacked.stack_states([s["model"] for s in saved], model.state_dict()))
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(_stack_optimizer([s["optimizers"][name] for s in saved], optimizer))
        start, running = saved[0]["step"], [s["running"] for s in saved]

    # ---- the loop ----
    steps = first.steps if stop_at is None else stop_at
    bar = progress(total=steps, desc=f"{first.model}, {len(configs)} runs", initial=start)
    window_start = runs[0].elapsed()
    pending = []  # each step's losses per run, still on the device
    for step in range(start, steps):
        x = torch.stack([data.train_batch(torch.randint(data.train.shape[0], (c.batch_size,), generator=g), g)
                         for c, g in zip(configs, data_gens)]).to(device, non_blocking=True)  # (R, batch, 784)
        if len(configs) == 1:
            x = x[0]  # one run: no run axis
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        losses = negative_bound(model, x, estimators, first.num_samples, noise).mean(-1)  # (R,): each run's loss
        losses = losses.reshape(len(configs))
        losses.sum().backward()  # the runs' parameters are apart: each gets its own loss's gradient
        for optimizer in optimizers.values():
            optimizer.step()
        pending.append(losses.detach())
        bar.update(1)
        done = step + 1
        final = done == first.steps
        evaluating = done % first.eval_every == 0 or final
        checkpoint = done % first.checkpoint_every == 0 or final or done == stop_at
        if done % LOG_EVERY == 0 or evaluating or checkpoint:
            for r, values in enumerate(torch.stack(pending).T.tolist()):
                running[r] += [-v for v in values]
            pending = []
            bar.set_postfix({"train_elbo": f"{sum(sum(r[-LOG_EVERY:]) for r in running) / sum(len(r[-LOG_EVERY:]) for r in running):.2f}"})
        if evaluating or checkpoint:
            _unstack_into(model, optimizers, alone, alone_optimizers)
        if evaluating:
            seconds = runs[0].elapsed()
            for r, (config, run) in enumerate(zip(configs, runs)):
                row = {"step": done, "seconds": seconds,
                       "steps_per_second": len(running[r]) / max(seconds - window_start, 1e-9),
                       "load_average": os.getloadavg()[0], "train_elbo": sum(running[r]) / len(running[r])}
                row.update(evaluate(alone[r], data, alone_estimators[r], config, done, final))
                run.record(row)
            running, window_start = [[] for _ in configs], runs[0].elapsed()
        if checkpoint:
            for r, (config, run) in enumerate(zip(configs, runs)):
                run.seconds, run._started = runs[0].elapsed(), time.perf_counter()  # the batch's clock
                run.save(done, {
                    "config": dataclasses.asdict(config), "model": alone[r].state_dict(),
                    "optimizers": {name: o.state_dict() for name, o in alone_optimizers[r].items()},
                    "estimators": [None] * model.num_layers, "data_gen": data_gens[r].get_state(),
                    "noise_gens": [noise_gens[r].get_state()], "running": running[r], "extra": {},
                })
    bar.close()
    if stop_at is not None and stop_at < first.steps:
        return [None] * len(configs)

    # ---- the results, one folder per run ----
    return [finish_vae(run, common_results(config, run, "train_elbo", runs_in_process=len(configs)), config)
            for config, run in zip(configs, runs)]


def _unstack_into(model, optimizers, alone, alone_optimizers) -> None:
    """Copy each run's slice of the stacked model and optimiser states into its alone model and optimisers."""
    if model is alone[0]:  # one run: they are its own
        return
    state = model.state_dict()
    for r, (m, opts) in enumerate(zip(alone, alone_optimizers)):
        m.load_state_dict(stacked.unstack_state(state, r, m.state_dict()))
        for name, optimizer in optimizers.items():
            opts[name].load_state_dict(_unstack_optimizer(optimizer.state_dict(), r, opts[name].param_groups))


def _unstack_optimizer(state: dict, run: int, alone_groups) -> dict:
    params = [p for group in alone_groups for p in group["params"]]
    per_param = {}
    for index, values in state["state"].items():
        like = {key: (params[index] if key in ("exp_avg", "exp_avg_sq") else value) for key, value in values.items()}
        per_param[index] = stacked.unstack_state(values, run, like)
    return {"state": per_param, "param_groups": state["param_groups"]}


def _stack_optimizer(states: list, optimizer) -> dict:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param = {}
    for index, values in states[0]["state"].items():
        per_param[index] = {key: (torch.stack([s["state"][index][key] for s in states]).reshape(params[index].shape)
                                  if key in ("exp_avg", "exp_avg_sq") else value)
                            for key, value in values.items()}
    return {"state": per_param, "param_groups": states[0]["param_groups"]}
