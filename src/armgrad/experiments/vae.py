"""Discrete VAEs trained with any estimator of the registry (the DisARM protocol by default).

Reads top to bottom: configuration, data, model, estimators, optimisers, the training step,
evaluation, logging and checkpoints. The estimators know nothing of VAEs and the model nothing of
estimators; :func:`armgrad.network.chain_estimate` wires the encoder's layers to the estimator.
"""

from __future__ import annotations

import math
import resource
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from ..data import load_dataset
from ..diagnostics import controls_frozen
from ..estimators import get_estimator
from ..models.vae import BinaryVAE
from ..network import chain_estimate
from .reporting import log, progress, pyplot, write_json
from .training import RunLog, estimator_state, load_estimator_state


@dataclass
class VAEConfig:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "linear"
    estimator: str = "disarm"
    num_samples: int = 2  # f evaluations per layer and example
    steps: int = 1_000_000
    batch_size: int = 50
    lr: float = 1e-4  # Adam, encoder and decoder
    prior_lr: float = 1e-2  # SGD, prior logits
    control_lr: float = 1e-3  # Adam, REBAR/RELAX control parameters
    slope: float = 0.3  # LeakyReLU of the nonlinear model
    seed: int = 0
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    test_samples: int = 100  # K of the importance-weighted test bound
    grad_var_draws: int = 20  # encoder-gradient estimates drawn for its variance, at each evaluation
    device: str = "cpu"
    out: str = "runs/vae"


# what may differ between a checkpoint and the run that resumes it: none of it touches the training stream
RESUMABLE_CHANGES = ("steps", "eval_every", "checkpoint_every", "out", "data_dir")


def make_estimators(config: VAEConfig, num_layers: int, units: int) -> list:
    """One estimator per stochastic layer: the name, or a fresh object for trainable controls."""
    spec = get_estimator(config.estimator)  # a clear error, with a suggestion, for an unknown name
    if spec.create is None:
        return [config.estimator] * num_layers
    return [spec.create(num_units=units).to(config.device) for _ in range(num_layers)]


@torch.no_grad()
def importance_weighted_bound(model: BinaryVAE, x: torch.Tensor, num_samples: int, generator=None,
                              example_chunk: int = 100, sample_chunk: int = 100) -> torch.Tensor:
    """``log (1/K) sum_k p(x, b_k) / q(b_k | x)`` per example, ``(N,)``, in chunks (flat memory).

    With ``K = 1`` it is the ELBO of one sample. Memory is bounded by
    ``example_chunk * sample_chunk * 784`` floats whatever ``N`` and ``K``.
    """
    bounds = []
    for start in range(0, x.shape[0], example_chunk):
        xb = x[start : start + example_chunk]
        parts = []
        for k0 in range(0, num_samples, sample_chunk):
            k = min(sample_chunk, num_samples - k0)
            samples, log_q = model.sample_posterior(xb, k, generator)
            parts.append(torch.logsumexp(model.log_joint(xb, samples) - log_q, dim=0))
        bounds.append(torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_samples))
    return torch.cat(bounds)


def training_loss(model, x, estimators, num_samples, generator) -> torch.Tensor:
    """Mean over the batch of the estimated negative ELBO; its gradient is the estimator's."""
    value = chain_estimate(partial(model.negative_elbo, x), model.encoder_layers(), x, estimators,
                           num_samples, generator=generator)
    return value.mean()


def encoder_gradient_variance(model, x, estimators, num_samples, draws: int, generator) -> float:
    """Mean over encoder parameters of the variance of their gradient, over ``draws`` estimates on ``x``."""
    params = [p for p in model.encoder.parameters()]
    grads = []
    with controls_frozen(estimators):
        for _ in range(draws):
            loss = training_loss(model, x, estimators, num_samples, generator)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return float(torch.stack(grads).var(0).mean())


def evaluate(model, data, estimators, config: VAEConfig, step: int, final: bool) -> dict:
    """Test ELBO (one sample), the K-sample bound at the end, and the encoder-gradient variance."""
    gen = torch.Generator(config.device).manual_seed(10_000 * config.seed + step)  # apart from training
    device = config.device
    model.eval()
    test = data.split("test").to(device)
    row = {"test_elbo": float(importance_weighted_bound(model, test, 1, gen).mean()), "test_bound": math.nan}
    if final:
        row["test_bound"] = float(importance_weighted_bound(model, test, config.test_samples, gen).mean())
    fixed = data.split("train")[: config.batch_size].to(device)
    row["grad_var"] = encoder_gradient_variance(model, fixed, estimators, config.num_samples,
                                                config.grad_var_draws, gen)
    model.train()
    return row


def train(config: VAEConfig, resume: bool = False) -> dict:
    """Train, evaluate and checkpoint one VAE; return (and write) its results."""
    out = Path(config.out)
    run = RunLog(out)
    device = config.device
    data = load_dataset(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)  # initial weights
    model = BinaryVAE(config.model, data.train_mean, slope=config.slope).to(device)
    estimators = make_estimators(config, model.num_layers, model.prior_logits.numel())
    controls = [p for e in estimators if isinstance(e, torch.nn.Module) for p in e.parameters()]
    optimizer = torch.optim.Adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), lr=config.lr)
    prior_optimizer = torch.optim.SGD([model.prior_logits], lr=config.prior_lr)
    control_optimizer = torch.optim.Adam(controls, lr=config.control_lr) if controls else None
    data_gen = torch.Generator().manual_seed(config.seed)  # batches and dynamic binarisation
    noise_gen = torch.Generator(device).manual_seed(config.seed + 1)  # the estimators' noise

    start, running = 0, []
    state = run.resume() if resume else None
    if state is not None:
        changed = sorted(k for k, v in asdict(config).items()
                         if k not in RESUMABLE_CHANGES and state["config"].get(k) != v)
        if changed:
            raise ValueError(f"--resume with a different configuration than the checkpoint's: {changed} "
                             f"(only {', '.join(RESUMABLE_CHANGES)} may change)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        prior_optimizer.load_state_dict(state["prior_optimizer"])
        if control_optimizer is not None:
            control_optimizer.load_state_dict(state["control_optimizer"])
        load_estimator_state(estimators, state["estimators"])
        data_gen.set_state(state["data_gen"])
        noise_gen.set_state(state["noise_gen"])
        start, running = state["step"], state["running"]

    def checkpoint(step):
        run.save(step, {
            "config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "prior_optimizer": prior_optimizer.state_dict(),
            "control_optimizer": control_optimizer.state_dict() if control_optimizer else None,
            "estimators": estimator_state(estimators), "data_gen": data_gen.get_state(),
            "noise_gen": noise_gen.get_state(), "running": running,
        })

    n_train = data.train.shape[0]
    bar = progress(total=config.steps, desc=f"{config.model} {config.estimator}")
    bar.update(start)
    window_start = run.elapsed()
    for step in range(start, config.steps):
        indices = torch.randint(n_train, (config.batch_size,), generator=data_gen)
        x = data.train_batch(indices, data_gen).to(device)
        loss = training_loss(model, x, estimators, config.num_samples, noise_gen)
        optimizer.zero_grad(set_to_none=True)
        prior_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        prior_optimizer.step()
        if control_optimizer is not None:
            control_optimizer.zero_grad(set_to_none=True)
            for e in estimators:
                e.backward_variance()
            control_optimizer.step()
        running.append(-loss.item())
        bar.update(1)
        done = step + 1
        if done % 100 == 0:
            bar.set_postfix(elbo=f"{sum(running[-100:]) / len(running[-100:]):.2f}")
        final = done == config.steps
        if done % config.eval_every == 0 or final:
            seconds = run.elapsed()
            row = {"step": done, "seconds": seconds,
                   "steps_per_second": len(running) / max(seconds - window_start, 1e-9),
                   "train_elbo": sum(running) / len(running)}
            row.update(evaluate(model, data, estimators, config, done, final))
            run.record(row)
            running, window_start = [], run.elapsed()
        if done % config.checkpoint_every == 0 or final:
            checkpoint(done)
    bar.close()

    last = run.rows[-1]
    results = {
        "dataset": config.dataset, "model": config.model, "estimator": config.estimator,
        "num_samples": config.num_samples, "seed": config.seed, "steps": config.steps,
        "seconds": last["seconds"], "train_elbo": last["train_elbo"], "test_elbo": last["test_elbo"],
        "test_bound": last.get("test_bound"), "test_samples": config.test_samples, "grad_var": last["grad_var"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "config": asdict(config),
    }
    write_json(out / "results.json", results)
    plot_curves(run.rows, out / "curves.png", f"{config.dataset} {config.model} {config.estimator}")
    return results


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_elbo"] for r in rows], label="train ELBO (1 sample)")
    ax.plot(steps, [r["test_elbo"] for r in rows], label="test ELBO (1 sample)")
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
