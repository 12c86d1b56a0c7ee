"""What a Pyro user gains: encoder-gradient variance and cost of Pyro's ELBOs and armgrad.pyro.ELBO.

    python examples/pyro_vae.py --steps 10000 --eval-every 1000 --save runs/pyro-vae/vae-10000.pt
    python benchmarks/pyro_variance.py runs/pyro-vae/vae-10000.pt [more checkpoints]

At the parameters of a checkpoint of ``examples/pyro_vae.py`` (the protocol's linear binary VAE on
Fashion-MNIST), on the first ``--batch`` test images, ``--draws`` independent estimates of the
gradient of the loss w.r.t. the encoder's parameters are drawn with each ELBO; the variance is the
mean over those parameters, with a standard error from ``--groups`` disjoint groups of draws. Every
case runs the model 3 times per estimate (equal model evaluations): Pyro's ELBOs with 3 particles,
armgrad's with its ancestral run and 2 branches. TraceGraph_ELBO's decaying-average baseline is warmed
up on training batches first and kept tracking them (``--refresh`` training-batch estimates between
two measured draws: on the fixed batch alone it would become a per-image baseline that training,
with a new batch every step, never has); its learned baseline (linear in x, as in Pyro's examples)
is trained with the VAE frozen. Time per estimate (``loss_and_grads``) is measured in the same run, the cases
one after another, and given relative to TraceGraph_ELBO without a baseline.

Writes ``OUT/pyro_variance.json`` and prints a Markdown table per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

import armgrad.pyro
from armgrad.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from pyro_vae import BinaryVAE, protocol_optimizer  # noqa: E402

CASES = {  # name: (ELBO, TraceGraph baseline)
    "Trace_ELBO (3 particles)": (lambda: Trace_ELBO(num_particles=3), None),
    "TraceGraph_ELBO (3 particles), no baseline": (lambda: TraceGraph_ELBO(num_particles=3), None),
    "TraceGraph_ELBO (3 particles), decaying average": (lambda: TraceGraph_ELBO(num_particles=3), "average"),
    "TraceGraph_ELBO (3 particles), learned baseline": (lambda: TraceGraph_ELBO(num_particles=3), "learned"),
    "armgrad.pyro.ELBO('reinforce_loo', 2)": (lambda: armgrad.pyro.ELBO("reinforce_loo", 2), None),
    "armgrad.pyro.ELBO('arm', 2)": (lambda: armgrad.pyro.ELBO("arm", 2), None),
    "armgrad.pyro.ELBO('disarm', 2)": (lambda: armgrad.pyro.ELBO("disarm", 2), None),
    "armgrad.pyro.ELBO('disarm', 2, vectorize_branches=True)": (
        lambda: armgrad.pyro.ELBO("disarm", 2, vectorize_branches=True, max_plate_nesting=1),
        None,
    ),
}
REFERENCE = "TraceGraph_ELBO (3 particles), no baseline"


def load_vae(state: dict, train_mean, baseline):
    pyro.clear_param_store()
    vae = BinaryVAE(train_mean, baseline)
    vae.load_state_dict(state["vae"], strict=False)  # (a learned baseline, if saved, is not reused)
    pyro.param("prior_logits", state["prior_logits"].clone())
    return vae


def prepare_baseline(vae, elbo, data, steps: int, batch: int) -> None:
    """Warm up a decaying average, or train a learned baseline with the VAE frozen (lr 0)."""
    if vae.baseline is None:
        return
    optimizer = pyro.optim.PyroOptim(
        protocol_optimizer, lambda module, param: {"lr": 1e-3 if module == "baseline" else 0.0}
    )
    svi = SVI(vae.model, vae.guide, optimizer, loss=elbo)
    for _ in range(steps):
        svi.step(train_batch(data, batch))


def train_batch(data, batch: int) -> torch.Tensor:
    return data.train_batch(torch.randint(data.train.shape[0], (batch,)))


def measure(vae, elbo, x, draws: int, groups: int, between=None) -> dict:
    params = list(vae.encoder.parameters())
    grads, seconds = [], 0.0
    for _ in range(draws):
        if between is not None:
            between()
        for p in params:
            p.grad = None
        start = time.perf_counter()
        elbo.loss_and_grads(vae.model, vae.guide, x)
        seconds += time.perf_counter() - start
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    g = torch.stack(grads)
    per_group = torch.stack([chunk.var(0).mean() for chunk in g.chunk(groups)])
    return {
        "variance": float(g.var(0).mean()),
        "se": float(per_group.std() / groups**0.5),
        "ms_per_estimate": 1000 * seconds / draws,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--baseline-steps", type=int, default=2000)
    parser.add_argument(
        "--refresh",
        type=int,
        default=20,
        help="training-batch estimates between two measured draws of the decaying average",
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset, args.data_dir)
    x = data.split("test")[: args.batch]
    report = {"threads": torch.get_num_threads(), "draws": args.draws, "batch": args.batch, "checkpoints": {}}
    for path in args.checkpoints:
        state = torch.load(path, weights_only=False)
        rows = {}
        for name, (make, baseline) in CASES.items():
            pyro.set_rng_seed(args.seed)
            vae = load_vae(state, data.train_mean, baseline)
            elbo = make()
            prepare_baseline(vae, elbo, data, args.baseline_steps, args.batch)
            between = None
            if baseline == "average":  # keep the average tracking training batches, as in training

                def between(vae=vae, elbo=elbo):
                    for _ in range(args.refresh):
                        elbo.loss_and_grads(vae.model, vae.guide, train_batch(data, args.batch))

            rows[name] = measure(vae, elbo, x, args.draws, args.groups, between)
            print(f"{path}: {name}: {rows[name]}", file=sys.stderr, flush=True)
        report["checkpoints"][path] = {"steps": state["steps"], "rows": rows}
        print(table(path, state["steps"], rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pyro_variance.json").write_text(json.dumps(report, indent=1))


def table(path, steps, rows) -> str:
    ref = rows[REFERENCE]
    lines = [
        f"\n{path} (after {steps} steps)\n",
        "| ELBO (3 model runs per estimate) | encoder-gradient variance | vs TraceGraph, no baseline "
        "| time per estimate | vs TraceGraph |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['variance']:.3g} ± {r['se']:.2g} | {r['variance'] / ref['variance']:.3f}x | "
            f"{r['ms_per_estimate']:.1f} ms | {r['ms_per_estimate'] / ref['ms_per_estimate']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
