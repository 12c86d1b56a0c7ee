"""What every training run shares: checkpoints that resume exactly, a metrics log, a results file.

A run folder holds ``checkpoint.pt`` (written atomically: a temporary file, then a rename, so a run
killed at any moment leaves the previous checkpoint intact), ``metrics.csv`` (one row per
evaluation), ``results.json`` (the final numbers) and the figures. Resuming restores the model,
the optimisers, the estimator's control parameters, the random generators (data, and the noise
of every shard), the step counter, the elapsed seconds and the metrics so far; since every random
draw of the training stream comes from those generators, a resumed run ends exactly as an
uninterrupted one with the same seed would. In a multi-process run the first process writes all
of it and every process resumes from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..estimators import LearnedControlEstimator, get_estimator
from ..families import BERNOULLI
from . import parallel
from .reporting import StorageFullError, log, pyplot, storage_full, user_mode, write_csv, write_json

# what may differ between a checkpoint and the run that resumes it: none of it touches the training stream
RESUMABLE_CHANGES = ("steps", "eval_every", "checkpoint_every", "out", "data_dir")
LOG_EVERY = 100  # steps between reads of the training loss from the device (and progress-bar updates)


@dataclass
class TrainingConfig:
    """The fields the shared loop reads; each experiment's config extends it and sets its defaults."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "linear"
    estimator: str = "disarm"
    num_samples: int = 2  # f evaluations per layer and example
    steps: int = 100_000
    batch_size: int = 50
    shards: int = 1  # noise streams the batch is split into: one per process under torchrun
    lr: float = 1e-4  # Adam, the model's parameters
    control_lr: float = 1e-3  # Adam, REBAR/RELAX control parameters
    slope: float = 0.3  # LeakyReLU of the nonlinear models
    seed: int = 0
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    test_samples: int = 100  # samples per example of the final test bound
    device: str = "cpu"
    out: str = "runs/run"


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically: a temporary file, then a rename. On every failure (a
    full disk, Ctrl-C, SIGTERM) the temporary is removed and the previous checkpoint stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint.")
    os.close(fd)
    try:
        torch.save(state, tmp)
        user_mode(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, (OSError, RuntimeError)) and storage_full(error, path.parent):
            raise StorageFullError(
                f"the disk holding {path.parent} is full: the checkpoint of step {state.get('step', '?')} could not "
                f"be written; the previous checkpoint is intact. Free some space and run the same command with "
                f"--resume"
            ) from error
        raise


class DamagedFileError(ValueError):
    """A run file that cannot be read as what it should be."""


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, or one line naming the file and what to do when it is damaged or not a checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (
        OSError,
        RuntimeError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
    ) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        raise DamagedFileError(
            f"{path} is damaged or not an armgrad checkpoint ({type(error).__name__}: {str(error)[:80]}); delete it "
            f"(the run then starts again from step 0, or use --overwrite) or restore it from a copy"
        ) from None
    if not isinstance(state, dict) or not {"config", "step", "model"} <= set(state):
        raise DamagedFileError(
            f"{path} is not an armgrad checkpoint (no config, step and model in it); delete it or use another --out"
        )
    return state


class RunLog:
    """Metrics rows, elapsed time and the checkpoint of one run."""

    def __init__(self, out: Path, config, write: bool = True):
        self.out = Path(out)
        self.config = config  # what the run was trained with (written into results.json)
        self.write = write  # False on every process but the first of a multi-process run
        if write:
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
                self._writer = None  # type: ignore[assignment]  # no tensorboard: no writer
        return self._writer

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    def set_elapsed(self, seconds: float) -> None:
        """Set the run's clock (runs trained side by side keep the first one's)."""
        self.seconds, self._started = seconds, time.perf_counter()

    def record(self, row: dict) -> None:
        self.rows.append(row)
        if not self.write:
            return
        write_csv(self.out / "metrics.csv", self.rows)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and value == value:
                    writer.add_scalar(key, value, row["step"])
            writer.flush()
        log.info(
            "step %d: %s",
            row["step"],
            ", ".join(
                f"{k} not computed" if v is None else f"{k}={v:.4g}"
                for k, v in row.items()
                if k != "step" and (v is None or isinstance(v, float))
            ),
        )

    def save(self, step: int, state: dict) -> None:
        if self.write:
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
    return [e.state_dict() if isinstance(e, LearnedControlEstimator) else None for e in estimators]


def load_estimator_state(estimators: list, states: list) -> None:
    for estimator, state in zip(estimators, states):
        if state is not None:
            estimator.load_state_dict(state)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam on torch's fused kernel (one kernel for every parameter's update; a training step of the
    linear VAE on one CPU core is about 1.6x faster than with the default path), or its foreach path
    where this torch has no fused kernel for the parameters' device."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def zero_grads(optimizers) -> None:
    """Every gradient the ``optimizers`` step set to ``None``: ``zero_grad(set_to_none=True)`` on each, without the
    profiling hook each call pays (2 us instead of 19 for the VAE's two optimisers on a CPU core)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None


def make_estimators(name: str, num_layers: int, units: int, device="cpu", family=BERNOULLI) -> list:
    """One estimator per stochastic layer: the name, or a fresh object for trainable controls."""
    spec = get_estimator(name, family)  # a clear error, with a suggestion, for an unknown name
    if not spec.learned:
        return [name] * num_layers
    return [spec.create(num_units=units).to(device) for _ in range(num_layers)]


def with_controls(optimizers: dict, estimators: list, lr: float) -> dict:
    """``optimizers`` and, when the estimators learn control parameters (REBAR, RELAX, ...), an Adam
    on them under ``"controls"`` (stepped on their variance gradient, :func:`backward_step`)."""
    controls = control_parameters(estimators)
    return {**optimizers, "controls": adam(controls, lr)} if controls else dict(optimizers)


def control_parameters(estimators: list) -> list:
    return [p for e in estimators if isinstance(e, LearnedControlEstimator) for p in e.parameters()]


def backward_step(loss_fn, x: torch.Tensor, noise: list, mine, estimators=()) -> torch.Tensor:
    """Backward pass of one step's loss over this process's shards of the batch ``x``; return the loss.

    Shard ``s`` is the ``s``-th of ``len(noise)`` equal slices of the examples of ``x`` (axis -2),
    with its noise from ``noise[s]``; ``loss_fn(x_s, noise_s)`` is the mean loss over the shard's
    examples (one per run: a scalar, or ``(R,)`` for R runs side by side). The gradients
    accumulated are those of the mean over the shards ``mine`` (DDP then averages over processes),
    and the estimators' control parameters get their variance gradient, averaged alike. The loss
    returned is detached and stays on the device (no wait for it).
    """
    if len(noise) == 1:  # one shard: the whole batch (no slicing, no scaling)
        return _backward(loss_fn(x, noise[0]), estimators, 1)
    rows = x.shape[-2] // len(noise)
    losses = [_backward(loss_fn(x[..., s * rows : (s + 1) * rows, :], noise[s]), estimators, len(mine)) for s in mine]
    return torch.stack(losses).sum(0)


def _backward(loss: torch.Tensor, estimators, shards: int) -> torch.Tensor:
    loss = loss / shards if shards > 1 else loss
    # runs side by side have their own parameters: the sum gives each run its own loss's gradient
    (loss if loss.dim() == 0 else loss.sum()).backward()
    for e in estimators:
        if isinstance(e, LearnedControlEstimator):
            e.backward_variance(scale=1 / shards)
    return loss.detach()


def noise_generators(config, shards: int) -> list:
    """The estimators' noise streams of a run, one per shard of its batch (the same in every process)."""
    return [torch.Generator(config.device).manual_seed(parallel.noise_seed(config.seed, s)) for s in range(shards)]


def restore_generators(state: dict, data_gen: torch.Generator, noise_gens: list) -> None:
    data_gen.set_state(state["data_gen"])
    for gen, gen_state in zip(noise_gens, state.get("noise_gens") or [state["noise_gen"]]):
        gen.set_state(gen_state)


def training_row(run: RunLog, step: int, window_start: float, metric: str, values: list) -> dict:
    """The first fields of an evaluation's row: the clock, what else ran, and the mean training metric
    over ``values`` (the steps since the last evaluation, which began at ``window_start``)."""
    seconds = run.elapsed()
    return {
        "step": step,
        "seconds": seconds,
        "steps_per_second": len(values) / max(seconds - window_start, 1e-9),
        "load_average": os.getloadavg()[0],  # other work on the machine, for the wall-clock
        metric: sum(values) / len(values),
    }


class ConfigurationError(ValueError):
    """The run asked for cannot start as given (the command line answers with exit status 2)."""


class DivergedError(ValueError):
    """Training diverged: a non-finite loss or parameter, or a loss no model of the data can have."""


DIVERGED_NATS_PER_PIXEL = 100.0  # a per-example loss above this many nats per pixel: diverged


class DivergenceGuard:
    """Stops a run whose training diverged, with one line naming the steps, the value and what to try.

    ``check_losses`` looks at the per-example losses read from the device (every ``LOG_EVERY`` steps):
    non-finite, or above ``DIVERGED_NATS_PER_PIXEL`` per pixel (a Bernoulli decoder that is sure of the
    wrong pixel at logit 100; the uniform model costs 0.69 per pixel). ``check_parameters`` runs before a
    checkpoint is written, so a diverged run never overwrites its last good checkpoint. ``step_failed``
    turns the estimators' "non-finite logits" refusal inside a step into the same message.
    """

    def __init__(self, config, pixels: int, last_saved: int):
        self.config, self.limit, self.last_saved, self.last_read = (
            config,
            DIVERGED_NATS_PER_PIXEL * pixels,
            last_saved,
            last_saved,
        )

    def _fail(self, done: int, what: str):
        raise DivergedError(
            f"{self.config.out}: training diverged between steps {self.last_read + 1:,} and {done:,}: {what}; try a "
            f"smaller --lr (now {self.config.lr:g}); "
            + (
                f"the last checkpoint (step {self.last_saved:,}) is intact and was not overwritten"
                if self.last_saved
                else "no checkpoint had been written yet"
            )
        )

    def check_losses(self, losses, done: int) -> None:
        bad = [v for v in losses if not math.isfinite(v) or abs(v) > self.limit]
        if bad:
            self._fail(
                done,
                f"a training loss of {bad[0]:.4g} nats per example (beyond {self.limit:,.0f}, "
                f"{DIVERGED_NATS_PER_PIXEL:g} per pixel, or not finite)",
            )
        self.last_read = done

    def check_parameters(self, module, done: int) -> None:
        for name, p in module.named_parameters():
            if not bool(torch.isfinite(p).all()):
                self._fail(done, f"parameter {name} holds nan or inf")

    def saved(self, done: int) -> None:
        self.last_saved = done

    def step_failed(self, error: ValueError, done: int):
        if "non-finite" in str(error):
            self._fail(done, f"{error}")
        raise error


RUN_FILES = ("checkpoint.pt", "metrics.csv", "results.json", "curves.png")


def existing_run(out) -> str | None:
    """What run ``out`` holds ("finished, 3,000 steps", "checkpoint at step 1,500"), or ``None``."""
    out = Path(out)
    if (out / "results.json").exists():
        try:
            steps = json.loads((out / "results.json").read_text()).get("steps")
            return f"finished, {steps:,} steps" if isinstance(steps, int) else "finished"
        except (OSError, ValueError):
            return "finished"
    if (out / "checkpoint.pt").exists():
        return "a checkpoint"
    if (out / "metrics.csv").exists():
        return "metrics of an interrupted run without a checkpoint"
    return None


def check_same_configuration(config, saved: dict) -> None:
    """Refuse to resume a checkpoint made with another configuration (only RESUMABLE_CHANGES may differ)."""
    defaults = {f.name: f.default for f in fields(config)}  # a field added since the checkpoint: its default
    foreign = sorted(set(saved) - set(defaults))
    if foreign:
        raise ConfigurationError(
            f"{config.out}/checkpoint.pt is the checkpoint of another kind of run (it has {', '.join(foreign)}, which "
            f"this command does not know): resume it with the command that made it, or use another --out"
        )
    changed = sorted(
        k for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {getattr(config, k)!r} now" for k in changed)
        raise ConfigurationError(
            f"--resume with a different configuration than the checkpoint's ({details}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change. Give the checkpoint's values, or another --out"
        )


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it now, rather than fail at the first checkpoint hours later."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigurationError(
            f"cannot write into {folder} ({error.strerror or error}): give a folder you can write to with --out"
        ) from None


def prepare_out(config, resume: bool = False, overwrite: bool = False) -> None:
    """Check the run folder before any work: never overwrite a run silently, never resume another one.

    A folder holding a run needs ``resume`` (continue it; its configuration must match) or
    ``overwrite`` (its run files are deleted and training starts again).
    """
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {config.out} is an existing file, not a folder: give a folder for the run")
    check_writable(out)
    found = existing_run(config.out)
    if found is None:
        if resume:
            log.info("no checkpoint in %s: starting from step 0", config.out)
        return
    if resume:
        checkpoint = Path(config.out) / "checkpoint.pt"
        if not checkpoint.exists():
            raise ConfigurationError(
                f"{config.out} holds a run ({found}) but no checkpoint.pt: --resume cannot continue it and would "
                f"train from step 0 silently; use --overwrite to train it again from step 0, or another --out"
            )
        state = load_checkpoint(checkpoint)
        check_same_configuration(config, state["config"])
        if state["step"] > config.steps:
            raise ConfigurationError(
                f"{config.out} is already at step {state['step']:,}: --steps {config.steps:,} would make the run "
                f"shorter than it is (its results would mix the two lengths); give --steps {state['step']:,} or "
                f"more to continue it (e.g. --steps {2 * state['step']:,}), or another --out"
            )
        return
    if overwrite:
        for name in RUN_FILES:
            (Path(config.out) / name).unlink(missing_ok=True)
        shutil.rmtree(Path(config.out) / "tensorboard", ignore_errors=True)
        log.info("--overwrite: removed the run in %s (%s)", config.out, found)
        return
    raise ConfigurationError(
        f"{config.out} already holds a run ({found}): add --resume to continue it, "
        f"or --overwrite to start again from step 0"
    )


def describe(config, kind: str) -> str:
    """One line saying what is trained and where it is written."""
    budget = (
        f"on the {config.num_samples}-sample bound"
        if getattr(config, "objective", "elbo") == "iwae"
        else f"({config.num_samples} f evaluations per layer and example)"
    )
    return (
        f"training a {config.model} {kind}{latent_text(config)} on {config.dataset} with {config.estimator} "
        f"{budget}, {config.steps:,} steps, batch "
        f"{config.batch_size}, on {config.device} with {torch.get_num_threads()} thread(s), into {config.out}"
    )


def latent_text(config) -> str:
    """`` with 20 x 10 categorical latents`` for a categorical VAE; nothing for binary units (the default)."""
    categories = getattr(config, "categories", None)
    return f" with {config.latent_vars} x {categories} categorical latents" if categories else ""


def common_results(config, run: RunLog, train_metric: str, runs_in_process: int = 1) -> dict:
    """The results every run reports, from its configuration and its log."""
    last = run.rows[-1]
    return {
        "dataset": config.dataset,
        "model": config.model,
        "estimator": config.estimator,
        "num_samples": config.num_samples,
        "seed": config.seed,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "processes": parallel.world_size(),
        "runs_in_process": runs_in_process,
        "seconds": last["seconds"],
        train_metric: last[train_metric],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # what else ran: the seconds compare estimators only between runs that had the machine alike
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": _mean([r.get("load_average") for r in run.rows]),
    }


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def finish(run: RunLog, results: dict, curves: tuple, title: str) -> dict:
    """Write ``results.json`` (with the configuration) and ``curves.png``; return the results.

    Only the first process of a multi-process run writes; every process returns the results.
    """
    results = {**results, "config": asdict(run.config)}
    if not run.write:
        return results
    write_json(run.out / "results.json", results)
    log.info("wrote %s", run.out / "results.json")
    plt = pyplot(required=False)
    if plt is None:
        return results
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
