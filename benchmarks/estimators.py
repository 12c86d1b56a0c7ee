"""Cost of one ``armgrad.grad`` call per estimator, against the bare cost of its f evaluations.

The floor ("bare") is what any hand-written estimator must pay: draw the uniforms, threshold them
into ``num_samples`` stacked Bernoulli samples, and evaluate ``f`` once on the stack. ``f`` is a
linear Bernoulli decoder 200 -> 784 (a VAE's ``-log p(x | b)``), at batch 50 x 200 units.
All timings are interleaved round-robin in one run and reported as medians and ratios.

    python benchmarks/estimators.py [--batch 50] [--units 200] [--budget 2] [--repeats 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import armgrad


def make_objective(batch, units, pixels=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(units, pixels, generator=g) / units**0.5
    bias = torch.zeros(pixels)
    x = (torch.rand(batch, pixels, generator=g) < 0.3).float()

    def neg_log_likelihood(b):  # (S, batch, units) -> (S, batch)
        return F.binary_cross_entropy_with_logits(b @ weight + bias, x.expand(b.shape[0], -1, -1),
                                                  reduction="none").sum(-1)

    return neg_log_likelihood


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    f = make_objective(args.batch, args.units)
    logits = torch.randn(args.batch, args.units)
    gen = torch.Generator().manual_seed(0)

    def bare():
        with torch.no_grad():
            u = torch.rand((args.budget, *logits.shape), generator=gen)
            return f((u < torch.sigmoid(logits)).float())

    cases = {"bare (sample + f)": bare}
    evaluations = {"bare (sample + f)": args.budget}
    for name, spec in armgrad.ESTIMATORS.items():
        if spec.enumerates:
            continue
        est = spec.create(num_units=args.units) if spec.create else name
        budget = spec.valid_budget(args.budget)  # REBAR/RELAX: a multiple of 3
        evaluations[name] = budget
        cases[name] = lambda est=est, budget=budget: armgrad.grad(f, logits, est, budget, generator=gen)

    times = {name: [] for name in cases}
    for _ in range(10):  # warm-up
        for fn in cases.values():
            fn()
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    floor = statistics.median(times["bare (sample + f)"])
    rows = [{"case": name, "f_evaluations": evaluations[name], "median_ms": 1e3 * statistics.median(t),
             "ratio_to_bare": statistics.median(t) / floor} for name, t in times.items()]
    table = ["| case | f evaluations | median ms | ratio to bare |", "|---|---|---|---|"]
    table += [f"| {r['case']} | {r['f_evaluations']} | {r['median_ms']:.3f} | {r['ratio_to_bare']:.2f} |" for r in rows]
    header = (f"armgrad.grad at batch {args.batch} x {args.units} units, budget {args.budget}, "
              f"{args.threads} thread(s), torch {torch.__version__}, {args.repeats} interleaved repeats")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "estimators.json").write_text(json.dumps({"setup": header, "rows": rows}, indent=2))
    (args.out / "estimators.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    print(header + "\n\n" + "\n".join(table))


if __name__ == "__main__":
    main()
