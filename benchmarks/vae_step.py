"""One VAE training step per model and estimator, against the floor of the same network.

The floor is a plain forward and backward pass of the same VAE on the same stacked batch: the
``T * num_samples`` configurations an estimator evaluates, drawn ancestrally, the negative ELBO
on all of them, and a backward pass through decoder and encoder. A step (loss and backward; the
optimiser update is left out of both) costs at least that; the ratio is what the estimator adds.
Timings are interleaved round-robin in one run and reported as medians.

    python benchmarks/vae_step.py [--models linear nonlinear linear2] [--repeats 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from armgrad import ESTIMATORS
from armgrad.experiments.vae import training_loss
from armgrad.models.vae import BinaryVAE


def floor_step(model, x, configurations, generator):
    """The first layer's logits once per example, ``configurations`` ancestral samples from them."""
    samples, logits, h = [], [], None
    for t, layer in enumerate(model.encoder_layers()):
        phi = layer(x) if t == 0 else layer(h)
        u = torch.rand((configurations, *phi.shape) if t == 0 else phi.shape, generator=generator)
        h = (u < torch.sigmoid(phi.detach())).float()
        samples.append(h)
        logits.append(phi if t else phi.expand(configurations, *phi.shape))
    f = model.negative_elbo(x, samples, [phi.detach() for phi in logits])
    loss = f.mean() + sum((phi * 1e-3).sum() for phi in logits)  # a backward pass through the encoder too
    loss.backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["linear", "nonlinear", "linear2"])
    parser.add_argument("--estimators", nargs="+", default=["arm", "disarm", "reinforce_loo", "reinforce"])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 784, generator=gen) < 0.3).float()
    rows = []
    for name in args.models:
        model = BinaryVAE(name, x.mean(0))
        configurations = model.num_layers * args.num_samples
        cases = {"floor": lambda: floor_step(model, x, configurations, gen)}
        for est in args.estimators:
            budget = ESTIMATORS[est].valid_budget(args.num_samples)
            cases[est] = lambda est=est, budget=budget: training_loss(model, x, [est] * model.num_layers,
                                                                      budget, gen).backward()
        times = {case: [] for case in cases}
        for _ in range(5):
            for fn in cases.values():
                fn()
        for _ in range(args.repeats):
            for case, fn in cases.items():
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                fn()
                times[case].append(time.perf_counter() - start)
        floor = statistics.median(times["floor"])
        for case, t in times.items():
            rows.append({"model": name, "case": case, "median_ms": 1e3 * statistics.median(t),
                         "ratio_to_floor": statistics.median(t) / floor})
    header = (f"VAE training step (loss + backward) at batch {args.batch}, {args.num_samples} f evaluations per "
              f"layer, {args.threads} thread(s), torch {torch.__version__}, {args.repeats} interleaved repeats")
    table = ["| model | case | median ms | ratio to floor |", "|---|---|---|---|"]
    table += [f"| {r['model']} | {r['case']} | {r['median_ms']:.2f} | {r['ratio_to_floor']:.2f} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vae_step.json").write_text(json.dumps({"setup": header, "rows": rows}, indent=2))
    (args.out / "vae_step.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    print(header + "\n\n" + "\n".join(table))


if __name__ == "__main__":
    main()
