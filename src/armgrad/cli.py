"""The ``armgrad`` command.

armgrad estimators                 the registry as a table
armgrad demo [--out DIR]           compare every estimator on a problem with a known gradient
armgrad toy [--quick] [--out DIR]  the toy problem of the ARM paper (Fig. 1), all estimators
armgrad vae --dataset ... --model ... --estimator ... --steps N --out DIR [--resume]
armgrad sbn --dataset ... --model ... --estimator ... --steps N --out DIR [--resume]
armgrad report DIR... [--out DIR] [--reference arm]
                                   a table (mean and standard error over seeds), paired
                                   differences from the reference estimator, and figures
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import itertools
import json
import logging
import os
import signal
import sys
from pathlib import Path

import torch

from . import ESTIMATORS, __version__, categorical, diagnostics, multisample
from .estimators import ENUMERATION, get_estimator, select
from .experiments import locks, parallel
from .experiments.reporting import StorageFullError, json_safe
from .experiments.training import ConfigurationError

log = logging.getLogger("armgrad")


def estimators_table() -> str:
    """The registries as Markdown tables: name, unbiased, cost in f evaluations, what it is, reference."""
    from . import multisample

    lines = ["| estimator | unbiased | f evaluations for budget S | what it is | reference |", "|---|---|---|---|---|"]
    for e in ESTIMATORS.values():
        cost = "2^D" if e.evaluates_f_at == ENUMERATION else e.budget.describe()
        lines.append(f"| `{e.name}` | {'yes' if e.unbiased else 'no'} | {cost} | {e.summary} | {e.reference} |")
    lines += [
        "",
        "Multi-sample objectives (`armgrad.multisample`), the K-sample bound `L_K`:",
        "",
        "| estimator | unbiased | log-weight evaluations for K | what it is | reference |",
        "|---|---|---|---|---|",
    ]
    for e in multisample.ESTIMATORS.values():
        cost = ("K" if e.evaluations(1) == 1 else f"{e.evaluations(1)}K") + f" (K >= {e.budget.minimum})"
        lines.append(f"| `{e.name}` | {'yes' if e.unbiased else 'no'} | {cost} | {e.summary} | {e.reference} |")
    lines += [
        "",
        "Categorical variables (`armgrad.categorical`), logits `(*batch, D, C)`:",
        "",
        "| estimator | unbiased | f evaluations for budget S | what it is | reference |",
        "|---|---|---|---|---|",
    ]
    for e in categorical.ESTIMATORS.values():
        cost = "C^D" if e.evaluates_f_at == ENUMERATION else e.budget.describe()
        if e.budget.minimum > 1 and not e.budget.rule and e.budget.group == 1:
            cost += f", S >= {e.budget.minimum}"
        lines.append(f"| `{e.name}` | {'yes' if e.unbiased else 'no'} | {cost} | {e.summary} | {e.reference} |")
    return "\n".join(lines) + "\n"


def demo_problem(units: int = 10, seed: int = 0, device="cpu"):
    """``f(b) = sum_d w_d (b_d - t_d)^2 + b^T C b / D`` for 3 rows of logits: moderate, mixed, extreme."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(3, units, generator=g, dtype=torch.float64)
    weight = 1 + torch.rand(3, units, generator=g, dtype=torch.float64)
    coupling = torch.randn(units, units, generator=g, dtype=torch.float64) / units
    logits = torch.stack(
        [
            torch.randn(units, generator=g, dtype=torch.float64),
            3 * torch.randn(units, generator=g, dtype=torch.float64),
            torch.linspace(-8, 8, units, dtype=torch.float64),
        ]
    )
    target, weight, coupling, logits = (t.to(device) for t in (target, weight, coupling, logits))

    def f(b):
        return (weight * (b - target) ** 2).sum(-1) + ((b @ coupling) * b).sum(-1)

    return f, logits


def categorical_demo_problem(seed: int = 0, device="cpu"):
    """D = 3 variables of C = 4 categories, 3 rows of logits (moderate, wide, extreme), an ``f`` that is
    nonlinear in each one-hot vector and couples the variables."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.stack(
        [
            torch.randn(3, 4, generator=g, dtype=torch.float64),
            3 * torch.randn(3, 4, generator=g, dtype=torch.float64),
            torch.linspace(-6, 6, 12, dtype=torch.float64).view(3, 4),
        ]
    )
    coupling = torch.randn(12, 12, generator=g, dtype=torch.float64) / 4
    target = torch.rand(3, 12, generator=g, dtype=torch.float64)
    scale = torch.arange(4, dtype=torch.float64) / 4
    logits, coupling, target, scale = (t.to(device) for t in (logits, coupling, target, scale))

    def f(z):
        x = z.flatten(-2)
        return ((x @ coupling) * x).sum(-1) + ((x - target) ** 2).sum(-1) * (1 + x[..., :4] @ scale)

    return f, logits


def categorical_demo(args) -> str:
    """The categorical estimators against enumeration, at each estimator's smallest budget of at least 2."""
    f, logits = categorical_demo_problem(args.seed, args.device)
    names = select(categorical.ESTIMATORS, evaluates_f_at=lambda where: where != ENUMERATION)
    gen = torch.Generator(args.device).manual_seed(args.seed)
    log.info("categorical: drawing %d estimates from each of %d estimators", args.draws, len(names))
    report = diagnostics.compare(f, logits, names, 2, args.draws, generator=gen, family="categorical")
    return (
        f"## categorical variables: D = 3 variables of C = 4 categories, 3 rows of logits; each estimator at "
        f"its smallest budget of at least 2 f evaluations (the f evals column)\n\n{report.table()}"
    )


def run_demo(args) -> int:
    f, logits = demo_problem(args.units, args.seed, args.device)
    names = [
        ESTIMATORS[n].create(num_units=args.units).double().to(args.device) if ESTIMATORS[n].learned else n
        for n in select(evaluates_f_at=lambda where: where != ENUMERATION)
    ]
    gen = torch.Generator(args.device).manual_seed(args.seed)
    out = {"units": args.units, "rows": logits.shape[0], "num_draws": args.draws, "budgets": {}}
    text = [
        f"# armgrad demo: {args.draws} draws per estimator, D = {args.units} units, 3 rows of logits "
        "(moderate, wide, -8..8); exact gradient by enumeration of 2^D states\n"
    ]
    for budget in args.budgets:
        log.info("budget %d: drawing %d estimates from each of %d estimators", budget, args.draws, len(names))
        report = diagnostics.compare(f, logits, names, budget, args.draws, generator=gen)
        out["budgets"][budget] = report.to_dict()
        text.append(f"## budget {budget} f evaluations per estimate\n\n{report.table()}")
    text.append(
        "max abs bias z: the largest |mean - exact| / standard error over all coordinates (an unbiased "
        "estimator gives values a normal sample would, below about 4); chi2 p: the p-value of the "
        "sum of squared z-scores; untested: coordinates left out of the z-test because fewer than 100 "
        "draws are expected to show their unit's rarer value (at |phi| = 8 that value has probability "
        "3e-4). Variance x cost is the mean per-coordinate variance times the f "
        "evaluations spent, so lower is better at equal compute.\n"
    )
    text.append(categorical_demo(args))
    report_md = "\n".join(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(out, indent=1))
        (args.out / "report.md").write_text(report_md)
        log.info("wrote %s and %s", args.out / "results.json", args.out / "report.md")
    print(report_md)
    return 0


def run_toy(args) -> int:
    from .experiments.toy import ToyConfig, run_study

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "seeds": args.seeds,
            "lr": args.lr,
            "budget": args.budget,
            "steps_high_dim": args.steps // 2 if args.steps else None,
            "estimators": tuple(args.estimators) if args.estimators else None,
        }.items()
        if v is not None
    }
    overrides.update(minimize=args.minimize, natural_budget=args.natural_budget, out=str(args.out), device=args.device)
    config = ToyConfig.quick(**overrides) if args.quick else ToyConfig(**overrides)
    study = run_study(config)
    print(study["report"])
    log.info("wrote %s/report.md, results.json, csv/ and the figures", args.out)
    return 0


def _train_from_args(args, config_class, train, kind: str, defaults=None) -> int:
    """Build the experiment's config from the parsed flags, check it, train, print the results;
    ``defaults(config, given)`` fills what the flags leave unsaid."""
    from .experiments.training import describe, prepare_out

    fields = config_class.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "protocol" in fields:  # a protocol sets what the flags leave unsaid
        from .experiments.vae import protocol_values

        given = {**protocol_values(given.get("protocol", "disarm"), given.get("dataset", "fashion-mnist")), **given}
    config = config_class(**given)
    if defaults is not None:
        config = defaults(config, set(given))
    if args.threads:
        torch.set_num_threads(args.threads)
    parallel.init(config.device)  # joins the process group under torchrun; nothing alone
    if not parallel.is_main():
        log.setLevel(logging.WARNING)
    finished = False
    try:
        # before loading any data: the shards a launcher implies, and the run folder, held by the main process
        config = dataclasses.replace(config, shards=parallel.check_shards(config.shards, config.batch_size))
        with locks.hold([config.out]) if parallel.is_main() else contextlib.nullcontext():
            if parallel.is_main():
                prepare_out(config, resume=args.resume, overwrite=args.overwrite)
            log.info("%s", describe(config, kind))
            results = train(config, resume=args.resume)
        finished = True
    finally:
        parallel.close(finished)
    if parallel.rank_at_launch() == 0:
        print(json.dumps(json_safe({k: v for k, v in results.items() if k != "config"}), indent=1, allow_nan=False))
    return 0


def run_vae(args) -> int:
    from .experiments.vae import VAEConfig, train, with_defaults

    return _train_from_args(args, VAEConfig, train, "VAE", with_defaults)


def run_study(args) -> int:
    from .experiments.study import run_study, study_configs
    from .experiments.vae import VAEConfig, protocol_values, with_latent_default

    fields = VAEConfig.__dataclass_fields__
    given = {
        k: v
        for k, v in vars(args).items()
        if k in fields and v is not None and k not in ("model", "estimator", "seed", "out")
    }
    given = {**protocol_values(given.get("protocol", "disarm"), given.get("dataset", "fashion-mnist")), **given}
    base = with_latent_default(VAEConfig(**given), set(given))  # each estimator's budget: study_configs
    configs = study_configs(base, args.model, args.estimator, args.seed, args.out, num_samples=args.num_samples)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_study(
        configs,
        resume=args.resume,
        overwrite=args.overwrite,
        runs_per_process=args.runs_per_process,
        launcher=args.launcher,
        cluster=args.cluster,
        threads=args.threads,
        slurm_partition=args.slurm_partition,
        timeout_min=args.timeout_min,
    )
    from .experiments.report import default_reference, summary, write_report

    reference = args.reference or default_reference([args.out], args.estimator[0])
    write_report([args.out], args.out, reference=reference)
    print(f"trained {len(results)} run(s) into {args.out}")
    print(summary([args.out], reference, args.out))
    return 0


def run_sbn(args) -> int:
    from .experiments.sbn import SBNConfig, train

    return _train_from_args(args, SBNConfig, train, "stochastic binary network")


def run_report(args) -> int:
    from .experiments.report import load_runs, summary, write_report

    text = write_report(args.runs, args.out, reference=args.reference)
    print(text if args.markdown else summary(args.runs, args.reference, args.out))
    skipped = load_runs(args.runs).skipped
    if skipped:  # the report of the others is printed; the exit status says it is not all of them
        print(
            f"armgrad report: error: {len(skipped)} run(s) skipped: " + "; ".join(why for _, why in skipped),
            file=sys.stderr,
        )
        return 1
    return 0


def _number(kind, minimum, inclusive: bool, what: str):
    """An argparse type: a number of ``kind`` at or above (or strictly above) ``minimum``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (value == minimum and not inclusive) or value != value:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, True, "a positive integer")
count = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a number > 0")
nonnegative_float = _number(float, 0.0, True, "a number >= 0")
at_least_two = _number(int, 2, True, "an integer >= 2")


def folder(text: str) -> str:
    """An argparse type: a folder to write into, not empty (``""`` would be the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path (it would mean the current directory)")
    return text


def out_path(text: str) -> Path:
    return Path(folder(text))


def existing_folder(text: str) -> str:
    """An argparse type: a folder that exists (a data folder the user names is never silently replaced)."""
    if not Path(folder(text)).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return text


def estimator_name(text: str) -> str:
    """An argparse type: a registered estimator (single- or multi-sample), with a suggestion for a typo."""
    known = list(dict.fromkeys([*ESTIMATORS, *categorical.ESTIMATORS, *multisample.ESTIMATORS]))
    if text in known:
        return text
    close = difflib.get_close_matches(text, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"unknown estimator {text!r}.{hint} Known: {', '.join(known)}")


FLAG_TYPES = {
    "steps": positive_int,
    "batch_size": positive_int,
    "shards": positive_int,
    "eval_every": positive_int,
    "checkpoint_every": positive_int,
    "num_samples": positive_int,
    "test_samples": positive_int,
    "eval_samples": positive_int,
    "grad_var_draws": at_least_two,
    "categories": at_least_two,
    "latent_vars": positive_int,
    "seed": count,
    "lr": positive_float,
    "prior_lr": nonnegative_float,
    "control_lr": positive_float,
    "slope": nonnegative_float,
    "estimator": estimator_name,
    "out": folder,
    "data_dir": existing_folder,
}

FLAG_HELP = {
    "dataset": "the data set",
    "data_dir": "folder with the dataset's files (else the cache and system folders)",
    "model": "the model",
    "estimator": f"one of {', '.join(ESTIMATORS)}; with --categories: {', '.join(categorical.ESTIMATORS)}; with "
    f"--objective iwae: {', '.join(multisample.ESTIMATORS)}",
    "objective": "elbo (one sample per evaluation) or iwae (the num_samples-sample importance-weighted bound)",
    "protocol": "disarm: batch 50, Adam 1e-4, learned prior (SGD 1e-2); rodeo: batch 100, Adam 1e-3 (3e-4 on "
    "Fashion-MNIST), fixed prior. --batch-size, --lr and --prior-lr override it",
    "steps": "training steps",
    "batch_size": "examples per step",
    "seed": "initial weights, batches, binarisation and noise",
    "eval_every": "steps between evaluations (a row of metrics.csv)",
    "checkpoint_every": "steps between checkpoints (an interrupted run loses at most these)",
    "out": "the run folder",
    "num_samples": "f evaluations per layer and example",
    "categories": "C: categorical latent variables of C categories (None: binary units)",
    "latent_vars": "D per stochastic layer: binary units, or categorical variables with --categories",
    "lr": "Adam learning rate of the model",
    "prior_lr": "SGD learning rate of the prior logits",
    "control_lr": "Adam learning rate of REBAR/RELAX control parameters",
    "slope": "LeakyReLU slope of the nonlinear model",
    "test_samples": "K (VAE) or M (SBN) of the final test bound",
    "eval_samples": "M of the periodic validation bound, which selects the reported checkpoint",
    "grad_var_draws": "encoder-gradient estimates drawn for its variance at each evaluation",
    "shards": "noise streams the batch is split into, one per process under torchrun; alone, the "
    "shards run one after another and reproduce a multi-process run exactly",
    "device": "cpu, cuda or cuda:N (under torchrun each process takes the GPU of its local rank)",
}


def add_config_flags(
    parser: argparse.ArgumentParser, config_class, choices: dict, several=(), skip=(), defaults=None
) -> None:
    """One flag per field of an experiment's config dataclass (the single source of its defaults),
    each validated as it is parsed, plus --threads, --resume and --overwrite. Fields in ``several``
    take one or more values; those in ``skip`` get no flag; ``defaults`` overrides the dataclass's."""
    fields = config_class.__dataclass_fields__
    for name, spec in fields.items():
        if name in skip:
            continue
        kind = FLAG_TYPES.get(name, type(spec.default) if spec.default is not None else str)
        default = (defaults or {}).get(name, spec.default)
        help_text = FLAG_HELP.get(name, "")
        if "protocol" in fields and name in ("batch_size", "lr", "prior_lr"):
            default, help_text = None, help_text + " (None: the --protocol's)"  # the protocol decides
        if name == "num_samples" and default is None:
            help_text += " (None: the estimator's smallest budget of at least 2)"
        if name == "latent_vars" and default is None:
            help_text += " (None: 200 binary units, or 20 categorical variables)"
        if name in several:
            parser.add_argument(
                "--" + name.replace("_", "-"),
                type=kind,
                nargs="+",
                default=[default],
                choices=choices.get(name),
                help=help_text + " (one or more)",
            )
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, choices=choices.get(name), help=help_text
        )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (None: torch's choice)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint")
    group.add_argument("--overwrite", action="store_true", help="delete the run in OUT and start again")


def check_before_data(parser: argparse.ArgumentParser, args) -> None:
    """What can be refused before any data is loaded: the budget the estimator cannot spend, an
    estimator without a form for these latents, or one that cannot train these models (enumeration)."""
    if hasattr(args, "categories"):  # the VAE commands
        from .experiments.vae import VAEConfig, check_config, with_defaults

        given = {k for k in ("latent_vars", "num_samples") if getattr(args, k) is not None}
        fields = {k: getattr(args, k) for k in ("model", "estimator", "objective", "categories") if k in vars(args)}
        config = VAEConfig(**fields, **{k: getattr(args, k) for k in given})
        try:
            check_config(with_defaults(config, given))  # with_defaults looks the estimator up: in the try
        except ConfigurationError as error:
            parser.error(str(error))
        return
    spec = get_estimator(args.estimator)
    if spec.evaluates_f_at == ENUMERATION:
        parser.error(
            f"--estimator {spec.name} enumerates 2^D states, and these models have 200 units per "
            "layer: choose a Monte Carlo estimator"
        )
    try:
        spec.check_budget(args.num_samples)
    except ValueError as error:
        parser.error(f"--num-samples {args.num_samples}: {error}")


# None: decided by the latents and the estimator (experiments.vae.with_defaults), as the help says
LATENT_DEFAULTS = {"num_samples": None, "latent_vars": None}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default."""


COMMAND_PARSERS: dict[str, argparse.ArgumentParser] = {}  # the subcommands' parsers, by name (build_parser fills it)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error (also ARMGRAD_DEBUG=1)"
    )
    parser = argparse.ArgumentParser(
        prog="armgrad",
        description="Gradient estimators for binary and categorical stochastic units.",
        formatter_class=_Formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"armgrad {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, **kwargs):
        return sub.add_parser(name, formatter_class=_Formatter, parents=[common], **kwargs)

    add("estimators", help="list the estimators")
    demo = add("demo", help="compare all estimators against exact enumeration")
    demo.add_argument(
        "--units",
        type=_number(int, 1, True, "an integer from 1 to 20"),
        default=10,
        help="D, enumerated exactly (at most 20)",
    )
    demo.add_argument("--draws", type=at_least_two, default=5000, help="estimates drawn per estimator")
    demo.add_argument("--budgets", type=positive_int, nargs="+", default=[2, 8], help="f evaluations per estimate")
    demo.add_argument("--seed", type=count, default=0, help="the problem and the draws")
    demo.add_argument("--out", type=out_path, default=None, help="folder for results.json and report.md")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    toy = add("toy", help="the toy problem E[(b - p0)^2] of the ARM and RELAX papers")
    toy.add_argument("--quick", action="store_true", help="a smaller study, under a minute")
    toy.add_argument("--minimize", action="store_true", help="minimise as in RELAX (default: maximise as in ARM)")
    toy.add_argument(
        "--natural-budget",
        action="store_true",
        help="each estimator at its smallest budget (1, 2 or 3 f evaluations) instead of an equal one",
    )
    toy.add_argument(
        "--budget", type=positive_int, default=None, help="f evaluations per step for every estimator (None: 6)"
    )
    toy.add_argument("--steps", type=positive_int, default=None, help="Adam steps (None: 2000; --quick 300)")
    toy.add_argument(
        "--seeds", type=positive_int, default=None, help="seeds per estimator and target (None: 5; --quick 2)"
    )
    toy.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (None: 0.01)")
    toy.add_argument(
        "--estimators",
        nargs="+",
        type=estimator_name,
        default=None,
        help="estimators to run (None: every unbiased one)",
    )
    toy.add_argument("--out", type=out_path, default=Path("runs/toy"), help="the study's folder")
    toy.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")

    from .data import DATASETS
    from .experiments.sbn import SBNConfig
    from .experiments.vae import VAEConfig
    from .models.sbn import SBN_MODELS
    from .models.vae import MODELS

    vae = add("vae", help="train a discrete VAE with any estimator (DisARM protocol defaults)")
    add_config_flags(
        vae,
        VAEConfig,
        defaults=LATENT_DEFAULTS,
        choices={
            "dataset": list(DATASETS),
            "model": MODELS,
            "objective": ["elbo", "iwae"],
            "protocol": ["disarm", "rodeo"],
        },
    )
    study = add("study", help="many VAE runs (models x estimators x seeds), several per process, here or on a cluster")
    add_config_flags(
        study,
        VAEConfig,
        several=("model", "estimator", "seed"),
        skip=("shards", "control_lr"),
        defaults={"out": "runs/study", **LATENT_DEFAULTS},
        choices={
            "dataset": list(DATASETS),
            "model": MODELS,
            "objective": ["elbo", "iwae"],
            "protocol": ["disarm", "rodeo"],
        },
    )
    study.add_argument(
        "--runs-per-process",
        type=positive_int,
        default=None,
        help="runs trained side by side in one process (None: every run that can)",
    )
    study.add_argument(
        "--launcher",
        choices=["local", "submitit"],
        default="local",
        help="local: the batches one after another here; submitit: one job per batch",
    )
    study.add_argument(
        "--cluster",
        choices=["local", "slurm", "debug"],
        default="slurm",
        help="with --launcher submitit: SLURM, or local processes (local), or in this process (debug)",
    )
    study.add_argument("--slurm-partition", default=None, help="with --cluster slurm")
    study.add_argument(
        "--timeout-min", type=positive_int, default=4320, help="with --launcher submitit: a job's time limit"
    )
    study.add_argument(
        "--reference",
        default=None,
        type=estimator_name,
        help="the report's baseline, compared with seed by seed (None: arm if the folder has it, "
        "else the first --estimator)",
    )
    sbn = add("sbn", help="maximum-likelihood stochastic binary network: lower half of a digit from its upper half")
    add_config_flags(
        sbn,
        SBNConfig,
        choices={"dataset": [n for n in DATASETS if "threshold" in n or "static" in n], "model": SBN_MODELS},
    )

    report = add("report", help="one Markdown table and figure from many runs")
    report.add_argument("runs", nargs="+", type=Path, help="run folders (or folders of run folders)")
    report.add_argument("--out", type=out_path, default=None, help="where to write report.md and the figure")
    report.add_argument(
        "--reference",
        default="arm",
        type=estimator_name,
        help="the estimator every other one is compared with, seed by seed",
    )
    report.add_argument(
        "--markdown", action="store_true", help="print the whole Markdown report instead of the short summary"
    )
    COMMAND_PARSERS.update(vae=vae, sbn=sbn, study=study)  # for errors found after parsing, in the command's name
    return parser


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is when a line is written (not when the handler was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


COMMANDS = {"demo": run_demo, "toy": run_toy, "vae": run_vae, "sbn": run_sbn, "study": run_study, "report": run_report}
USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ModuleNotFoundError,
    StorageFullError,
)


def main(argv=None) -> int:
    """Run one command. A mistake of the user's prints ``armgrad CMD: error: ...`` alone (exit 2 for
    a usage error, 1 for a failure); ``--debug`` or ``ARMGRAD_DEBUG=1`` shows the traceback too."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", handlers=[_StderrHandler()], force=True
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "estimators":
        print(estimators_table())
        return 0
    if args.command in ("vae", "sbn"):
        check_before_data(COMMAND_PARSERS[args.command], args)
    if args.command == "study":
        for model, estimator in itertools.product(args.model, args.estimator):
            check_before_data(
                COMMAND_PARSERS["study"], argparse.Namespace(**{**vars(args), "model": model, "estimator": estimator})
            )
    debug = args.debug or os.environ.get("ARMGRAD_DEBUG", "") not in ("", "0")
    prog = f"armgrad {args.command}"
    previous = _terminate_as_interrupt()
    try:
        with _logging_beside_progress_bars():
            return COMMANDS[args.command](args)
    except Terminated:
        if debug:
            raise
        print(
            f"\n{prog}: terminated (SIGTERM; a run continues from its last checkpoint with --resume)", file=sys.stderr
        )
        return 143
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted (a run continues from its last checkpoint with --resume)", file=sys.stderr)
        return 130
    except ConfigurationError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001  a bug of ours: say so, briefly, and how to see more
        if debug:
            raise
        print(
            f"{prog}: internal error: {type(error).__name__}: {error} (run again with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM (what a scheduler sends before it kills), raised where the process is, as Ctrl-C is: every
    ``finally`` runs (the run folder's lock is released, no temporary file is left)."""


def _terminate_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` while a command runs; return the previous handler (``None``
    when signals cannot be set here, outside the main thread)."""

    def handler(signum, frame):
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def _logging_beside_progress_bars():
    """Log lines printed above a progress bar rather than through it, on a terminal with tqdm."""
    if sys.stderr.isatty():
        try:
            from tqdm.contrib.logging import logging_redirect_tqdm

            return logging_redirect_tqdm([log])
        except ImportError:
            pass
    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
