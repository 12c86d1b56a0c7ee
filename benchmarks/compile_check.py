"""Does ``torch.compile`` pay off for the training step? One linear-VAE step (DisARM, batch 50, two
evaluations: loss, backward, fused Adam and SGD, the data batch), eager against compiled, each mode
in a fresh process, the modes alternated round-robin:

    python benchmarks/compile_check.py                 # CPU, one thread, 2 rounds
    python benchmarks/compile_check.py --device cuda --rounds 3

Modes: ``eager``; ``elbo``: ``torch.compile`` of the model's ``negative_elbo`` (the likelihood terms:
the decoder product and its element-wise tail, the part without random draws); ``loss``: the whole
step's loss (the estimator and its draws included, which break the graph). Prints and writes
``OUT/compile_check.md``: milliseconds per step (best of 3 timed blocks of ``--steps``) and the
compile time of the first steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("eager", "elbo", "loss")


def one(mode: str, device: str, steps: int, dataset: str, data_dir: str | None) -> dict:
    from functools import partial

    import torch

    from armgrad.data import load_dataset
    from armgrad.experiments.training import adam
    from armgrad.experiments.vae import training_loss
    from armgrad.models.vae import DiscreteVAE

    torch.set_num_threads(1)
    data = load_dataset(dataset, data_dir)
    torch.manual_seed(0)
    model = DiscreteVAE("linear", data.train_mean).to(device)
    if mode == "elbo":
        model.negative_elbo = torch.compile(model.negative_elbo, dynamic=False)
    optimizers = [
        adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), 1e-4),
        torch.optim.SGD([model.prior_logits], lr=1e-2),
    ]
    loss_fn = partial(training_loss, model, estimators=["disarm"], num_samples=2)
    if mode == "loss":
        loss_fn = torch.compile(loss_fn, dynamic=False)
    noise, batches = torch.Generator(device).manual_seed(1), torch.Generator().manual_seed(0)

    def step():
        x = data.train_batch(torch.randint(data.train.shape[0], (50,), generator=batches), batches).to(device)
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss_fn(x, noise).backward()
        for o in optimizers:
            o.step()

    def timed(n):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = timed(20)  # compilation happens here
    blocks = [1e3 * timed(steps) / steps for _ in range(3)]
    return {"mode": mode, "first_20_steps_s": first, "ms_per_step": min(blocks)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.device, args.steps, args.dataset, args.data_dir)))
        return
    rows = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            command = [
                sys.executable,
                __file__,
                "--one",
                mode,
                "--device",
                args.device,
                "--steps",
                str(args.steps),
                "--dataset",
                args.dataset,
            ] + (["--data-dir", args.data_dir] if args.data_dir else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
            rows[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    eager = statistics.median(r["ms_per_step"] for r in rows["eager"])
    lines = [
        f"## torch.compile and the training step ({args.device}, one thread, linear VAE, DisARM, batch 50; "
        f"{args.rounds} alternated rounds, medians)",
        "",
        "| mode | ms per step | over eager | first 20 steps, s |",
        "|---|---|---|---|",
    ]
    for mode, runs in rows.items():
        ms = statistics.median(r["ms_per_step"] for r in runs)
        first = statistics.median(r["first_20_steps_s"] for r in runs)
        lines.append(f"| {mode} | {ms:.3f} | {ms / eager:.2f} | {first:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_check.md").write_text(text)


if __name__ == "__main__":
    main()
