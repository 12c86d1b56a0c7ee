"""``armgrad report``: many runs -> one Markdown table (mean and standard error over seeds) and figures.

A run is a folder with ``results.json`` and ``metrics.csv`` (as ``armgrad vae`` writes them). Runs
are grouped by dataset, model, estimator, budget and steps (runs of different lengths, such as a
study still in progress, are never averaged together); seeds are the replicates.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .reporting import markdown_table, pyplot, write_atomic, write_json

GROUP_KEYS = ("dataset", "model", "estimator", "num_samples", "steps")
METRICS = ("train_elbo", "test_elbo", "test_bound", "train_nll", "valid_nll_bound", "test_nll_bound", "grad_var",
           "seconds")


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


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _curve(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def write_report(paths, out: Path | None = None) -> str:
    runs = find_runs(paths)
    results = [(run, json.loads((run / "results.json").read_text())) for run in runs]
    groups: dict[tuple, list] = {}
    for run, result in results:
        groups.setdefault(tuple(result.get(k) for k in GROUP_KEYS), []).append((run, result))
    metrics = [m for m in METRICS if any(r.get(m) is not None for _, r in results)]
    rows, summary = [], []
    for key, members in groups.items():
        cells, entry = [], dict(zip(GROUP_KEYS, key))
        entry["seeds"] = len(members)
        for metric in metrics:
            mean, err = mean_and_stderr([r.get(metric) for _, r in members])
            entry[metric] = {"mean": mean, "stderr": err}
            cells.append("n/a" if math.isnan(mean) else f"{mean:.4g}" + ("" if math.isnan(err) else f" ± {err:.2g}"))
        summary.append(entry)
        rows.append([*key, len(members), *cells])
    header = [*GROUP_KEYS, "seeds", *metrics]
    text = (f"# armgrad report: {len(runs)} runs\n\nMean ± standard error over seeds (no ± with one seed). "
            "In nats: ELBOs and test_bound (the K-sample importance-weighted bound), higher is better; "
            "train_nll and the *_nll_bound (M-sample bounds on -log p(x_lower | x_upper)), lower is better. "
            "grad_var: mean variance of the encoder gradient; seconds: wall-clock of training and periodic "
            "evaluation.\n\n" + markdown_table(header, rows))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report.json", summary)
        write_atomic(out / "report.md", text + "\n![curves](report.png)\n")
        _figure(groups, out / "report.png")
    return text


def _figure(groups: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for key, members in groups.items():
        curves = [_curve(run) for run, _ in members]
        metric = "train_elbo" if "train_elbo" in curves[0][0] else next(k for k in curves[0][0] if k not in ("step", "seconds"))
        length = min(len(c) for c in curves)
        steps = [curves[0][i]["step"] for i in range(length)]
        seconds = [sum(c[i]["seconds"] for c in curves) / len(curves) for i in range(length)]
        values = [sum(c[i][metric] for c in curves) / len(curves) for i in range(length)]
        label = " ".join(str(k) for k in key[1:-1] if k is not None) + f" ({key[-1]:,} steps)"
        axes[0].plot(steps, values, label=label)
        axes[1].plot(seconds, values, label=label)
        axes[0].set_ylabel(f"{metric} (mean over seeds)")
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("seconds")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
