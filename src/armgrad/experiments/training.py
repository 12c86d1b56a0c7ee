"""What every training run shares: checkpoints that resume exactly, a metrics log, a results file.

A run folder holds ``checkpoint.pt`` (written atomically: a temporary file, then a rename, so a run
killed at any moment leaves the previous checkpoint intact), ``metrics.csv`` (one row per
evaluation), ``results.json`` (the final numbers) and the figures. Resuming restores the model,
the optimisers, the estimator's control parameters, the random generator, the step counter, the
elapsed seconds and the metrics so far; since every random draw of the training stream comes from
that one generator, a resumed run ends exactly as an uninterrupted one with the same seed would.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..estimators import get_estimator
from .reporting import log, progress, pyplot, write_csv, write_json

# what may differ between a checkpoint and the run that resumes it: none of it touches the training stream
RESUMABLE_CHANGES = ("steps", "eval_every", "checkpoint_every", "out", "data_dir")


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class RunLog:
    """Metrics rows, elapsed time and the checkpoint of one run."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.seconds = 0.0
        self._started = time.perf_counter()

    def _tensorboard(self):
        """A TensorBoard writer into ``OUT/tensorboard`` when the tensorboard package is installed."""
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                self._writer = None
        return self._writer

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    def record(self, row: dict) -> None:
        self.rows.append(row)
        write_csv(self.out / "metrics.csv", self.rows)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and value == value:
                    writer.add_scalar(key, value, row["step"])
            writer.flush()
        log.info("step %d: %s", row["step"], ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                        if k != "step" and isinstance(v, float)))

    def save(self, step: int, state: dict) -> None:
        save_checkpoint(self.checkpoint_path, {**state, "step": step, "seconds": self.elapsed(), "rows": self.rows})

    def resume(self) -> dict | None:
        """The saved state, with the log's rows and clock restored; ``None`` if there is none."""
        if not self.checkpoint_path.exists():
            return None
        state = load_checkpoint(self.checkpoint_path)
        self.rows = state["rows"]
        self.seconds = state["seconds"]
        self._started = time.perf_counter()
        log.info("resuming %s from step %d", self.out, state["step"])
        return state


def estimator_state(estimators: list) -> list:
    """State dicts of the estimators that carry trainable controls (``None`` for the others)."""
    return [e.state_dict() if isinstance(e, torch.nn.Module) else None for e in estimators]


def load_estimator_state(estimators: list, states: list) -> None:
    for estimator, state in zip(estimators, states):
        if state is not None:
            estimator.load_state_dict(state)


def make_estimators(name: str, num_layers: int, units: int, device="cpu") -> list:
    """One estimator per stochastic layer: the name, or a fresh object for trainable controls."""
    spec = get_estimator(name)  # a clear error, with a suggestion, for an unknown name
    if spec.create is None:
        return [name] * num_layers
    return [spec.create(num_units=units).to(device) for _ in range(num_layers)]


@dataclass
class Task:
    """What one experiment gives the shared training loop.

    ``loss(x, generator)``: the batch's training loss (its gradient is the estimator's);
    ``batch(indices, generator)``: training examples; ``evaluate(step, final)``: a metrics dict;
    ``optimizers``: stepped after every backward pass; ``train_metric``: the name under which
    ``-loss`` (or ``loss`` when ``report_loss_as_is``) is averaged between evaluations;
    ``extra``: any further state the task keeps (saved in and restored from the checkpoint).
    """

    model: torch.nn.Module
    estimators: list
    optimizers: dict
    loss: Callable
    batch: Callable
    num_train: int
    evaluate: Callable
    train_metric: str = "train_elbo"
    report_loss_as_is: bool = False
    curves: tuple = ()
    extra: dict = field(default_factory=dict)


def run_training(config, task: Task, resume: bool = False) -> tuple[RunLog, dict]:
    """The loop every experiment shares: batch, loss, backward, step, evaluate, log, checkpoint.

    ``config`` is a dataclass with at least ``steps``, ``batch_size``, ``seed``, ``eval_every``,
    ``checkpoint_every``, ``control_lr``, ``device`` and ``out``. Returns the run log and the
    common part of the results (the caller adds its own fields and writes ``results.json``).
    """
    run = RunLog(Path(config.out))
    controls = [p for e in task.estimators if isinstance(e, torch.nn.Module) for p in e.parameters()]
    optimizers = dict(task.optimizers)
    if controls:
        optimizers["controls"] = torch.optim.Adam(controls, lr=config.control_lr)
    data_gen = torch.Generator().manual_seed(config.seed)  # batches and dynamic binarisation
    noise_gen = torch.Generator(config.device).manual_seed(config.seed + 1)  # the estimators' noise

    start, running = 0, []
    state = run.resume() if resume else None
    if state is not None:
        changed = sorted(k for k, v in asdict(config).items()
                         if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            raise ValueError(f"--resume with a different configuration than the checkpoint's: {changed} "
                             f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
        task.model.load_state_dict(state["model"])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        load_estimator_state(task.estimators, state["estimators"])
        task.extra.clear()
        task.extra.update(state["extra"])
        data_gen.set_state(state["data_gen"])
        noise_gen.set_state(state["noise_gen"])
        start, running = state["step"], state["running"]

    sign = 1.0 if task.report_loss_as_is else -1.0
    bar = progress(total=config.steps, desc=f"{getattr(config, 'model', '')} {getattr(config, 'estimator', '')}")
    bar.update(start)
    window_start = run.elapsed()
    for step in range(start, config.steps):
        indices = torch.randint(task.num_train, (config.batch_size,), generator=data_gen)
        x = task.batch(indices, data_gen)
        loss = task.loss(x, noise_gen)
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for e in task.estimators:
            if isinstance(e, torch.nn.Module):
                e.backward_variance()
        for optimizer in optimizers.values():
            optimizer.step()
        running.append(sign * loss.item())
        bar.update(1)
        done = step + 1
        if done % 100 == 0:
            bar.set_postfix({task.train_metric: f"{sum(running[-100:]) / len(running[-100:]):.2f}"})
        final = done == config.steps
        if done % config.eval_every == 0 or final:
            seconds = run.elapsed()
            row = {"step": done, "seconds": seconds,
                   "steps_per_second": len(running) / max(seconds - window_start, 1e-9),
                   task.train_metric: sum(running) / len(running)}
            task.model.eval()
            row.update(task.evaluate(done, final))
            task.model.train()
            run.record(row)
            running, window_start = [], run.elapsed()
        if done % config.checkpoint_every == 0 or final:
            run.save(done, {
                "config": asdict(config), "model": task.model.state_dict(),
                "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                "estimators": estimator_state(task.estimators), "data_gen": data_gen.get_state(),
                "noise_gen": noise_gen.get_state(), "running": running, "extra": task.extra,
            })
    bar.close()
    last = run.rows[-1]
    results = {
        "dataset": config.dataset, "model": config.model, "estimator": config.estimator,
        "num_samples": config.num_samples, "seed": config.seed, "steps": config.steps,
        "seconds": last["seconds"], task.train_metric: last[task.train_metric],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return run, results


def finish(run: RunLog, results: dict, config, curves: tuple, title: str) -> dict:
    """Write ``results.json`` (with the configuration) and ``curves.png``; return the results."""
    results = {**results, "config": asdict(config)}
    write_json(run.out / "results.json", results)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    steps = [r["step"] for r in run.rows]
    for key, label in curves:
        ax.plot(steps, [r[key] for r in run.rows], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.out / "curves.png", dpi=110)
    plt.close(fig)
    return results
