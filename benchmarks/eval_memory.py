"""Peak resident memory and time of the importance-weighted test bound at large K.

Evaluates ``K``-sample bounds over the full 10,000-image Fashion-MNIST test set with a linear VAE
(from a run's checkpoint if given, else untrained) and the SBN bound with ``M`` samples, each in a
fresh process so that its peak resident memory (``ru_maxrss``) is its own.

    python benchmarks/eval_memory.py [--checkpoint runs/vae-long/linear-disarm-seed0/checkpoint.pt] [--k 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def measure(kind: str, k: int, checkpoint: str | None) -> dict:
    import torch

    from armgrad.data import load_dataset

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    if kind == "vae":
        from armgrad.experiments.vae import importance_weighted_bound
        from armgrad.models.vae import DiscreteVAE

        data = load_dataset("fashion-mnist")
        model = DiscreteVAE("linear", data.train_mean)
        if checkpoint:
            model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        value = float(importance_weighted_bound(model, data.split("test"), k, gen).mean())
    else:
        from armgrad.experiments.sbn import nll_bound
        from armgrad.models.sbn import StochasticBinaryNetwork

        data = load_dataset("fashion-mnist-threshold")
        model = StochasticBinaryNetwork("linear")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        value = float(nll_bound(model, data.split("test"), k, gen).mean())
    return {
        "kind": kind,
        "samples": k,
        "images": 10000,
        "bound": value,
        "seconds": time.perf_counter() - start,
        "peak_rss_mib_before": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--child", choices=["vae", "sbn"], default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.k, args.checkpoint)))
        return
    rows = []
    for kind in ("vae", "sbn"):
        cmd = [sys.executable, __file__, "--child", kind, "--k", str(args.k)]
        if args.checkpoint and kind == "vae":
            cmd += ["--checkpoint", args.checkpoint]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    lines = [
        "| bound | samples | test images | value | seconds | peak RSS MiB (data and model loaded) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['kind']} | {r['samples']} | {r['images']} | {r['bound']:.2f} | {r['seconds']:.1f} | "
        f"{r['peak_rss_mib_before']:.0f} | {r['peak_rss_mib']:.0f} |"
        for r in rows
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_memory.json").write_text(json.dumps(rows, indent=2))
    (args.out / "eval_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
