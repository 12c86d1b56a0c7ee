"""The toy problem of the ARM paper (Yin & Zhou, 2019, Fig. 1) and of RELAX (Grathwohl et al., 2018).

Objective: ``E_{b ~ Bernoulli(s(phi))}[(b - p0)^2]``, whose exact gradient is
``s(phi)(1 - s(phi))(1 - 2 p0)``: tiny when ``p0`` is near 1/2, so the two outcomes are almost
equally good and an estimator's noise decides where ``phi`` goes. Maximised (the ARM paper: the
optimum is ``s(phi) -> 1`` when ``p0 < 1/2``, ``-> 0`` when ``p0 > 1/2``) or minimised (RELAX).

The study: for each ``p0`` in {0.49, 0.499, 0.501, 0.51}, each estimator and each seed, start at
``phi = 0`` and take ``steps`` Adam steps on the estimated gradient; every ``var_every`` steps,
measure the estimator's variance at the current ``phi`` from ``var_draws`` extra draws (not used
for the update), next to the exact variance where a closed form exists (one unit). Plus a
200-dimensional version, ``sum_d (b_d - p0_d)^2`` with the four targets repeated, where a run
succeeds on the fraction of units that reach their optimum.

Reads top to bottom: configuration, objective, one run, the study, the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import ESTIMATORS, grad
from ..diagnostics import draw_gradients
from ..estimators import ENUMERATION, select
from .reporting import log, markdown_table, progress, pyplot, write_csv, write_json

TARGETS = (0.49, 0.499, 0.501, 0.51)
# every unbiased estimator; "exact" is the true gradient, in closed form (enumeration would be
# 2^200 states in 200 dimensions)
ESTIMATOR_NAMES = tuple(select(unbiased=True))


@dataclass
class ToyConfig:
    targets: tuple = TARGETS
    estimators: tuple = ESTIMATOR_NAMES
    minimize: bool = False
    steps: int = 2000
    seeds: int = 5
    lr: float = 0.01
    control_lr: float = 0.01  # Adam on REBAR/RELAX control parameters
    budget: int = 6  # f evaluations per step for every estimator (6: 3 ARM pairs, 2 REBAR triples)
    natural_budget: bool = False  # instead: each estimator's smallest budget (1, 2 or 3)
    var_every: int = 20
    var_draws: int = 1000
    units_high_dim: int = 200
    steps_high_dim: int = 2000
    var_every_high_dim: int = 100
    device: str = "cpu"  # 1 to 200 units: a GPU only adds latency here, but every command takes --device
    out: str = "runs/toy"

    @classmethod
    def quick(cls, **overrides) -> ToyConfig:
        """Under a minute on 2 cores: fewer steps and seeds, sparser variance measurements."""
        base = dict(steps=300, seeds=2, var_every=50, var_draws=300, steps_high_dim=300, var_every_high_dim=50)
        return cls(**{**base, **overrides})


def objective(targets: torch.Tensor):
    """``f(b) = sum_d (b_d - p0_d)^2``; ``b`` of shape ``(S, *batch, D)`` -> ``(S, *batch)``."""
    return lambda b: ((b - targets) ** 2).sum(-1)


def true_gradient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``d E[f] / d phi_d = p_d (1 - p_d) ((1 - t_d)^2 - t_d^2) = p_d (1 - p_d) (1 - 2 t_d)``."""
    p = torch.sigmoid(logits)
    return p * (1 - p) * (1 - 2 * targets)


def budget_for(name: str, config: ToyConfig) -> int:
    est = ESTIMATORS[name]
    if est.evaluates_f_at == ENUMERATION:
        return 0
    return est.valid_budget(1 if config.natural_budget else config.budget)


def exact_variance(name: str, logit: float, target: float, budget: int) -> float:
    """Closed-form variance of the budget-averaged estimate at one unit, or nan if none is known."""
    est = ESTIMATORS[name]
    variance = est.one_unit_variance(logit, target**2, (1 - target) ** 2)
    return math.nan if variance is None else variance / (budget // est.budget.group)


def run_one(
    name: str,
    targets: torch.Tensor,
    seed: int,
    config: ToyConfig,
    steps: int,
    record_every: int = 1,
    var_every: int | None = None,
):
    """Train ``phi`` (starting at 0) with one estimator; return per-step rows and a summary."""
    var_every = var_every or config.var_every
    gen = torch.Generator(config.device).manual_seed(seed)
    targets = targets.to(config.device)
    units = targets.numel()
    f = objective(targets)
    phi = torch.zeros(units, dtype=torch.float64, device=config.device, requires_grad=True)
    optimizer = torch.optim.Adam([phi], lr=config.lr)
    spec = ESTIMATORS[name]
    enumerates = spec.evaluates_f_at == ENUMERATION
    with torch.random.fork_rng(devices=[]):  # learned controls start from the run's seed, whatever ran before
        torch.manual_seed(seed)
        learned = spec.create(num_units=units).double().to(config.device) if spec.learned else None
    estimator = name if learned is None else learned
    control_optimizer = None if learned is None else torch.optim.Adam(learned.parameters(), lr=config.control_lr)
    budget = budget_for(name, config)
    sign = 1.0 if config.minimize else -1.0  # Adam minimises sign * E[f]
    rows, variances = [], []
    for step in range(steps + 1):
        logits = phi.detach()
        true_g = true_gradient(logits, targets)
        g = true_g if enumerates else grad(f, logits, estimator, budget, generator=gen)
        if learned is not None and control_optimizer is not None:
            control_optimizer.zero_grad()
            learned.backward_variance()
            control_optimizer.step()
        measured = exact = math.nan
        if step % var_every == 0 and not enumerates:
            draws = draw_gradients(f, logits, estimator, budget, config.var_draws, generator=gen)
            measured = float(draws.var(0).mean())
            variances.append(measured)
            if units == 1:
                exact = exact_variance(name, float(logits[0]), float(targets[0]), budget)
        if step % record_every == 0 or not math.isnan(measured):
            p = torch.sigmoid(logits)
            rows.append(
                {
                    "step": step,
                    "prob": float(p.mean()),
                    "grad": float(g.mean()),
                    "true_grad": float(true_g.mean()),
                    "reached": reached_fraction(p, targets, config.minimize),
                    "grad_var": measured,
                    "exact_var": exact,
                }
            )
        if step == steps:
            break
        phi.grad = sign * g
        optimizer.step()
    p = torch.sigmoid(phi.detach())
    summary = {
        "estimator": name,
        "units": units,
        "seed": seed,
        "budget": budget,
        "f_evaluations": spec.evaluations(budget, units) if not enumerates else 0,
        "p0": float(targets[0]) if units == 1 else "mixed",
        "final_prob": float(p.mean()),
        "fraction_at_optimum": reached_fraction(p, targets, config.minimize),
        "fraction_right_side": reached_fraction(p, targets, config.minimize, margin=0.5),
        "grad_var": float(sum(variances) / len(variances)) if variances else 0.0,
    }
    return rows, summary


def reached_fraction(probs: torch.Tensor, targets: torch.Tensor, minimize: bool, margin: float = 0.25) -> float:
    """Fraction of units within ``margin`` of their optimum (``s(phi) -> 1`` where ``p0 < 1/2``
    when maximising, ``p0 > 1/2`` when minimising; ``-> 0`` otherwise)."""
    optimum_is_one = targets > 0.5 if minimize else targets < 0.5
    return float(torch.where(optimum_is_one, probs > 1 - margin, probs < margin).double().mean())


def run_study(config: ToyConfig) -> dict:
    """Every estimator on every target and seed, plus the high-dimensional version; write the report."""
    out = Path(config.out)
    (out / "csv").mkdir(parents=True, exist_ok=True)
    runs, curves = [], {}
    jobs = [(name, p0, seed) for p0 in config.targets for name in config.estimators for seed in range(config.seeds)]
    jobs += [(name, "mixed", seed) for name in config.estimators for seed in range(config.seeds)]
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of 1 to 200 units: threads cost more than they save
    bar = progress(total=len(jobs), desc="toy", unit="run")
    for name, p0, seed in jobs:
        if p0 == "mixed":
            targets = torch.tensor(config.targets, dtype=torch.float64).repeat(
                math.ceil(config.units_high_dim / len(config.targets))
            )[: config.units_high_dim]
            rows, summary = run_one(
                name, targets, seed, config, config.steps_high_dim, record_every=10, var_every=config.var_every_high_dim
            )
        else:
            rows, summary = run_one(name, torch.tensor([p0], dtype=torch.float64), seed, config, config.steps)
        trajectory = f"csv/{name}_p0={p0}_seed={seed}.csv"
        write_csv(out / trajectory, rows)
        runs.append({**summary, "trajectory": trajectory})
        curves[(name, p0, seed)] = rows
        bar.update(1)
        bar.set_postfix(estimator=name, p0=p0, prob=f"{summary['final_prob']:.3f}")
    bar.close()
    torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    log.info("toy study: %d runs in %.1f s", len(runs), seconds)
    results = {"config": asdict(config), "seconds": seconds, "runs": runs}
    write_json(out / "results.json", results)
    report = write_report(config, runs, curves, out)
    write_figures(config, curves, out)
    return {"results": results, "report": report}


def summarise(config: ToyConfig, runs: list[dict]) -> list[dict]:
    """One row per (estimator, target): means over seeds, and how many seeds reached the optimum."""
    table = []
    for p0 in list(config.targets) + ["mixed"]:
        for name in config.estimators:
            group = [r for r in runs if r["estimator"] == name and r["p0"] == p0]
            if not group:
                continue
            table.append(
                {
                    "p0": p0,
                    "estimator": name,
                    "budget": group[0]["f_evaluations"],
                    "final_prob": sum(r["final_prob"] for r in group) / len(group),
                    "at_optimum": sum(r["fraction_at_optimum"] for r in group) / len(group),
                    "right_side": sum(r["fraction_right_side"] for r in group) / len(group),
                    "seeds_at_optimum": sum(r["fraction_at_optimum"] > 0.5 for r in group),
                    "seeds": len(group),
                    "grad_var": sum(r["grad_var"] for r in group) / len(group),
                }
            )
    return table


def variance_check(curves: dict, config: ToyConfig) -> list[dict]:
    """Measured against closed-form variance, averaged over every measurement of every 1-D run."""
    rows = []
    for name in config.estimators:
        pairs = [
            (r["grad_var"], r["exact_var"])
            for (n, p0, _), c in curves.items()
            if n == name and p0 != "mixed"
            for r in c
            if not math.isnan(r["exact_var"])
        ]
        if pairs:
            measured = sum(m for m, _ in pairs) / len(pairs)
            exact = sum(e for _, e in pairs) / len(pairs)
            rows.append({"estimator": name, "measured": measured, "exact": exact, "ratio": measured / exact})
    return rows


def write_report(config: ToyConfig, runs: list[dict], curves: dict, out: Path) -> str:
    goal = "minimised (RELAX)" if config.minimize else "maximised (ARM paper)"
    budget = "each estimator's natural budget" if config.natural_budget else f"{config.budget} f evaluations per step"
    table = summarise(config, runs)
    lines = [
        f"# Toy problem: E[(b - p0)^2] {goal}\n",
        f"Adam lr {config.lr}, {config.steps} steps (200-dim: {config.steps_high_dim}), {config.seeds} seeds, "
        f"{budget}; gradient variance measured every {config.var_every} steps (200-dim: {config.var_every_high_dim}) "
        f"from {config.var_draws} extra draws.\n",
        "`right side`: fraction of units (mean over seeds) whose final probability is on the optimal side "
        "of 1/2; `at optimum`: fraction within 0.25 of the "
        "optimum (1 or 0); `seeds`: seeds for which most units got there. `grad var`: the estimator's "
        "variance at the current phi, averaged over the run.\n",
        markdown_table(
            ["p0", "estimator", "f evals", "final prob", "right side", "at optimum", "seeds", "grad var"],
            [
                [
                    r["p0"],
                    r["estimator"],
                    r["budget"],
                    r["final_prob"],
                    r["right_side"],
                    r["at_optimum"],
                    f"{r['seeds_at_optimum']}/{r['seeds']}",
                    r["grad_var"],
                ]
                for r in table
            ],
        ),
    ]
    failures: dict = {}
    for r in table:
        if r["seeds_at_optimum"] < r["seeds"]:
            failures.setdefault(r["estimator"], []).append(
                f"p0 = {r['p0']} ({r['seeds_at_optimum']}/{r['seeds']} seeds)"
            )
    if failures:
        lines.append("Did not reach the optimum on every seed within the steps given:\n")
        lines += [f"- {name}: {', '.join(where)}" for name, where in failures.items()]
        lines.append("")
    else:
        lines.append("Every estimator reached the optimum on every seed and target.\n")
    check = variance_check(curves, config)
    if check:
        lines.append("## Measured variance against the closed form (one unit, all measurements)\n")
        lines.append(
            markdown_table(
                ["estimator", "measured", "exact", "ratio"],
                [[r["estimator"], r["measured"], r["exact"], r["ratio"]] for r in check],
            )
        )
    lines.append(
        "![probability](trajectory.png)\n\n![variance](variance.png)\n\n![gradient](gradient.png)\n\n"
        "![200 units](high_dim.png)\n"
    )
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def _mean_curve(curves: dict, name, p0, key: str):
    """Steps where ``key`` was recorded, and its mean over seeds there."""
    by_step: dict[int, list] = {}
    for (n, t, _), rows in curves.items():
        if n == name and t == p0:
            for r in rows:
                if not math.isnan(r[key]):
                    by_step.setdefault(r["step"], []).append(r[key])
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def write_figures(config: ToyConfig, curves: dict, out: Path) -> None:
    plt = pyplot(required=False)
    if plt is None:
        return
    names = config.estimators
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    targets = list(config.targets)

    fig, axes = plt.subplots(1, len(targets), figsize=(4 * len(targets), 3.4), sharey=True)
    for ax, p0 in zip(axes, targets):
        for name in names:
            for (n, t, seed), rows in curves.items():
                if n == name and t == p0:
                    ax.plot(
                        [r["step"] for r in rows],
                        [r["prob"] for r in rows],
                        color=colors[name],
                        lw=0.8,
                        alpha=0.8,
                        label=name if seed == 0 else None,
                    )
        ax.set_title(f"p0 = {p0}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("s(phi)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "trajectory.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(targets), figsize=(4 * len(targets), 3.4), sharey=True)
    for ax, p0 in zip(axes, targets):
        for name in names:
            if ESTIMATORS[name].evaluates_f_at == ENUMERATION:
                continue
            steps, values = _mean_curve(curves, name, p0, "grad_var")
            ax.semilogy(steps, values, color=colors[name], label=name)
        ax.set_title(f"p0 = {p0}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("gradient variance (mean over seeds)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "variance.png", dpi=110)
    plt.close(fig)

    p0 = targets[0]
    shown = [n for n in names if ESTIMATORS[n].evaluates_f_at != ENUMERATION]
    fig, axes = plt.subplots(
        2, math.ceil(len(shown) / 2), figsize=(3.4 * math.ceil(len(shown) / 2), 5.6), squeeze=False
    )
    for ax, name in zip(axes.flat, shown):
        rows = curves[(name, p0, 0)]
        ax.plot([r["step"] for r in rows], [r["grad"] for r in rows], ".", ms=1, color=colors[name], label="estimate")
        ax.plot([r["step"] for r in rows], [r["true_grad"] for r in rows], color="k", lw=1, label="true")
        ax.set_title(name, fontsize=9)
        ax.set_yscale("symlog", linthresh=1e-3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"estimated vs true gradient, p0 = {p0}, seed 0")
    fig.tight_layout()
    fig.savefig(out / "gradient.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in names:
        steps, values = _mean_curve(curves, name, "mixed", "reached")
        ax.plot(steps, values, color=colors[name], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of units within 0.25 of optimum")
    ax.set_title(f"{config.units_high_dim} units, targets {', '.join(map(str, targets))}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "high_dim.png", dpi=110)
    plt.close(fig)
