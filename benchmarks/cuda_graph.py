"""The training step captured as one CUDA graph, against the same step eager, on a GPU.

    python benchmarks/cuda_graph.py                      # R = 1, 8 and 32 runs side by side
    python benchmarks/cuda_graph.py --runs 8 --steps 200

A step of this size is bound by kernel launches on a GPU: every operator of the step (see the suite's
``operators`` section) is a launch. The batched step of ``armgrad study`` reads nothing back from the device
(tests/test_device_sync.py), so it can be captured whole, forward, backward and optimisers, and replayed as
one launch. For each R: the eager step (the batch copied into the device, gradients zeroed, loss and backward,
Adam with ``capturable=True`` and SGD) and the same step replayed from a graph, from the same seeds; the
milliseconds per run-step of each, the CUDA kernels per eager step, and the largest difference between
the two modes' parameters after the timed steps (the noise comes from each run's own generator, registered
with the graph, so the two modes should train the same runs to rounding).

Writes ``OUT/cuda_graph.md`` and ``OUT/cuda_graph.json``. Without a GPU it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from armgrad._random import RunGenerators  # noqa: E402
from armgrad.data import load_dataset  # noqa: E402
from armgrad.experiments.mixture import RunMixture  # noqa: E402
from armgrad.experiments.vae import training_loss  # noqa: E402
from armgrad.models.stacked import stack  # noqa: E402
from armgrad.models.vae import DiscreteVAE  # noqa: E402

import suite  # noqa: E402  count_operators


def build(data, runs: int, device: str, estimator: str, batch: int):
    """R runs of the linear VAE side by side as ``armgrad study`` stacks them, their optimisers (capturable), a
    static batch buffer on the device, and ``next_batch`` (the runs' batches, drawn on the host)."""
    alone = []
    for seed in range(runs):
        torch.manual_seed(seed)
        alone.append(DiscreteVAE("linear", data.train_mean))
    model = stack(alone).to(device)
    estimators = [estimator] if runs == 1 else RunMixture.for_runs([estimator] * runs, 1)
    gens = [torch.Generator(device).manual_seed(1000 + seed) for seed in range(runs)]
    noise = gens[0] if runs == 1 else RunGenerators(gens)
    optimizers = [
        torch.optim.Adam(
            list(model.encoder.parameters()) + list(model.decoder.parameters()), lr=1e-4, capturable=True, fused=True
        ),
        torch.optim.SGD([model.prior_logits], lr=1e-2),
    ]
    shape = (batch, data.train.shape[1]) if runs == 1 else (runs, batch, data.train.shape[1])
    static_x = torch.zeros(shape, device=device)
    data_gens = [torch.Generator().manual_seed(seed) for seed in range(runs)]

    def next_batch():
        xs = [data.train_batch(torch.randint(data.train.shape[0], (batch,), generator=g), g) for g in data_gens]
        static_x.copy_(xs[0] if runs == 1 else torch.stack(xs), non_blocking=True)

    def compute():
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=False)
        training_loss(model, static_x, noise, estimators=estimators, num_samples=2).sum().backward()
        for optimizer in optimizers:
            optimizer.step()

    return model, gens, next_batch, compute


def timed(fn, steps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(data, runs: int, args) -> dict:
    """Both modes from the same seeds, 3 warm-up steps and ``args.steps`` timed ones each; the counts on a third."""
    _, _, batch_c, compute_c = build(data, runs, args.device, args.estimator, args.batch)
    counts = suite.count_operators(lambda: (batch_c(), compute_c()), args.device, steps=5)

    model_e, _, batch_e, compute_e = build(data, runs, args.device, args.estimator, args.batch)

    def eager():
        batch_e()
        compute_e()

    for _ in range(3):
        eager()
    eager_s = timed(eager, args.steps)

    # the graph: warm up on a side stream, capture one step, replay it
    model_g, gens, batch_g, compute_g = build(data, runs, args.device, args.estimator, args.batch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            batch_g()
            compute_g()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for g in gens:
        graph.register_generator_state(g)
    with torch.cuda.graph(graph):  # records the step without running it
        compute_g()

    def replayed():
        batch_g()
        graph.replay()

    graph_s = timed(replayed, args.steps)
    torch.cuda.synchronize()
    difference = max(
        float((a - b).abs().max()) for a, b in zip(model_e.parameters(), model_g.parameters(), strict=True)
    )
    return {
        "runs": runs,
        "eager_ms_per_run_step": 1e3 * eager_s / runs,
        "graph_ms_per_run_step": 1e3 * graph_s / runs,
        "speedup": eager_s / graph_s,
        "cuda_kernels_per_eager_step": counts["cuda_kernels_per_step"],
        "operator_calls_per_eager_step": counts["calls_per_step"],
        "max_parameter_difference": difference,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per mode")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--estimator", default="disarm")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(
            f"cuda_graph.py: CUDA graphs need a GPU, and there is none here (device {args.device!r}, "
            f"torch.cuda.is_available() = {torch.cuda.is_available()}): nothing measured",
            file=sys.stderr,
        )
        raise SystemExit(2)
    data = load_dataset(args.dataset, args.data_dir)
    rows = []
    for runs in args.runs:
        try:
            rows.append(measure(data, runs, args))
        except Exception as error:  # a capture that fails is a result too: say which and why
            rows.append({"runs": runs, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"})
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"## The training step as one CUDA graph ({torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"linear VAE, {args.estimator}, batch {args.batch}, {args.steps} timed steps per mode)",
        "",
        "| runs | eager ms per run-step | graph ms per run-step | speedup | CUDA kernels per eager step | "
        "operator calls per eager step | largest parameter difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runs']} | capture failed: {r['error']} | | | | | |")
        else:
            lines.append(
                f"| {r['runs']} | {r['eager_ms_per_run_step']:.3f} | {r['graph_ms_per_run_step']:.3f} | "
                f"{r['speedup']:.2f}x | {r['cuda_kernels_per_eager_step']} | "
                f"{r['operator_calls_per_eager_step']:.0f} | {r['max_parameter_difference']:.2g} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_graph.md").write_text(text)
    (args.out / "cuda_graph.json").write_text(json.dumps(rows, indent=1))
    return {"rows": rows}


if __name__ == "__main__":
    main()
