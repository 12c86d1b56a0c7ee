"""experiments/report.py: grouping, paired differences and curves (the command end to end: test_vae.py,
damaged and duplicated runs: test_faults.py)."""

from __future__ import annotations

import pytest

from armgrad.experiments.report import _common_steps, _mean_at, paired_differences


def test_paired_differences_cancel_the_seed_effect():
    # each seed shifts every estimator alike (+10 per seed); b is 1 above a whatever the seed
    def run(estimator, seed, elbo, steps=100):
        return dict(
            dataset="d",
            model="linear",
            estimator=estimator,
            num_samples=2,
            steps=steps,
            seed=seed,
            test_elbo=elbo,
            test_bound=None,
        )

    results = [
        run("a", 0, -100.0),
        run("a", 1, -90.0),
        run("a", 2, -80.0),
        run("b", 0, -99.0),
        run("b", 1, -89.0),
        run("b", 2, -79.0),
        run("b", 3, -50.0),  # seed 3: no partner
        run("c", 0, -120.0, steps=50),
    ]  # other steps: no partner
    (entry,) = paired_differences(results, "a")
    assert (entry["estimator"], entry["reference"], entry["pairs"]) == ("b", "a", 3)
    assert entry["test_elbo"]["mean"] == pytest.approx(1.0) and entry["test_elbo"]["stderr"] == pytest.approx(0.0)
    assert "test_bound" not in entry
    assert paired_differences(results, "missing") == []
    # a metric the reference's run of a seed lacks (not measured there): that seed leaves that metric's pairs
    results += [run("a", 3, -60.0), run("a", 4, None), run("b", 4, -30.0)]
    results[-1]["test_bound"] = -20.0
    (entry,) = paired_differences(results, "a")
    assert entry["pairs"] == 5 and entry["test_elbo"]["mean"] == pytest.approx(3.25)  # (1 + 1 + 1 + 10) / 4 seeds
    assert "test_bound" not in entry


def test_curves_of_runs_evaluated_at_different_steps_are_matched_by_step():
    # a run resumed with another --eval-every logs 2000, 4000, 10000; its partner 5000, 10000
    a = [{"step": 2000, "elbo": -300.0}, {"step": 4000, "elbo": -290.0}, {"step": 10000, "elbo": -270.0}]
    b = [{"step": 5000, "elbo": -285.0}, {"step": 10000, "elbo": -272.0}]
    steps = _common_steps([a, b])
    assert steps == [10000]
    assert _mean_at([a, b], steps, "elbo") == [-271.0]
