"""``armgrad report``: many runs -> one Markdown table (mean and standard error over seeds) and figures.

A run is a folder with ``results.json`` and ``metrics.csv`` (as ``armgrad vae`` writes them). Runs
are grouped by dataset, model, latents (``200 binary``, ``20x10 categorical``), estimator, budget and steps
(runs of different lengths, such as a
study still in progress, are never averaged together); seeds are the replicates.

Runs of one seed share their initial weights, batches and binarisation whatever the estimator, so
the report also compares each estimator with a reference one seed by seed: the paired differences
cancel the seed-to-seed spread that the per-group standard errors include.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .reporting import markdown_table, pyplot, write_atomic, write_json

GROUP_KEYS = ("dataset", "model", "latents", "objective", "estimator", "num_samples", "steps")
SETTING_KEYS = tuple(k for k in GROUP_KEYS if k != "estimator")  # what estimators are compared within
PAIRED = ("test_elbo", "test_bound_k", "test_bound", "test_nll_bound")  # the headline numbers, compared seed by seed
METRICS = (
    "train_elbo",
    "train_bound",
    "test_elbo",
    "test_bound_k",
    "test_bound",
    "train_nll",
    "valid_nll_bound",
    "test_nll_bound",
    "grad_var",
    "seconds",
)
# one format per column: nats with two decimals, the gradient variance with three significant digits
FORMATS = {"grad_var": ".3g", "seconds": ".0f"}
NATS = ".2f"
HEADLINE = (
    ("test_bound_k", True),
    ("test_elbo", True),
    ("test_nll_bound", False),
)  # the objective's own first  # what "ahead" means: (metric, higher is better)


def find_runs(paths) -> list[Path]:
    runs = []
    for path in map(Path, paths):
        if (path / "results.json").exists():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p.parent for p in path.rglob("results.json"))
        else:
            raise FileNotFoundError(f"{path}: no results.json here or below (is it a run folder of armgrad vae?)")
    if not runs:
        raise FileNotFoundError(f"no runs (folders with results.json) under {', '.join(map(str, paths))}")
    return runs


@dataclass
class Runs:
    """The runs a report reads, each once: ``results`` ``[(folder, results.json, metrics rows)]``, the
    folders ``skipped`` with why, and the ``duplicates`` (folders that hold a run already counted)."""

    results: list
    skipped: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)

    def notes(self) -> str:
        text = ""
        if self.duplicates:
            text += (
                "\nCounted once: "
                + "; ".join(
                    f"{dup} is the same run as {kept} (same configuration and seed)" for dup, kept in self.duplicates
                )
                + ".\n"
            )
        if self.skipped:
            text += "\nSkipped: " + "; ".join(f"{folder} ({why})" for folder, why in self.skipped) + ".\n"
        return text


def _identity(result: dict):
    """What makes two folders one run: the configuration it was trained with (not where it was written)."""
    config = result.get("config")
    if isinstance(config, dict):
        return json.dumps({k: v for k, v in config.items() if k not in ("out", "data_dir")}, sort_keys=True)
    return json.dumps([_get(result, k) for k in (*GROUP_KEYS, "seed")])


def _read_run(run: Path):
    """``(results, curve)`` of one run folder, or a ``ValueError`` naming the file and what is wrong."""
    path = run / "results.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({type(error).__name__})") from None
    if not isinstance(result, dict) or not isinstance(result.get("estimator"), str) or "steps" not in result:
        raise ValueError(f"{path} is not an armgrad results file (no estimator and steps)")
    for key in METRICS:
        if result.get(key) is not None and not isinstance(result[key], (int, float)):
            raise ValueError(f"{path}: {key} is {result[key]!r}, not a number")
    try:
        curve = _curve(run)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{run / 'metrics.csv'} is missing or damaged ({type(error).__name__}: {error})") from None
    if not curve:
        raise ValueError(f"{run / 'metrics.csv'} has no rows")
    return result, curve


def load_runs(paths) -> Runs:
    """Every run under ``paths``, read once and validated; a folder reached twice, or a copy of a run,
    counts once; a damaged one is skipped with the reason (the others are still reported)."""
    loaded, seen, by_identity = Runs([]), set(), dict[str, str]()
    for run in find_runs(paths):
        where = run.resolve()
        if where in seen:
            continue
        seen.add(where)
        try:
            result, curve = _read_run(run)
        except ValueError as error:
            loaded.skipped.append((str(run), str(error)))
            continue
        identity = _identity(result)
        if identity in by_identity:
            loaded.duplicates.append((str(run), by_identity[identity]))
            continue
        by_identity[identity] = str(run)
        loaded.results.append((run, result, curve))
    if not loaded.results:
        raise FileNotFoundError(
            "no readable run under " + ", ".join(map(str, paths)) + loaded.notes().replace("\n", " ")
        )
    return loaded


def _get(result: dict, key: str):
    """A run's value of a grouping key; runs from before the objective was recorded trained the ELBO (VAE)
    or the likelihood (SBN)."""
    if key == "objective" and result.get(key) is None:
        return "elbo" if "test_elbo" in result else "likelihood"
    if key == "latents" and result.get(key) is None:  # VAE runs from before categorical latents; SBN runs
        return "200 binary" if "test_elbo" in result else "binary"
    return result.get(key)


def default_reference(paths, fallback: str) -> str:
    """ARM where the runs include it (the paper's baseline, as ``armgrad report`` defaults to), else
    ``fallback``: a study writing into a folder that other studies share compares with one baseline."""
    names = {result["estimator"] for _, result, _ in load_runs(paths).results}
    return "arm" if "arm" in names else fallback


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _cell(value: dict, fmt: str) -> str:
    """``mean ± stderr`` with the column's format (nats: two decimals for both)."""
    mean, err = value["mean"], value["stderr"]
    if math.isnan(mean):
        return "n/a"
    err_fmt = fmt.lstrip("+") if fmt.endswith("f") else ".2g"
    return f"{mean:{fmt}}" + ("" if math.isnan(err) else f" ± {err:{err_fmt}}")


def _by_setting(items) -> dict[tuple, dict]:
    """``(result, value)`` pairs -> ``{setting: {estimator: {seed: value}}}``."""
    settings: dict[tuple, dict] = {}
    for result, value in items:
        setting = tuple(_get(result, k) for k in SETTING_KEYS)
        settings.setdefault(setting, {}).setdefault(result["estimator"], {})[result.get("seed")] = value
    return settings


def paired_differences(results: list[dict], reference: str) -> list[dict]:
    """``metric(estimator) - metric(reference)`` over the seeds both ran, mean and standard error.

    One entry per estimator other than ``reference`` and per dataset, model, latents, budget and steps
    where both have runs of a common seed, with ``pairs`` (how many seeds) and each metric of
    ``PAIRED`` the runs report as ``{"mean", "stderr"}``.
    """
    entries = []
    for setting, estimators in _by_setting((r, r) for r in results).items():
        base = estimators.get(reference, {})
        for name, runs in estimators.items():
            seeds = sorted(set(runs) & set(base), key=str)
            if name == reference or not seeds:
                continue
            entry = {**dict(zip(SETTING_KEYS, setting)), "estimator": name, "reference": reference, "pairs": len(seeds)}
            for metric in PAIRED:
                diffs = [
                    runs[s][metric] - base[s][metric]
                    for s in seeds
                    if runs[s].get(metric) is not None and base[s].get(metric) is not None
                ]
                if diffs:
                    mean, err = mean_and_stderr(diffs)
                    entry[metric] = {"mean": mean, "stderr": err}
            entries.append(entry)
    return entries


def _paired_table(entries: list[dict], reference: str) -> str:
    if not entries:
        return ""
    metrics = [m for m in PAIRED if any(m in e for e in entries)]
    rows = []
    for e in entries:
        cells = [_cell(e.get(m, {"mean": math.nan, "stderr": math.nan}), "+" + NATS) for m in metrics]
        rows.append(
            [
                e["dataset"],
                e["model"],
                e["latents"],
                e["objective"],
                e["num_samples"],
                e["steps"],
                e["estimator"],
                e["pairs"],
                *cells,
            ]
        )
    header = [
        "dataset",
        "model",
        "latents",
        "objective",
        "num_samples",
        "steps",
        "estimator",
        "seeds paired",
        *[f"{m} difference" for m in metrics],
    ]
    return (
        f"\n\n## Seed by seed against {reference}\n\nThe difference from the {reference} run of the same "
        "seed (same initial weights, batches and binarisation), mean ± standard error over the seeds both "
        "ran: positive favours the estimator for ELBOs and test_bound, negative for *_nll_bound.\n\n"
        + markdown_table(header, rows)
    )


def _curve(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        rows = [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]
    if any(None in row or "step" not in row or math.isnan(row["step"]) for row in rows):
        raise ValueError("a row is cut short or has no step")
    return rows


def write_report(paths, out: Path | None = None, reference: str = "arm") -> str:
    loaded = load_runs(paths)
    runs = [run for run, _, _ in loaded.results]
    results = [(run, result) for run, result, _ in loaded.results]
    curves = {run: curve for run, _, curve in loaded.results}
    groups: dict[tuple, list] = {}
    for run, result in results:
        groups.setdefault(tuple(_get(result, k) for k in GROUP_KEYS), []).append((run, result))
    metrics = [m for m in METRICS if any(r.get(m) is not None for _, r in results)]
    rows, summary = [], []
    for key, members in groups.items():
        cells, entry = [], dict(zip(GROUP_KEYS, key))
        entry["seeds"] = len(members)
        for metric in metrics:
            mean, err = mean_and_stderr([r.get(metric) for _, r in members])
            entry[metric] = {"mean": mean, "stderr": err}
            cells.append(_cell(entry[metric], FORMATS.get(metric, NATS)))
        summary.append(entry)
        rows.append([*key, len(members), *cells])
    header = [*GROUP_KEYS, "seeds", *metrics]
    text = (
        f"# armgrad report: {len(runs)} runs\n\nMean ± standard error over seeds (no ± with one seed). "
        "In nats: ELBOs and test_bound (the K-sample importance-weighted bound), higher is better; "
        "train_nll and the *_nll_bound (M-sample bounds on -log p(x_lower | x_upper)), lower is better. "
        "grad_var: mean variance of the encoder gradient; seconds: wall-clock of training and periodic "
        "evaluation.\n\n" + markdown_table(header, rows)
    )
    text += _load_note([r for _, r in results]) + loaded.notes()
    paired = paired_differences([r for _, r in results], reference)
    text += _paired_table(paired, reference)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report.json", {"groups": summary, "paired": paired})
        drawn = _figure(_by_setting((r, curves[run]) for run, r in results), out / "report.png", reference)
        write_atomic(out / "report.md", text + ("\n![curves](report.png)\n" if drawn else ""))
    return text


def _load_note(results: list[dict]) -> str:
    """Say when runs shared the machine: their seconds then measure the load as much as the estimator."""
    loaded = [r for r in results if r.get("load_average") is not None and r["load_average"] > r.get("threads", 1) + 0.5]
    if not loaded:
        return ""
    worst = max(r["load_average"] for r in loaded)
    return (
        f"\nThe machine was shared while {len(loaded)} of these {len(results)} runs trained (mean load average "
        f"up to {worst:.1f} on {loaded[0].get('cpu_count', '?')} cores, more than their threads): their seconds "
        "include waiting for other work, so compare speeds only between runs that had the machine alike.\n"
    )


def summary(paths, reference: str = "arm", out: Path | None = None) -> str:
    """A short reading for a terminal: per setting an aligned table of the headline numbers, and one
    sentence saying which estimator came out ahead and by how much (paired with the runner-up over
    the seeds both ran, with its standard error where there are several)."""
    loaded = load_runs(paths)
    results = [result for _, result, _ in loaded.results]
    lines = []
    for setting, estimators in _by_setting((r, r) for r in results).items():
        first = next(iter(next(iter(estimators.values())).values()))
        metric, higher = next(((m, h) for m, h in HEADLINE if first.get(m) is not None), (None, True))
        columns = [
            m
            for m in (
                "train_elbo",
                "train_bound",
                "test_elbo",
                "test_bound_k",
                "test_bound",
                "train_nll",
                "test_nll_bound",
                "grad_var",
            )
            if first.get(m) is not None
        ]
        dataset, model, latents, objective, budget, steps = setting
        cost = f"K = {budget}" if objective == "iwae" else f"{budget} f evaluations per example"
        lines.append(f"{dataset}, {model} model, {latents} latents, {objective}, {cost}, {steps:,} steps:")
        table = [["estimator", "seeds", *columns]]
        means = {}
        for name, runs in estimators.items():
            row = [name, str(len(runs))]
            for m in columns:
                mean, err = mean_and_stderr([r.get(m) for r in runs.values()])
                row.append(_cell({"mean": mean, "stderr": err}, FORMATS.get(m, NATS)))
                if m == metric:
                    means[name] = mean
            table.append(row)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for r in table:
            lines.append(
                "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            )
        if metric is not None and len(means) > 1:
            ranked = sorted(means, key=lambda n: means[n], reverse=higher)
            best, second = ranked[0], ranked[1]
            seeds = sorted(set(estimators[best]) & set(estimators[second]), key=str)
            diffs = [
                (estimators[best][s][metric] - estimators[second][s][metric]) * (1 if higher else -1) for s in seeds
            ]
            mean, err = mean_and_stderr(diffs)
            spread = (
                f"± {err:.2f} over {len(seeds)} paired seeds"
                if len(seeds) > 1
                else "one seed: no standard error, so this order may be chance"
            )
            lines.append(
                f"  {best} came out ahead on {metric.replace('_', ' ')}: {abs(mean):.2f} nats "
                f"{'better' if mean >= 0 else 'worse'} than {second} ({spread})."
            )
        lines.append("")
    notes = loaded.notes().strip()
    if notes:
        lines.append(notes.replace("\n\n", "\n"))
    if out is not None:
        lines.append(f"report: {Path(out) / 'report.md'}; figure: {Path(out) / 'report.png'}")
    return "\n".join(lines)


def _common_steps(curves: list[list[dict]]) -> list[float]:
    """The steps every curve logged. Runs may have been evaluated at different steps (one resumed
    with another ``--eval-every``): rows are matched by step, never by position."""
    return sorted(set.intersection(*({row["step"] for row in c} for c in curves)))


def _mean_at(curves: list[list[dict]], steps: list[float], key: str) -> list[float]:
    at = [{row["step"]: row for row in c} for c in curves]
    return [sum(a[s][key] for a in at) / len(at) for s in steps]


def _figure(settings: dict, path: Path, reference: str = "arm") -> bool:
    """One row per setting (dataset, model, latents, budget, steps): the training curve of every estimator
    against steps and against seconds (mean over seeds), and the test curve's difference from
    ``reference`` over the seeds both ran (where some difference exceeds 3 nats, on a symmetric log
    scale, linear within 1 nat, said on the axis and ticked on both parts). Returns whether it was
    drawn (not without matplotlib)."""
    names = sorted({name for runs in settings.values() for name in runs})
    color = {name: f"C{i % 10}" for i, name in enumerate(names)}
    plt = pyplot(required=False)
    if plt is None:
        return False
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter

    fig, axes = plt.subplots(len(settings), 3, figsize=(17, 3.8 * len(settings)), squeeze=False, layout="constrained")
    for row, (setting, estimators) in zip(axes, settings.items()):
        first = next(iter(next(iter(estimators.values())).values()))[0]
        metric = next(
            (k for k in ("train_elbo", "train_bound", "train_nll") if k in first),
            next(k for k in first if k not in ("step", "seconds", "steps_per_second", "load_average")),
        )
        compared = next((k for k in ("test_bound_k", "test_elbo", "valid_nll_bound") if k in first), metric)
        base = estimators.get(reference, {})
        finals, middles, largest, starts = [], [], 0.0, []
        for name, runs in estimators.items():
            curves = list(runs.values())
            steps = _common_steps(curves)
            values = _mean_at(curves, steps, metric)
            finals.append(values[-1])
            middles.append(values[len(values) // 2])
            seconds = _mean_at(curves, steps, "seconds")
            starts.append((steps[len(steps) // 2], seconds[len(steps) // 2]))
            row[0].plot(steps, values, color=color[name])
            row[1].plot(seconds, values, color=color[name])
            seeds = sorted(set(runs) & set(base), key=str)
            if name != reference and seeds:
                mine, theirs = [runs[s] for s in seeds], [base[s] for s in seeds]
                steps = _common_steps(mine + theirs)
                diff = [a - b for a, b in zip(_mean_at(mine, steps, compared), _mean_at(theirs, steps, compared))]
                row[2].plot(steps, diff, color=color[name])
                largest = max([largest, *map(abs, diff)])
        dataset, model, latents, objective, budget, steps = setting
        where = f"{dataset} {model}, {latents}, {objective}, budget {budget}, {steps:,} steps"
        row[0].set_title(f"{metric} against steps ({where})", fontsize=9)
        row[1].set_title(f"{metric} against wall-clock seconds", fontsize=9)
        row[2].set_title(f"{compared} minus {reference}'s, seed by seed", fontsize=9)
        row[0].set_ylabel(f"{metric} (mean over seeds)")
        row[0].set_xlabel("step")
        row[1].set_xlabel("seconds")
        row[2].axhline(0.0, color=color.get(reference, "k"), lw=0.8)
        scale = "nats"
        if largest > 3.0:  # a far-off estimator would flatten the others: linear within 1 nat, log beyond
            row[2].set_yscale("symlog", linthresh=1.0)
            ticks = [0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200]
            row[2].yaxis.set_major_locator(FixedLocator(sorted({*ticks, *(-t for t in ticks)})))
            row[2].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            scale = "nats, log scale beyond ±1"
        row[2].set_xlabel("step")
        row[2].set_ylabel(f"difference ({scale})")
        handles = [
            Line2D(
                [],
                [],
                color=color[name],
                label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
                + (", the reference" if name == reference else ""),
            )
            for name, runs in estimators.items()
        ]
        # one legend per row, right of the last panel: it hides no curve
        row[2].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        # the second half of every curve: the first steps' values would squash the differences
        higher_better = "elbo" in metric or "bound" in metric and "nll" not in metric
        worst, best = (min(middles), max(finals)) if higher_better else (max(middles), min(finals))
        margin = 0.05 * abs(best - worst)
        if margin > 0:
            for ax in row[:2]:
                ax.set_ylim(*sorted([worst, best + (margin if higher_better else -margin)]))
            row[0].set_xlim(left=min(step for step, _ in starts))  # and the steps where those values are
            row[1].set_xlim(left=min(sec for _, sec in starts))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
