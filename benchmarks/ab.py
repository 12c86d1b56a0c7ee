"""Before and after, side by side in one run: the suite's cost ratios for this tree and a git revision.

    python benchmarks/ab.py --baseline main~1          # or any revision, e.g. a tag
    python benchmarks/ab.py --baseline HEAD~3 --repeats 200

The baseline's ``src/armgrad`` is extracted with ``git archive`` and imported as ``armgrad_base``
(the package imports itself only relatively), so both versions run in one process and every timing
is interleaved round-robin with the other version's and with the references (medians):

- ``grad``: one ``armgrad.grad`` call per estimator (present in both versions), batch 50 x 200
  units, budget 2 (3 for REBAR and RELAX), against the bare cost of its f evaluations;
- ``step``: one linear-VAE training step (loss and backward) per estimator against the floor (a
  plain forward and backward pass of the same network on the same stacked batch);
- ``operators``: operator calls per training step as the loop runs it, and how many distinct operators (the suite's
  ``operators`` cases, each version with its own data loader, model and loss; counts, not timings).

Prints a table of the ratios of both versions and their difference; writes ``OUT/ab.json``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from armgrad.estimators import ENUMERATION, select  # noqa: E402

import suite  # noqa: E402  the suite's timing and reference cases

ROOT = Path(__file__).resolve().parents[1]


def import_revision(revision: str, name: str = "armgrad_base"):
    """``src/armgrad`` at ``revision``, imported as the package ``name``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src/armgrad"], check=True, capture_output=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="armgrad-ab-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "src" / "armgrad").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def versions(baseline: str) -> dict:
    import armgrad

    return {"this tree": armgrad, baseline: import_revision(baseline)}


def grad_cases(mods: dict, args) -> tuple[dict, dict]:
    f, logits, gen, bare = suite.grad_problem(args)
    cases, keys = {"bare": bare}, {}
    for version, mod in mods.items():
        for name, spec in mod.ESTIMATORS.items():
            if name not in args.estimators:
                continue
            budget = spec.valid_budget(args.budget)
            est = spec.create(num_units=200) if getattr(spec, "learned", False) else name  # learned controls: objects
            cases[f"{version}: {name}"] = lambda mod=mod, est=est, budget=budget: mod.grad(
                f, logits, est, budget, generator=gen
            )
            keys[(version, name)] = f"{version}: {name}"
    return cases, keys


def _step_loss(training_loss):
    """``training_loss`` as ``(model, x, estimators, num_samples, generator)``, whichever signature the revision
    has: ``(model, x, generator, *, estimators, num_samples)`` now, all positional in older revisions."""
    if list(inspect.signature(training_loss).parameters)[2] == "generator":
        return lambda model, x, estimators, budget, gen: training_loss(
            model, x, gen, estimators=estimators, num_samples=budget
        )
    return training_loss


def step_cases(mods: dict, args):
    """The step of each version on its own model (its own classes: a family object belongs to one version), the
    models equal (one seed)."""
    x, gen = suite._batch(args), torch.Generator(args.device).manual_seed(0)
    models = {}
    for version, mod in mods.items():
        torch.manual_seed(0)
        models[version] = importlib.import_module(f"{mod.__name__}.models.vae").DiscreteVAE("linear", x.mean(0).cpu())
        models[version].to(args.device)
    model = next(iter(models.values()))
    cases, keys = {"floor": lambda: suite.floor_step(model, x, model.num_layers * args.budget, gen)}, {}
    for version, mod in mods.items():
        loss = _step_loss(importlib.import_module(f"{mod.__name__}.experiments.vae").training_loss)
        model = models[version]
        for name in args.step_estimators:
            budget = mod.ESTIMATORS[name].valid_budget(args.budget)
            cases[f"{version}: {name}"] = lambda loss=loss, name=name, budget=budget, model=model: loss(
                model, x, [name], budget, gen
            ).backward()
            keys[(version, name)] = f"{version}: {name}"
    return cases, keys, list(models.values())


def operator_rows(mods: dict, args) -> list:
    """Operator calls per step and distinct operators of each version (``suite.count_operators``), per case."""
    counts = {}
    for version, mod in mods.items():
        data = importlib.import_module(f"{mod.__name__}.data").load_dataset(args.dataset, args.data_dir)
        for case in suite.OPERATOR_CASES:
            counts[version, case] = suite.count_operators(suite.cli_step(args, data, *case, package=mod), args.device)
    rows = []
    for model, estimator, categories in suite.OPERATOR_CASES:
        case = (model, estimator, categories)
        label = f"{model} {estimator}" + ("" if categories is None else f" (20x{categories} categorical)")
        for what in ("calls_per_step", "distinct_operators"):
            rows.append(
                {
                    "section": what.replace("_", " "),
                    "estimator": label,
                    **{v: counts[v, case][what] for v in mods},
                }
            )
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a git revision to compare with (e.g. main~1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100, help="timed rounds per case (grad: 4x)")
    parser.add_argument(
        "--estimators", nargs="+", default=None, help="default: every Monte Carlo estimator that both versions have"
    )
    parser.add_argument(
        "--step-estimators",
        nargs="+",
        default=None,
        help="default: the suite's step estimators that both versions have",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--dataset", default="fashion-mnist", help="operators: the data of the steps")
    parser.add_argument("--data-dir", default=None, help="operators: the dataset's folder")
    args = parser.parse_args(argv)
    print(f"[ab] load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    torch.set_num_threads(args.threads)
    mods = versions(args.baseline)
    base = list(mods.values())[1].ESTIMATORS
    if args.estimators is None:
        args.estimators = [n for n in select(evaluates_f_at=lambda where: where != ENUMERATION) if n in base]
    if args.step_estimators is None:
        # by name: the learned-control estimators must be created with their controls, which the loss by name
        # refuses (Double CV, RODEO); the suite's step section times them
        args.step_estimators = [n for n in suite.STEP_ESTIMATORS if n in base and not base[n].learned]
    rows = []
    cases, keys = grad_cases(mods, args)
    medians = suite.interleaved(cases, args.repeats * 4, args.device)
    for name in args.estimators:
        ratio = {v: medians[keys[(v, name)]] / medians["bare"] for v in mods if (v, name) in keys}
        rows.append({"section": "grad / bare", "estimator": name, **ratio})
    cases, keys, models = step_cases(mods, args)
    medians = suite.interleaved(
        cases, args.repeats, args.device, before=lambda: [m.zero_grad(set_to_none=True) for m in models]
    )
    for name in args.step_estimators:
        ratio = {v: medians[keys[(v, name)]] / medians["floor"] for v in mods}
        rows.append({"section": "linear VAE step / floor", "estimator": name, **ratio})
    rows += operator_rows(mods, args)
    names = list(mods)
    print(f"| section | estimator | {names[0]} | {names[1]} | difference |\n|---|---|---|---|---|")
    for row in rows:
        a, b = row.get(names[0], float("nan")), row.get(names[1], float("nan"))
        print(f"| {row['section']} | {row['estimator']} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
    result = {
        "baseline": args.baseline,
        "setup": f"CPU, {args.threads} thread(s), torch {torch.__version__}, "
        f"medians of {args.repeats} interleaved rounds",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ab.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"## This tree against {args.baseline}\n",
        f"{result['setup']}\n",
        f"| section | estimator | {names[0]} | {names[1]} | difference |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['section']} | {r['estimator']} | {r.get(names[0], float('nan')):.3f} | "
        f"{r.get(names[1], float('nan')):.3f} | {r.get(names[0], float('nan')) - r.get(names[1], float('nan')):+.3f} |"
        for r in rows
    ]
    (args.out / "ab.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
