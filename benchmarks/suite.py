"""The benchmark suite: what each estimator costs, and what its variance buys, as side-by-side ratios.

    python benchmarks/suite.py                       # everything, CPU, 1 thread (~4 minutes)
    python benchmarks/suite.py --device cuda         # the same on a GPU
    python benchmarks/suite.py --only grad step      # some sections

Sections (every timing interleaved round-robin with its reference in one run; medians):

- ``grad``: one ``armgrad.grad`` call per estimator against the bare cost of its f evaluations
  (draw the uniforms, threshold them into the stacked samples, evaluate ``f`` once). ``f`` is a
  linear Bernoulli decoder 200 -> 784 at batch 50 x 200 units.
- ``categorical``: one ``armgrad.categorical.grad`` call per categorical estimator against the bare cost
  of its f evaluations (draw the uniforms, take the one-hot Gumbel-max samples, evaluate ``f`` once on
  as many samples as the estimator evaluates; for the straight-through family, which differentiates
  ``f``, also the backward pass of ``f`` to its input). ``f`` is a linear Bernoulli decoder (20 x 10 one-hot
  -> 784) at batch 50 x 20 variables x 10 categories; and ReinMax's forward and backward through it
  against the authors' ``reinmax`` package doing the same.
- ``step``: one VAE training step (loss and backward) per model and estimator against the floor:
  a plain forward and backward pass of the same network on the same stacked batch (the ``T * S``
  configurations drawn ancestrally, the negative ELBO on all of them, backward through decoder
  and encoder).
- ``layers``: ARM on the 1- to 4-layer linear VAEs, in units of one forward and backward pass on a
  single configuration per example, against its count of f evaluations: ``2T`` (armgrad
  evaluates only the branches, each a valid draw from q) and ``1 + 2T`` (the paper's count, with a
  separate plain sample).
- ``throughput``: what the user runs, through the command line (data, loss, backward, optimiser):
  one ``armgrad vae`` run alone on the machine against the arithmetic floor of its step (the four
  matrix products: encoder forward and weight gradient, decoder forward on the stacked samples and
  its weight gradient); then run-steps per second of ``armgrad study`` with R runs per process
  against separate ``armgrad vae`` processes, both two processes at a time on two cores.
- ``profile``: where one training step's time goes (torch.profiler over ``--profile-steps`` steps of
  the linear VAE with DisARM: the library's batch, loss, backward and optimisers, as the loops run them),
  the operators with the most self time, per step.
- ``operators``: what one training step asks of the machine, per model and estimator (the step as the loop runs
  it: batch, loss, backward, optimisers): operator calls (every event torch.profiler records, nested ones
  included, the count ``profile`` totals), how many distinct operators, host reads, on a GPU the device kernels
  launched, and the milliseconds of the step; with the cost of one trivial operator on this machine
  (``torch.add`` of two one-element tensors), so that machines compare.
- ``parts``: the linear DisARM step as the loop runs it against the parts of it that are arithmetic, each
  timed alone in the same interleaved rounds: the four matrix products, fused Adam's update of the model's
  parameters, the batch (its gather and 39,200 uniforms), the likelihood's element-wise work on the decoder's
  logits (softplus forward, sigmoid back), the estimator's uniforms; the remainder is everything else
  (operator calls, autograd, Python).
- ``variance``: at a trained checkpoint, the encoder-gradient variance of each estimator on one
  fixed batch, and variance x cost (f evaluations, and milliseconds per step): lower is better at
  equal compute.

Writes ``OUT/suite.json`` and ``OUT/suite.md``; with ``--only``, files named after the sections
(``--only throughput``: ``OUT/throughput.json``, ``OUT/throughput.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import armgrad
from armgrad import ESTIMATORS
from armgrad.estimators import BINARY, ENUMERATION, LearnedControlEstimator, select
from armgrad.experiments.training import make_estimators
from armgrad.experiments.vae import encoder_gradient_variance, training_loss
from armgrad.models.vae import DiscreteVAE

SECTIONS = (
    "grad",
    "multisample",
    "categorical",
    "step",
    "layers",
    "variance",
    "throughput",
    "profile",
    "operators",
    "parts",
)
# the estimators that evaluate f at binary points only (the stateless ones fused into one call of f per
# step; Double CV and RODEO with their df/db and their controls' variance gradient)
STEP_ESTIMATORS = select(evaluates_f_at=BINARY)
# every stateless Monte Carlo estimator, biased ones included (their variance hides their bias)
VARIANCE_ESTIMATORS = select(learned=False, evaluates_f_at=lambda where: where != ENUMERATION)
CHECKPOINTS = (
    "runs/vae-study/linear-disarm-seed0/checkpoint.pt",
    "runs/vae-long/linear-disarm-seed0/checkpoint.pt",
    "runs/first-look/linear-disarm-seed0/checkpoint.pt",
)


def interleaved(cases: dict, repeats: int, device: str, warmup: int = 5, before=None, rewarm: bool = False) -> dict:
    """Median seconds of each case, timed round-robin so that load and clock drift hit all alike.

    ``rewarm``: run each case once untimed just before timing it, so that a case that touches much
    memory (RODEO's network over every neighbour) does not leave the next one a cold cache.
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = {name: [] for name in cases}
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            if rewarm:
                if before is not None:
                    before()
                fn()
            if before is not None:
                before()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def decoder_objective(batch, units, device, pixels=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(units, pixels, generator=g) / units**0.5).to(device)
    x = (torch.rand(batch, pixels, generator=g) < 0.3).float().to(device)

    def neg_log_likelihood(b):  # (S, batch, units) -> (S, batch)
        return F.binary_cross_entropy_with_logits(b @ weight, x.expand(b.shape[0], -1, -1), reduction="none").sum(-1)

    return neg_log_likelihood


def grad_problem(args):
    """The ``grad`` section's objective, logits and generator, and its reference: the bare cost of
    drawing the uniforms, thresholding them and evaluating ``f`` once on the stacked samples."""
    f = decoder_objective(args.batch, 200, args.device)
    logits = torch.randn(args.batch, 200, device=args.device)
    gen = torch.Generator(args.device).manual_seed(0)

    def bare():
        with torch.no_grad():
            u = torch.rand((args.budget, *logits.shape), generator=gen, device=args.device)
            return f((u < torch.sigmoid(logits)).float())

    return f, logits, gen, bare


def bench_grad(args) -> dict:
    f, logits, gen, bare = grad_problem(args)
    cases, evaluations = {"bare (sample + f)": bare}, {"bare (sample + f)": args.budget}
    for name, spec in ESTIMATORS.items():
        if spec.evaluates_f_at == ENUMERATION:
            continue
        est = spec.create(num_units=200).to(args.device) if spec.learned else name
        budget = spec.valid_budget(args.budget)  # REBAR/RELAX: a multiple of 3
        evaluations[name] = budget
        cases[name] = lambda est=est, budget=budget: armgrad.grad(f, logits, est, budget, generator=gen)
    medians = interleaved(cases, args.repeats * 4, args.device, rewarm=True)
    bare_time = medians["bare (sample + f)"]
    rows = [
        {"case": name, "f_evaluations": evaluations[name], "median_ms": 1e3 * t, "ratio_to_bare": t / bare_time}
        for name, t in medians.items()
    ]
    return {
        "title": f"`armgrad.grad`, batch {args.batch} x 200 units, budget {args.budget}, against the bare "
        "f evaluations",
        "columns": ["case", "f_evaluations", "median_ms", "ratio_to_bare"],
        "rows": rows,
    }


def bench_multisample(args) -> dict:
    """``armgrad.multisample.estimate`` and its gradient w.r.t. the logits (estimator and pathwise parts),
    per estimator and K, against the bare cost of its evaluations of the log-weight (sample them,
    threshold, evaluate ``log p(x | b) - log q(b)`` once, no gradient)."""
    from armgrad import multisample

    f = decoder_objective(args.batch, 200, args.device)
    base = torch.randn(args.batch, 200, device=args.device)
    gen = torch.Generator(args.device).manual_seed(0)
    rows = []
    for k in (2, 5):
        logits = base.clone().requires_grad_(True)

        def log_weight(b, logits=logits):
            log_q = -F.binary_cross_entropy_with_logits(logits.expand_as(b), b, reduction="none").sum(-1)
            return -f(b) - log_q

        def bare(evaluations, logits=logits, log_weight=log_weight):
            with torch.no_grad():
                u = torch.rand((evaluations, *logits.shape), generator=gen, device=args.device)
                return log_weight((u < torch.sigmoid(logits)).float())

        cases, evaluations = {}, {}
        for name, est in multisample.ESTIMATORS.items():
            n = est.evaluations(k)
            cases[f"bare {n}"] = lambda n=n: bare(n)
            cases[name] = lambda name=name, k=k, logits=logits, log_weight=log_weight: torch.autograd.grad(
                multisample.estimate(log_weight, logits, name, k, generator=gen).sum(), logits
            )
            evaluations[name] = n
        medians = interleaved(cases, args.repeats * 2, args.device, rewarm=True)
        rows += [
            {
                "K": k,
                "estimator": name,
                "log_weight_evaluations": evaluations[name],
                "median_ms": 1e3 * medians[name],
                "ratio_to_bare": medians[name] / medians[f"bare {evaluations[name]}"],
            }
            for name in multisample.ESTIMATORS
        ]
    return {
        "title": f"`armgrad.multisample.estimate` and its gradient, batch {args.batch} x 200 units, against the bare "
        "evaluations of the log-weight",
        "columns": ["K", "estimator", "log_weight_evaluations", "median_ms", "ratio_to_bare"],
        "rows": rows,
    }


def bench_categorical(args) -> dict:
    from armgrad import categorical

    variables, categories = 20, 10
    f_flat = decoder_objective(args.batch, variables * categories, args.device)
    f = lambda z: f_flat(z.flatten(-2))  # noqa: E731
    logits = torch.randn(args.batch, variables, categories, device=args.device)
    gen = torch.Generator(args.device).manual_seed(0)

    def bare(evaluations, differentiate=False):
        """Draw, one-hot and evaluate ``f`` (and, for an estimator that needs it, ``df/dz`` at the samples)."""
        with torch.set_grad_enabled(differentiate):
            u = torch.rand((evaluations, *logits.shape), generator=gen, device=args.device)
            g = logits - torch.log(-torch.log(u))
            z = torch.zeros_like(g).scatter_(-1, g.argmax(-1, keepdim=True), 1.0).requires_grad_(differentiate)
            fz = f(z)
            return torch.autograd.grad(fz.sum(), z) if differentiate else fz

    cases, evaluations = {}, {}
    for name, spec in categorical.ESTIMATORS.items():
        if spec.evaluates_f_at == ENUMERATION:
            continue
        budget = spec.valid_budget(args.budget if spec.budget.group_of is None else 1, (variables, categories))
        evaluations[name] = budget
        key = f"bare {budget}" + (" + df/dz" if spec.needs_df_db else "")
        cases[key] = lambda n=budget, d=spec.needs_df_db: bare(n, d)
        cases[name] = lambda name=name, budget=budget: categorical.grad(f, logits, name, budget, generator=gen)
    rows = []
    medians = interleaved(cases, args.repeats, args.device, rewarm=True)
    for name, n in evaluations.items():
        key = f"bare {n}" + (" + df/dz" if categorical.ESTIMATORS[name].needs_df_db else "")
        rows.append(
            {
                "case": name,
                "f_evaluations": n,
                "median_ms": 1e3 * medians[name],
                "ratio_to_bare": medians[name] / medians[key],
            }
        )
    try:
        import reinmax
    except ImportError:
        reinmax = None
    if reinmax is not None:
        leaf = logits.clone().requires_grad_(True)

        def ours():
            leaf.grad = None
            categorical.estimate(f, leaf, "reinmax", 1, generator=gen, temperature=1.0).sum().backward()

        def package():
            leaf.grad = None
            sample, _ = reinmax.reinmax(leaf, 1.0)
            f(sample.unsqueeze(0)).sum().backward()

        times = interleaved({"ours": ours, "package": package}, args.repeats, args.device)
        rows.append(
            {
                "case": "reinmax forward + backward (package = 1)",
                "f_evaluations": 1,
                "median_ms": 1e3 * times["ours"],
                "ratio_to_bare": times["ours"] / times["package"],
            }
        )
    return {
        "title": f"`armgrad.categorical.grad`, batch {args.batch} x {variables} variables x {categories} "
        "categories, each estimator's smallest budget of at least "
        f"{args.budget}, against the bare f evaluations (the last row: against the `reinmax` package)",
        "columns": ["case", "f_evaluations", "median_ms", "ratio_to_bare"],
        "rows": rows,
    }


def floor_step(model, x, configurations, generator):
    """A plain forward and backward pass of the VAE on ``configurations`` ancestral samples per example."""
    samples, logits, h = [], [], None
    for t, layer in enumerate(model.encoder_layers()):
        phi = layer(x) if t == 0 else layer(h)
        shape = (configurations, *phi.shape) if t == 0 else phi.shape
        u = torch.rand(shape, generator=generator, device=phi.device)
        h = (u < torch.sigmoid(phi.detach())).float()
        samples.append(h)
        logits.append(phi if t else phi.expand(configurations, *phi.shape))
    f = model.negative_elbo(x, samples, [phi.detach() for phi in logits])
    loss = f.mean() + sum((phi * 1e-3).sum() for phi in logits)  # a backward pass through the encoder too
    loss.backward()


def _batch(args, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(args.batch, 784, generator=g) < 0.3).float().to(args.device)


def training_step(model, x, estimators, budget, generator) -> None:
    """The loss and backward pass of one step, and the learned controls' variance gradient (no optimiser)."""
    training_loss(model, x, generator, estimators=estimators, num_samples=budget).backward()
    for e in estimators:
        if isinstance(e, LearnedControlEstimator):
            e.backward_variance()


def bench_step(args) -> dict:
    x, gen = _batch(args), torch.Generator(args.device).manual_seed(0)
    rows = []
    for name in args.models:
        model = DiscreteVAE(name, x.mean(0).cpu()).to(args.device)
        cases = {"floor": lambda model=model: floor_step(model, x, model.num_layers * args.budget, gen)}
        for est in STEP_ESTIMATORS:
            budget = ESTIMATORS[est].valid_budget(args.budget)
            estimators = make_estimators(est, model.num_layers, 200, args.device)
            cases[est] = lambda estimators=estimators, budget=budget, model=model: training_step(
                model, x, estimators, budget, gen
            )
        medians = interleaved(
            cases, args.repeats, args.device, before=lambda model=model: model.zero_grad(set_to_none=True), rewarm=True
        )
        rows += [
            {"model": name, "case": case, "median_ms": 1e3 * t, "ratio_to_floor": t / medians["floor"]}
            for case, t in medians.items()
        ]
    return {
        "title": f"VAE training step (loss and backward), batch {args.batch}, {args.budget} f evaluations per "
        "layer, against the floor",
        "columns": ["model", "case", "median_ms", "ratio_to_floor"],
        "rows": rows,
    }


def bench_layers(args) -> dict:
    x, gen = _batch(args), torch.Generator(args.device).manual_seed(0)
    rows = []
    for layers in (1, 2, 3, 4):
        model = DiscreteVAE("linear" if layers == 1 else f"linear{layers}", x.mean(0).cpu()).to(args.device)
        cases = {
            "unit": lambda model=model: floor_step(model, x, 1, gen),
            "arm": lambda model=model, layers=layers: training_loss(
                model, x, gen, estimators=["arm"] * layers, num_samples=2
            ).backward(),
        }
        medians = interleaved(
            cases, args.repeats, args.device, before=lambda model=model: model.zero_grad(set_to_none=True)
        )
        units = medians["arm"] / medians["unit"]
        rows.append(
            {
                "layers": layers,
                "arm_ms": 1e3 * medians["arm"],
                "unit_ms": 1e3 * medians["unit"],
                "cost_in_units": units,
                "evaluations": 2 * layers,
                "paper_evaluations": 1 + 2 * layers,
                "ratio_to_evaluations": units / (2 * layers),
                "ratio_to_paper": units / (1 + 2 * layers),
            }
        )
    return {
        "title": "ARM on T stacked linear layers, in units of one forward and backward pass on a single "
        "configuration, against its 2T f evaluations (the paper's recipe: 1 + 2T)",
        "columns": [
            "layers",
            "arm_ms",
            "unit_ms",
            "cost_in_units",
            "evaluations",
            "paper_evaluations",
            "ratio_to_evaluations",
            "ratio_to_paper",
        ],
        "rows": rows,
    }


def matmul_floor(runs: int, batch: int, configurations: int, units: int = 200, pixels: int = 784, device="cpu"):
    """The four matrix products of a linear-VAE step for ``runs`` runs (batched products when runs > 1)."""
    g = torch.Generator(device).manual_seed(0)
    r = lambda *shape: torch.rand(runs, *shape, generator=g, device=device)  # noqa: E731
    x, we, b, wd = r(batch, pixels), r(units, pixels), r(configurations * batch, units), r(pixels, units)
    g_enc, g_dec = r(batch, units), r(configurations * batch, pixels)

    def products():
        torch.bmm(x, we.transpose(1, 2))  # encoder forward
        torch.bmm(g_enc.transpose(1, 2), x)  # encoder weight gradient
        torch.bmm(b, wd.transpose(1, 2))  # decoder forward, every configuration
        torch.bmm(g_dec.transpose(1, 2), b)  # decoder weight gradient

    return products


def _cli_runs(args, command: str, runs: int, out: Path, concurrent: int, extra=()) -> float:
    """Run-steps per second of ``concurrent`` processes at a time, each ``armgrad vae`` (runs = 1) or
    ``armgrad study`` with ``runs`` runs, timed by the loop itself (steps per second before the evaluation);
    ``extra``: more flags (the categorical runs' latents and estimator)."""
    import subprocess
    import sys

    procs, folders = [], []
    for p in range(concurrent):
        folder = out / f"{command}-{runs}-{p}-{len(extra)}-{'-'.join(extra[-1:])}"
        seeds = [str(p * runs + i) for i in range(runs)]
        flags = [
            "--dataset",
            args.dataset,
            "--steps",
            str(args.throughput_steps),
            "--eval-every",
            str(args.throughput_steps),
            "--test-samples",
            "2",
            "--grad-var-draws",
            "2",
            "--threads",
            "1",
            "--batch-size",
            str(args.batch),
            "--num-samples",
            str(args.budget),
            "--overwrite",
        ]
        flags += ["--data-dir", args.data_dir] if args.data_dir else []
        flags += ["--device", args.device, *extra]
        if command == "vae":
            flags += ["--seed", seeds[0], "--out", str(folder)]
        else:
            flags += ["--seed", *seeds, "--out", str(folder)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "armgrad", command, *flags],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        folders.append(folder)
    total = 0.0
    for proc, folder in zip(procs, folders):
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"armgrad {command} failed: {err[-2000:]}")
        metrics = [folder / "metrics.csv"] if command == "vae" else sorted(folder.glob("*/metrics.csv"))
        for path in metrics:  # one evaluation, at the end: its row's rate covers every step, evaluation left out
            with open(path) as f:
                total += float(list(csv.DictReader(f))[-1]["steps_per_second"])
    return total


def bench_throughput(args) -> dict:
    import tempfile

    cuda = args.device.startswith("cuda")
    concurrent = 1 if cuda else 2  # one GPU: one process at a time; two cores: two processes at a time
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        floor = matmul_floor(1, args.batch, args.budget, device=args.device)
        before = interleaved({"floor": floor}, args.repeats * 10, args.device)["floor"]
        alone = _cli_runs(args, "vae", 1, out, concurrent=1)
        after = interleaved({"floor": floor}, args.repeats * 10, args.device)["floor"]
        floor_ms = 1e3 * statistics.median([before, after])
        rows.append(
            {
                "case": "armgrad vae, one run alone",
                "runs_per_process": 1,
                "processes": 1,
                "run_steps_per_second": alone,
                "ms_per_run_step": 1e3 / alone,
                "floor_ms": floor_ms,
                "ratio": 1e3 / alone / floor_ms,
            }
        )
        for estimator in ("disarm", "reinforce_loo"):  # the categorical VAE's step: 20 x 10 logits, the same products
            latents = ("--categories", "10", "--latent-vars", "20", "--estimator", estimator)
            rate = _cli_runs(args, "vae", 1, out, concurrent=1, extra=latents)
            rows.append(
                {
                    "case": f"armgrad vae --categories 10 --latent-vars 20, {estimator}, one run alone",
                    "runs_per_process": 1,
                    "processes": 1,
                    "run_steps_per_second": rate,
                    "ms_per_run_step": 1e3 / rate,
                    "floor_ms": floor_ms,
                    "ratio": 1e3 / rate / floor_ms,
                }
            )
        separate = alone if cuda else _cli_runs(args, "vae", 1, out, concurrent=concurrent)
        if not cuda:
            rows.append(
                {
                    "case": "armgrad vae, separate processes",
                    "runs_per_process": 1,
                    "processes": 2,
                    "run_steps_per_second": separate,
                    "ms_per_run_step": 2e3 / separate,
                    "floor_ms": floor_ms,
                    "ratio": 1.0,
                }
            )
        for runs in args.throughput_runs:
            batched = _cli_runs(args, "study", runs, out, concurrent=concurrent)
            runs_floor = (
                1e3
                * interleaved(
                    {"floor": matmul_floor(runs, args.batch, args.budget, device=args.device)},
                    args.repeats,
                    args.device,
                )["floor"]
                / runs
            )
            rows.append(
                {
                    "case": f"armgrad study, {runs} runs per process",
                    "runs_per_process": runs,
                    "processes": concurrent,
                    "run_steps_per_second": batched,
                    "ms_per_run_step": 1e3 * concurrent / batched,
                    "floor_ms": runs_floor,
                    "ratio": batched / separate,
                }
            )
    where = "on the GPU, one process" if cuda else "1 thread per process, two processes at a time"
    return {
        "title": f"What the user runs (linear VAE, DisARM, batch {args.batch}, {args.budget} evaluations, "
        f"{args.throughput_steps} steps, {where}): run-steps per second; floor: the four matrix "
        "products of one run's step (20 x 10 categorical logits have the products of 200 binary units); ratio: "
        "the step over its floor (the rows of one run alone), else run-steps per second over separate "
        "processes' (over one run alone on a GPU)",
        "columns": [
            "case",
            "runs_per_process",
            "processes",
            "run_steps_per_second",
            "ms_per_run_step",
            "floor_ms",
            "ratio",
        ],
        "rows": rows,
    }


def cli_step(args, data, model_name="linear", estimator="disarm", categories=None, package=armgrad):
    """One training step as the loop of ``armgrad vae`` runs it: the batch (dynamic binarisation), the gradients
    zeroed, the loss and its backward pass, Adam (fused) on the network and SGD on the prior. ``package``: this
    tree's armgrad, or a revision's imported by ``benchmarks/ab.py``."""
    import importlib

    models = importlib.import_module(f"{package.__name__}.models.vae")
    vae = importlib.import_module(f"{package.__name__}.experiments.vae")
    training = importlib.import_module(f"{package.__name__}.experiments.training")
    torch.manual_seed(0)
    units = 200 if categories is None else 20
    model = models.DiscreteVAE(model_name, data.train_mean, units=units, categories=categories).to(args.device)
    optimizers = [
        training.adam(list(model.encoder.parameters()) + list(model.decoder.parameters()), 1e-4),
        torch.optim.SGD([model.prior_logits], lr=1e-2),
    ]
    zero_grads = getattr(training, "zero_grads", lambda opts: [o.zero_grad(set_to_none=True) for o in opts])
    data_gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator(args.device).manual_seed(1)
    estimators = [estimator] * model.num_layers

    def step():
        x = data.train_batch(torch.randint(data.train.shape[0], (args.batch,), generator=data_gen), data_gen)
        zero_grads(optimizers)
        vae.training_loss(
            model, x.to(args.device), noise_gen, estimators=estimators, num_samples=args.budget
        ).backward()
        for optimizer in optimizers:
            optimizer.step()

    return step


def disarm_step_by_hand(model, x, noise):
    """The linear VAE's DisARM loss (one antithetic pair) and its gradients written out, with no autograd:
    the least eager PyTorch can do for this step, to set against the library's (``benchmarks/suite.py --only
    parts``). ``noise``: the pair's uniforms ``(1, batch, 200)``. Returns the loss and the gradients of the
    encoder's weight and bias, the decoder's weight and bias and the prior's logits."""
    (encoder,), (decoder,) = model.encoder[0], model.decoder[0]
    n = x.shape[0]
    centred = x - model.train_mean
    phi = torch.addmm(encoder.bias, centred, encoder.weight.t())  # (n, D)
    u = noise[0]
    b = torch.stack((u > torch.sigmoid(-phi), u < torch.sigmoid(phi))).to(phi.dtype)  # (2, n, D)
    h = (2 * b - 1).view(2 * n, -1)
    logits = torch.addmm(decoder.bias, h, decoder.weight.t()).view(2, n, -1)  # (2, n, P)
    prior = model.prior_logits
    log_q = (b * phi).sub_(F.softplus(phi)).sum(-1)
    log_prior = (b * prior).sub_(F.softplus(prior)).sum(-1)
    log_lik = (x * logits).sub_(F.softplus(logits)).sum(-1)
    f = log_q - log_lik - log_prior  # (2, n)
    loss = f.mean()
    scale = 1 / (2 * n)  # d loss / d f for every sample and example
    dl = (torch.sigmoid(logits) - x).mul_(scale).view(2 * n, -1)  # -d log p(x | b) / dl, scaled
    g_phi = (f[0] - f[1]).unsqueeze(-1) * (b[0] - b[1]) * torch.sigmoid(phi.abs()) * (0.5 / n)
    grads = (
        g_phi.t().mm(centred),
        g_phi.sum(0),
        dl.t().mm(h),
        dl.sum(0),
        (torch.sigmoid(prior) - b).sum((0, 1)) * scale,
    )
    return loss, grads


def hand_step(args, data):
    """:func:`cli_step` (linear, DisARM) with :func:`disarm_step_by_hand` in place of the loss and its backward: the
    same batch, uniforms, fused Adam and SGD on the prior, the gradients assigned rather than accumulated."""
    from armgrad.experiments.training import adam

    torch.manual_seed(0)
    model = DiscreteVAE("linear", data.train_mean).to(args.device)
    params = [*model.encoder.parameters(), *model.decoder.parameters(), model.prior_logits]
    optimizers = [adam(params[:-1], 1e-4), torch.optim.SGD(params[-1:], lr=1e-2)]
    data_gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator(args.device).manual_seed(1)
    tiny = torch.finfo(torch.float32).tiny

    def step():
        x = data.train_batch(torch.randint(data.train.shape[0], (args.batch,), generator=data_gen), data_gen)
        noise = torch.rand((1, args.batch, 200), generator=noise_gen, device=args.device).clamp_(min=tiny)
        with torch.no_grad():
            _, grads = disarm_step_by_hand(model, x.to(args.device), noise)
        for p, g in zip(params, grads):
            p.grad = g
        for optimizer in optimizers:
            optimizer.step()

    return step


def count_operators(step, device: str, steps: int = 20) -> dict:
    """What ``step`` asks of the machine, per call, after a warm-up: operator calls (every event torch.profiler
    records, nested ones included), distinct operators (how many kinds), host reads (``.item()`` and the like,
    inside torch's own operators too) and, on a GPU, the device kernels launched."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    names = [e.name for e in prof.events()]
    counts = {
        "calls_per_step": len(names) / steps,
        "distinct_operators": len(set(names)),
        "host_reads_per_step": names.count("aten::_local_scalar_dense") / steps,
        "cuda_kernels_per_step": None,
    }
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        counts["cuda_kernels_per_step"] = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in prof.events())
    return counts


def load_average() -> str:
    """The one-minute load average (what else ran), or "unknown" where the system does not say."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def trivial_operator_us(repeats: int = 20) -> float:
    """The cost of one trivial operator on this machine: ``torch.add`` of two one-element CPU tensors (median of
    ``repeats`` blocks of 10,000 calls), in microseconds."""
    a, b = torch.ones(1), torch.ones(1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10_000):
            torch.add(a, b)
        times.append((time.perf_counter() - start) / 10_000)
    return 1e6 * statistics.median(times)


HAND_WRITTEN = "disarm, gradients by hand (no autograd)"
BY_HAND = "for comparison, not a part: the same step with its gradients written by hand (no autograd)"
OPERATOR_CASES = (  # (model, estimator, categories)
    ("linear", "disarm", None),
    ("linear", "arm", None),
    ("linear", "reinforce_loo", None),
    ("nonlinear", "disarm", None),
    ("linear2", "disarm", None),
    ("linear", "disarm", 10),
    ("linear", "reinforce_loo", 10),
)


def bench_operators(args) -> dict:
    from armgrad.data import load_dataset

    data = load_dataset(args.dataset, args.data_dir)
    trivial = trivial_operator_us()
    steps = {case: cli_step(args, data, *case) for case in OPERATOR_CASES}
    steps["linear", HAND_WRITTEN, None] = hand_step(args, data)  # what eager PyTorch needs at the least
    medians = interleaved({case: step for case, step in steps.items()}, args.repeats, args.device)
    rows = []
    for (model, estimator, categories), step in steps.items():
        latents = "200 binary" if categories is None else f"20x{categories} categorical"
        rows.append(
            {
                "model": model,
                "latents": latents,
                "estimator": estimator,
                **count_operators(step, args.device),
                "ms_per_step": 1e3 * medians[(model, estimator, categories)],
            }
        )
    return {
        "title": f"What one training step asks of the machine (batch {args.batch}, {args.budget} evaluations; the "
        f"step as the loop runs it): operator calls (torch.profiler's events, nested ones included), how many "
        f"distinct operators, host reads; one trivial operator (torch.add of two one-element tensors) costs "
        f"{trivial:.2f} us here",
        "columns": [
            "model",
            "latents",
            "estimator",
            "calls_per_step",
            "distinct_operators",
            "host_reads_per_step",
            "ms_per_step",
        ]
        + (["cuda_kernels_per_step"] if args.device.startswith("cuda") else []),
        "rows": rows,
        "trivial_operator_us": trivial,
    }


def bench_parts(args) -> dict:
    import torch.nn.functional as F

    from armgrad.data import load_dataset
    from armgrad.experiments.training import adam

    data = load_dataset(args.dataset, args.data_dir)
    step = cli_step(args, data)
    torch.manual_seed(0)
    model = DiscreteVAE("linear", data.train_mean).to(args.device)
    params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = adam(params, 1e-4)
    g, noise_g = torch.Generator().manual_seed(0), torch.Generator(args.device).manual_seed(0)
    logits = torch.randn(args.budget, args.batch, 784, device=args.device)
    x = (torch.rand(args.batch, 784) < 0.3).float().to(args.device)
    products = "the four matrix products"
    parts = {
        products: matmul_floor(1, args.batch, args.budget, device=args.device),
        "fused Adam's update (314,000 parameters)": optimizer.step,
        "the batch (gather, uniforms, threshold)": lambda: data.train_batch(
            torch.randint(data.train.shape[0], (args.batch,), generator=g), g
        ),
        "the likelihood's element-wise work (softplus, sigmoid)": lambda: (
            (x * logits).sub_(F.softplus(logits)).sum(-1),
            torch.sigmoid(logits).sub_(x),
        ),
        "the estimator's uniforms": lambda: torch.rand(
            (args.budget // 2, args.batch, 200), generator=noise_g, device=args.device
        ),
    }
    medians = interleaved({"the step": step, **parts, HAND_WRITTEN: hand_step(args, data)}, args.repeats, args.device)
    whole, by_hand = medians["the step"], medians.pop(HAND_WRITTEN)
    medians["the rest: operator calls, autograd, Python"] = whole - sum(medians[name] for name in parts)
    medians[BY_HAND] = by_hand
    rows = [
        {"part": name, "ms": 1e3 * t, "share_of_step": t / whole, "over_products": t / medians[products]}
        for name, t in medians.items()
    ]
    return {
        "title": f"The linear DisARM step (batch {args.batch}, {args.budget} evaluations, as the loop runs it) against "
        "its arithmetic, each part timed alone in the same interleaved rounds; last, the same step with every "
        "gradient written out by hand (benchmarks/suite.py disarm_step_by_hand, tested equal to the library's)",
        "columns": ["part", "ms", "share_of_step", "over_products"],
        "rows": rows,
    }


def bench_profile(args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from armgrad.data import load_dataset

    data = load_dataset(args.dataset, args.data_dir)
    step = cli_step(args, data)
    for _ in range(100):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "operator": e.key,
            "calls_per_step": e.count / args.profile_steps,
            "self_us_per_step": e.self_cpu_time_total / args.profile_steps,
            "share": e.self_cpu_time_total / total,
        }
        for e in events[:15]
    ]
    rows.append(
        {
            "operator": "(all)",
            "calls_per_step": sum(e.count for e in events) / args.profile_steps,
            "self_us_per_step": total / args.profile_steps,
            "share": 1.0,
        }
    )
    return {
        "title": f"Where a training step's time goes (linear VAE, DisARM, batch {args.batch}, "
        f"{args.profile_steps} steps profiled, self CPU time)",
        "columns": ["operator", "calls_per_step", "self_us_per_step", "share"],
        "rows": rows,
    }


def find_checkpoint(path: str | None) -> str | None:
    if path:
        return path
    return next((c for c in CHECKPOINTS if Path(c).exists()), None)


def bench_variance(args) -> dict:
    path = find_checkpoint(args.checkpoint)
    if path is None:
        return {
            "title": "variance x cost at a trained checkpoint: skipped (no checkpoint: pass --checkpoint, "
            "or run `bash scripts/main.sh` first)",
            "columns": [],
            "rows": [],
        }
    from armgrad.data import load_dataset

    state = torch.load(path, map_location="cpu", weights_only=False)
    config = state["config"]
    data = load_dataset(config["dataset"], config.get("data_dir"))
    model = DiscreteVAE(config["model"], data.train_mean, slope=config["slope"])
    model.load_state_dict(state["model"])
    model.to(args.device)
    x = data.split("test")[: args.batch].to(args.device)
    gen = torch.Generator(args.device).manual_seed(0)
    cases, variances = {}, {}
    for est in VARIANCE_ESTIMATORS:
        estimators = make_estimators(est, model.num_layers, 200, args.device)
        budget = ESTIMATORS[est].valid_budget(args.budget)
        variances[est] = encoder_gradient_variance(model, x, estimators, budget, args.variance_draws, gen)
        cases[est] = lambda estimators=estimators, budget=budget: training_loss(
            model, x, gen, estimators=estimators, num_samples=budget
        ).backward()
    medians = interleaved(cases, args.repeats, args.device, before=lambda: model.zero_grad(set_to_none=True))
    rows = []
    for est, t in medians.items():
        evals = ESTIMATORS[est].valid_budget(args.budget) * model.num_layers
        rows.append(
            {
                "estimator": est,
                "unbiased": ESTIMATORS[est].unbiased,
                "grad_var": variances[est],
                "f_evaluations": evals,
                "step_ms": 1e3 * t,
                "var_x_evaluations": variances[est] * evals,
                "var_x_ms": variances[est] * 1e3 * t,
            }
        )
    steps = state["step"]
    return {
        "title": f"encoder-gradient variance at a trained checkpoint ({config['model']} {config['estimator']}, "
        f"{steps} steps, `{path}`), {args.variance_draws} draws on {args.batch} test images",
        "columns": ["estimator", "unbiased", "grad_var", "f_evaluations", "step_ms", "var_x_evaluations", "var_x_ms"],
        "rows": rows,
    }


def _cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, float):
        return str(v)
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def markdown(section: dict) -> str:
    lines = [f"### {section['title']}", ""]
    if section["rows"]:
        cols = section["columns"]
        lines += ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(row[c]) for c in cols) + " |" for row in section["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--budget", type=int, default=2, help="f evaluations per layer and example")
    parser.add_argument("--models", nargs="+", default=["linear", "nonlinear", "linear2"])
    parser.add_argument("--repeats", type=int, default=100, help="timed rounds per case (grad: 4x)")
    parser.add_argument("--variance-draws", type=int, default=200)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help=f"a VAE run's checkpoint.pt (default: the first found of {', '.join(CHECKPOINTS)})",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--dataset", default="fashion-mnist", help="throughput: the data of the runs")
    parser.add_argument("--data-dir", default=None, help="throughput: the dataset's folder")
    parser.add_argument("--throughput-steps", type=int, default=2000, help="throughput: steps per run")
    parser.add_argument("--profile-steps", type=int, default=1000, help="profile: steps profiled")
    parser.add_argument(
        "--throughput-runs",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        help="throughput: runs per process of armgrad study",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    setup = (
        f"{device_name}, torch {torch.__version__}, medians of {args.repeats} interleaved rounds; one trivial "
        f"operator (torch.add of two one-element tensors) costs {trivial_operator_us():.2f} us on this machine, "
        f"load average {load_average()} at the start"
    )
    started = time.perf_counter()
    sections = {}
    for name in args.only:
        print(f"[suite] {name} ...", flush=True)
        sections[name] = globals()[f"bench_{name}"](args)
        print(markdown(sections[name]), flush=True)
    result = {"setup": setup, "seconds": time.perf_counter() - started, "sections": sections}
    args.out.mkdir(parents=True, exist_ok=True)
    # the whole suite writes suite.*; some sections write files named after them (throughput.md, ...),
    # so that rerunning one section never overwrites the results of the others
    stem = "suite" if list(args.only) == list(SECTIONS) else "_".join(args.only)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = f"## armgrad benchmark suite\n\n{setup}; {result['seconds']:.0f} s in all\n\n"
    text += "\n".join(markdown(s) for s in sections.values())
    (args.out / f"{stem}.md").write_text(text)
    print(f"wrote {args.out / f'{stem}.json'} and {args.out / f'{stem}.md'}")
    return result


if __name__ == "__main__":
    main()
