"""Maximum-likelihood stochastic binary networks: the lower half of a digit from its upper half.

Reads top to bottom like the VAE experiment, and shares its loop (:mod:`.training`): data
(threshold-binarised images split into halves), model, estimators, optimiser, step, evaluation
(the ``M``-sample bound on validation and test, the checkpoint with the best validation bound
reported), logging and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data import load_dataset
from ..models.sbn import StochasticBinaryNetwork
from ..network import ancestral_sample, chain_estimate
from .reporting import progress, pyplot
from .training import Task, TrainingConfig, adam, finish, make_estimators, run_training

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
def nll_bound(model, images: torch.Tensor, num_samples: int, generator=None,
              example_chunk: int = 500, sample_chunk: int = 100, desc: str | None = None) -> torch.Tensor:
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

    def offer(self, model, valid_nll_bound: float, step: int) -> None:
        if valid_nll_bound < self.valid_nll_bound:
            self.valid_nll_bound, self.step = valid_nll_bound, step
            self.state = {k: v.clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        return {"valid_nll_bound": self.valid_nll_bound, "state": self.state, "step": self.step}

    def load_state_dict(self, saved: dict) -> None:
        self.valid_nll_bound, self.state, self.step = saved["valid_nll_bound"], saved["state"], saved["step"]


def training_loss(model, x, estimators, num_samples, generator) -> torch.Tensor:
    upper, lower = halves(x)
    value = chain_estimate(lambda samples, logits: -model.log_likelihood(lower, samples[-1]),
                           model.stochastic_layers(), upper, estimators, num_samples, generator=generator)
    return value.mean()


def train(config: SBNConfig, resume: bool = False) -> dict:
    device = config.device
    data = load_dataset(config.dataset, config.data_dir)
    if data.binarization == "dynamic":
        raise ValueError(f"the SBN task uses fixed binary images: use {config.dataset}-threshold "
                         f"(or mnist-static), not the dynamically binarised {config.dataset!r}")
    torch.manual_seed(config.seed)
    model = StochasticBinaryNetwork(config.model, slope=config.slope).to(device)
    estimators = make_estimators(config.estimator, 2, 200, device)
    valid, test = data.split("valid").to(device), data.split("test").to(device)
    best = BestCheckpoint()  # checkpointed with the run (Task.state)

    def evaluate(step, final):
        gen = torch.Generator(device).manual_seed(10_000 * config.seed + step)
        row = {"valid_nll_bound": float(nll_bound(model, valid, config.eval_samples, gen).mean()),
               "test_nll_bound": None}  # not computed before the end
        best.offer(model, row["valid_nll_bound"], step)
        if final:  # the checkpoint with the best validation bound is the one reported
            current = {k: v.clone() for k, v in model.state_dict().items()}
            model.load_state_dict(best.state)
            row["best_step"] = best.step
            row["valid_nll_bound_best"] = best.valid_nll_bound
            row["test_nll_bound"] = float(nll_bound(model, test, config.test_samples, gen,
                                                    desc=f"test bound (M={config.test_samples})").mean())
            completion_figure(model, test, config.out + "/completions.png", gen)
            model.load_state_dict(current)
        return row

    task = Task(
        model=model, estimators=estimators,
        optimizers={"model": adam(model.parameters(), config.lr)},
        loss=lambda x, gen: training_loss(model, x, estimators, config.num_samples, gen),
        batch=data.train_batch,
        num_train=data.train.shape[0], evaluate=evaluate,
        train_metric="train_nll", report_loss_as_is=True, state=best,
    )
    run, results = run_training(config, task, resume)
    last = run.rows[-1]
    results.update(test_nll_bound=last["test_nll_bound"], valid_nll_bound=last["valid_nll_bound_best"],
                   best_step=last["best_step"], test_samples=config.test_samples, valid_samples=config.eval_samples)
    curves = (("train_nll", "train -log p(x_lower | b), 1 sample"), ("valid_nll_bound", f"valid bound, M={config.eval_samples}"))
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
