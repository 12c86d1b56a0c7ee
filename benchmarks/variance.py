"""Encoder-gradient variance of many estimators at the same trained VAE parameters (a paired comparison).

    python benchmarks/variance.py --checkpoint runs/first-look/linear-disarm-seed0/checkpoint.pt \\
        --cases elbo:disarm:2 elbo:reinforce_loo:2 elbo:double_cv:2 elbo:rodeo:2 iwae:vimco:4 iwae:local_disarm:2

Each case is ``objective:estimator:num_samples`` (``elbo`` with a budget of f evaluations per layer;
``iwae`` with the K of the bound, so ``iwae:local_disarm:2`` costs 4 evaluations). At the checkpoint's
parameters, on the first ``--batch`` test images, ``--draws`` independent estimates of the gradient of
the mean training loss w.r.t. the encoder's parameters are drawn; the reported variance is the mean
over parameters of their variance, with a standard error from ``--groups`` disjoint groups of draws.
Estimators with learned controls (REBAR, RELAX, Double CV, RODEO) first train their controls for
``--control-steps`` steps on training batches with the model frozen (their initial controls would
be another estimator's: RODEO and Double CV start as REINFORCE-LOO).

A checkpoint of a categorical VAE (``armgrad vae --categories``) takes the categorical estimators:
``elbo:disarm:2 elbo:reinforce_loo:2 elbo:arsm:46 ...``.

Writes ``OUT/variance.json`` and prints a Markdown table. Several checkpoints: one table each.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from armgrad import multisample
from armgrad.data import load_dataset
from armgrad.experiments.training import make_estimators
from armgrad.experiments.vae import training_loss
from armgrad.models.vae import DiscreteVAE


def parse_case(text: str) -> tuple[str, str, int]:
    try:
        objective, estimator, k = text.split(":")
        if objective not in ("elbo", "iwae"):
            raise ValueError
        return objective, estimator, int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected objective:estimator:num_samples (objective elbo or iwae), got {text!r}"
        ) from None


def load(path: str, device: str):
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["config"]
    data = load_dataset(config["dataset"], config.get("data_dir"))
    model = DiscreteVAE(
        config["model"],
        data.train_mean,
        units=config.get("latent_vars", 200),
        slope=config["slope"],
        categories=config.get("categories"),
    )
    model.load_state_dict(state["model"])
    return model.to(device).requires_grad_(False), data, state


def estimators_for(objective, name, model, device):
    if objective == "iwae":
        return [multisample.get_estimator(name)]
    return make_estimators(name, model.num_layers, model.prior_logits.numel(), device, model.family)


def train_controls(model, data, estimators, k, steps, lr, batch, generator, device) -> float:
    """Adam on the controls' variance objective, the model frozen; returns the seconds spent."""
    learned = [e for e in estimators if getattr(e, "learned", False)]
    if not learned or steps == 0:
        return 0.0
    start = time.perf_counter()
    optimizer = torch.optim.Adam([p for e in learned for p in e.parameters()], lr=lr)
    data_gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = data.train_batch(torch.randint(data.train.shape[0], (batch,), generator=data_gen), data_gen).to(device)
        optimizer.zero_grad()
        training_loss(model, x, generator, estimators=estimators, num_samples=k)
        for e in learned:
            e.backward_variance()
        optimizer.step()
    return time.perf_counter() - start


def gradient_variance(model, x, estimators, k, draws, groups, generator) -> tuple[float, float]:
    """Mean over encoder parameters of the gradient's variance, and its standard error over groups."""
    params = [p.requires_grad_(True) for p in model.encoder.parameters()]
    for e in estimators:
        if getattr(e, "learned", False):
            e.eval()
    grads = []
    for _ in range(draws):
        loss = training_loss(model, x, generator, estimators=estimators, num_samples=k)
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    for p in params:
        p.requires_grad_(False)
    grads = torch.stack(grads)
    per_group = [float(g.var(0).mean()) for g in grads.chunk(groups)]
    mean = float(grads.var(0).mean())
    spread = torch.tensor(per_group, dtype=torch.float64)
    return mean, float(spread.std() / math.sqrt(len(per_group)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="+", required=True)
    parser.add_argument("--cases", nargs="+", type=parse_case, required=True)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--control-steps", type=int, default=1000)
    parser.add_argument(
        "--control-lr",
        type=float,
        default=1e-2,
        help="Adam on the controls (larger than training's 1e-3: they start from scratch here)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for path in args.checkpoint:
        model, data, state = load(path, args.device)
        x = data.split("test")[: args.batch].to(args.device)
        rows = []
        for objective, name, k in args.cases:
            torch.manual_seed(0)  # learned controls start alike whatever ran before
            estimators = estimators_for(objective, name, model, args.device)
            gen = torch.Generator(args.device).manual_seed(0)
            try:
                seconds = train_controls(
                    model, data, estimators, k, args.control_steps, args.control_lr, args.batch, gen, args.device
                )
                mean, stderr = gradient_variance(model, x, estimators, k, args.draws, args.groups, gen)
            except ValueError as error:  # e.g. a learned control that diverged: say so, measure the others
                print(f"{path} {objective} {name} K={k}: failed: {error}", flush=True)
                mean, stderr, seconds = math.nan, math.nan, math.nan
            evaluations = multisample.get_estimator(name).evaluations(k) if objective == "iwae" else k
            rows.append(
                {
                    "objective": objective,
                    "estimator": name,
                    "num_samples": k,
                    "evaluations": evaluations,
                    "grad_var": mean,
                    "stderr": stderr,
                    "control_training_s": seconds,
                }
            )
            print(f"{path} {objective} {name} K={k}: {mean:.4g} ± {stderr:.2g}", flush=True)
        config = state["config"]
        results.append(
            {
                "checkpoint": path,
                "model": config["model"],
                "trained_with": config["estimator"],
                "step": state["step"],
                "rows": rows,
            }
        )
        print(f"\n### {config['model']} {config['estimator']}, step {state['step']:,} (`{path}`)\n")
        print("| objective | estimator | K / budget | f evaluations | encoder grad variance | ratio to the first |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['objective']} | {row['estimator']} | {row['num_samples']} | {row['evaluations']} | "
                f"{row['grad_var']:.4g} ± {row['stderr']:.2g} | {row['grad_var'] / rows[0]['grad_var']:.3f} |"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variance.json").write_text(
        json.dumps(
            {"draws": args.draws, "batch": args.batch, "control_steps": args.control_steps, "results": results},
            indent=1,
        )
    )
    return {"results": results}


if __name__ == "__main__":
    main()
