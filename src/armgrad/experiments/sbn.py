"""Maximum-likelihood stochastic binary networks: the lower half of a digit from its upper half.

Reads top to bottom: data (threshold-binarised images split into halves), model, the training loss,
evaluation (the ``M``-sample bound on validation and test, the checkpoint with the best validation
bound reported), then :func:`train`: estimators, optimiser, resume, and the loop from batch to
checkpoint (the pieces every run shares, such as the checkpoint file and the sharded backward
pass, come from :mod:`.training`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch

from ..data import load_dataset
from ..models.sbn import StochasticBinaryNetwork
from ..network import ancestral_sample, chain_estimate
from . import parallel
from .reporting import progress, pyplot
from .training import (
    LOG_EVERY,
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

HALF = 392


@dataclass
class SBNConfig(TrainingConfig):
    dataset: str = "fashion-mnist-threshold"
    batch_size: int = 100
    slope: float = 0.2
    eval_every: int = 5_000
    test_samples: int = 1000  # M of the final test bound
    out: str = "runs/sbn"
    eval_samples: int = 100  # M of the periodic validation bound (which selects the reported checkpoint)


def halves(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images[..., :HALF], images[..., HALF:]


@torch.no_grad()
def nll_bound(
    model,
    images: torch.Tensor,
    num_samples: int,
    generator=None,
    example_chunk: int = 500,
    sample_chunk: int = 100,
    desc: str | None = None,
) -> torch.Tensor:
    """``-log (1/M) sum_m p(x_lower | b_2^(m))``, ``b^(m) ~ q(. | x_upper)``, per image ``(N,)``, in chunks;
    with ``desc``, its progress."""
    bounds = []
    layers = model.stochastic_layers()
    bar = progress(total=images.shape[0], desc=desc, unit="image", disable=desc is None)
    for start in range(0, images.shape[0], example_chunk):
        upper, lower = halves(images[start : start + example_chunk])
        parts = []
        for k0 in range(0, num_samples, sample_chunk):
            k = min(sample_chunk, num_samples - k0)
            samples, _ = ancestral_sample(layers, upper, generator, num_samples=k)
            parts.append(torch.logsumexp(model.log_likelihood(lower, samples[-1]), dim=0))
        bounds.append(math.log(num_samples) - torch.logsumexp(torch.stack(parts), dim=0))
        bar.update(upper.shape[0])
    bar.close()
    return torch.cat(bounds)


class BestCheckpoint:
    """The parameters with the best validation bound so far, and where they were found."""

    def __init__(self):
        self.valid_nll_bound, self.state, self.step = math.inf, None, 0

    def offer(self, model, valid_nll_bound: float | None, step: int) -> None:
        if valid_nll_bound is not None and valid_nll_bound < self.valid_nll_bound:
            self.valid_nll_bound, self.step = valid_nll_bound, step
            self.state = {k: v.clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"valid_nll_bound": self.valid_nll_bound, "state": self.state, "step": self.step}

    def load_state_dict(self, saved: dict) -> None:
        self.valid_nll_bound, self.state, self.step = saved["valid_nll_bound"], saved["state"], saved["step"]


def training_loss(model, x, generator, *, estimators, num_samples) -> torch.Tensor:
    """The batch's mean of ``-log p(x_lower | b_2)``, ``b ~ q(. | x_upper)``; its gradient is the estimator's."""
    upper, lower = halves(x)
    value = chain_estimate(
        lambda samples, logits: -model.log_likelihood(lower, samples[-1]),
        model.stochastic_layers(),
        upper,
        estimators,
        num_samples,
        generator=generator,
    )
    return value.mean()


def evaluate(model, valid, test, best: BestCheckpoint, config: SBNConfig, step: int, final: bool) -> dict:
    """The validation bound (offered to ``best``); at the end, the test bound of the best checkpoint."""
    gen = torch.Generator(config.device).manual_seed(10_000 * config.seed + step)  # apart from training
    row = {
        "valid_nll_bound": float(nll_bound(model, valid, config.eval_samples, gen).mean()),
        "test_nll_bound": None,
    }  # not computed before the end
    best.offer(model, row["valid_nll_bound"], step)
    if final:  # the checkpoint with the best validation bound is the one reported
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best.state)
        row["best_step"] = best.step
        row["valid_nll_bound_best"] = best.valid_nll_bound
        row["test_nll_bound"] = float(
            nll_bound(model, test, config.test_samples, gen, desc=f"test bound (M={config.test_samples})").mean()
        )
        completion_figure(model, test, config.out + "/completions.png", gen)
        model.load_state_dict(current)
    return row


def train(config: SBNConfig, resume: bool = False) -> dict:
    """Train, evaluate and checkpoint one SBN; return (and write) its results."""
    # ---- data, model, estimators, optimisers, random streams ----
    device = config.device
    data = load_dataset(config.dataset, config.data_dir)
    if data.binarization == "dynamic":
        raise ValueError(
            f"the SBN task uses fixed binary images: use {config.dataset}-threshold "
            f"(or mnist-static), not the dynamically binarised {config.dataset!r}"
        )
    shards = parallel.check_shards(config.shards, config.batch_size)  # under torchrun: one per process
    config = replace(config, shards=shards)
    main = parallel.is_main()  # the first process evaluates and writes
    torch.manual_seed(config.seed)  # initial weights
    model = StochasticBinaryNetwork(config.model, slope=config.slope).to(device)
    estimators = make_estimators(config.estimator, 2, 200, device)
    optimizers = with_controls({"model": adam(model.parameters(), config.lr)}, estimators, config.control_lr)
    valid, test = data.split("valid").to(device), data.split("test").to(device)
    best = BestCheckpoint()
    data_gen = torch.Generator().manual_seed(config.seed)  # batches
    noise = noise_generators(config, shards)  # the estimators' noise, one stream per shard

    # ---- resume: everything the checkpoint holds ----
    run = RunLog(Path(config.out), config, write=main)
    start, running = 0, []  # the training metric since the last evaluation
    state = run.resume() if resume else None
    if state is not None:
        check_same_configuration(config, state["config"])
        model.load_state_dict(state["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        load_estimator_state(estimators, state["estimators"])
        best.load_state_dict(state["extra"])
        restore_generators(state, data_gen, noise)
        start, running = state["step"], state["running"]

    # ---- the loop: batch, loss and gradient, step, log, evaluate, checkpoint ----
    loss_fn = parallel.wrap(model, partial(training_loss, model, estimators=estimators, num_samples=config.num_samples))
    mine = parallel.my_shards(shards)  # all of them alone; this process's one under torchrun
    controls = control_parameters(estimators)  # learned by the estimators, outside DDP
    bar = progress(total=config.steps, desc=f"SBN {config.model} {config.estimator}", disable=not main, initial=start)
    window_start = run.elapsed()
    guard = DivergenceGuard(config, data.train.shape[1], start)
    pending = []  # each step's loss, still on the device
    for step in range(start, config.steps):
        indices = torch.randint(data.train.shape[0], (config.batch_size,), generator=data_gen)
        x = data.train_batch(indices, data_gen).to(device, non_blocking=True)
        zero_grads(optimizers.values())
        try:
            pending.append(backward_step(loss_fn, x, noise, mine, estimators))
        except ValueError as error:  # non-finite logits or f: the parameters diverged at the last step
            guard.step_failed(error, step)
        parallel.average_grads(controls)  # DDP averages the model's gradients, not these
        for optimizer in optimizers.values():
            optimizer.step()
        bar.update(1)
        done = step + 1
        final = done == config.steps
        evaluating = done % config.eval_every == 0 or final
        if done % LOG_EVERY == 0 or evaluating or done % config.checkpoint_every == 0:  # one read from the device
            read = parallel.mean_over_processes(torch.stack(pending)).tolist()
            guard.check_losses(read, done)
            running += read
            pending = []
            bar.set_postfix({"train_nll": f"{sum(running[-LOG_EVERY:]) / len(running[-LOG_EVERY:]):.2f}"})
        if evaluating or done % config.checkpoint_every == 0:
            guard.check_parameters(model, done)  # before an evaluation or a checkpoint sees them
        if evaluating:
            row = None
            if main:
                row = training_row(run, done, window_start, "train_nll", running)
                row.update(evaluate(model, valid, test, best, config, done, final))
            run.record(parallel.broadcast(row))
            running, window_start = [], run.elapsed()
        if done % config.checkpoint_every == 0 or final:
            guard.saved(done)
            parallel.collect(noise, mine)  # torchrun: every shard's noise state, to the first process
            run.save(
                done,
                {
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                    "estimators": estimator_state(estimators),
                    "data_gen": data_gen.get_state(),
                    "noise_gens": [g.get_state() for g in noise],
                    "running": running,
                    "extra": best.state_dict(),
                },
            )
    bar.close()

    # ---- the results ----
    last = run.rows[-1]
    results = common_results(config, run, "train_nll")
    results.update(
        test_nll_bound=last["test_nll_bound"],
        valid_nll_bound=last["valid_nll_bound_best"],
        best_step=last["best_step"],
        test_samples=config.test_samples,
        valid_samples=config.eval_samples,
        data_files=data.files,
    )
    curves = (
        ("train_nll", "train -log p(x_lower | b), 1 sample"),
        ("valid_nll_bound", f"valid bound, M={config.eval_samples}"),
    )
    return finish(run, results, curves, f"{config.dataset} SBN {config.model} {config.estimator}")


@torch.no_grad()
def completion_figure(model, test: torch.Tensor, path: str, generator, digits: int = 8, completions: int = 5):
    """Test digits: the truth, then several lower halves sampled given the upper half."""
    plt = pyplot(required=False)
    if plt is None:
        return
    images = test[:digits]
    upper, _ = halves(images)
    samples, _ = ancestral_sample(model.stochastic_layers(), upper, generator, num_samples=completions)
    probs = model.output_probs(samples[-1])
    lower = (torch.rand(probs.shape, generator=generator, device=probs.device) < probs).float()
    fig, axes = plt.subplots(digits, completions + 1, figsize=(1.2 * (completions + 1), 1.2 * digits))
    for i in range(digits):
        panels = [images[i]] + [torch.cat([upper[i], lower[c, i]]) for c in range(completions)]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel.view(28, 28).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
            axes[i, j].axhline(13.5, color="red", lw=0.6)
    axes[0, 0].set_title("truth", fontsize=8)
    for j in range(1, completions + 1):
        axes[0, j].set_title(f"sample {j}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
