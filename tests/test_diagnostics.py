"""The diagnostics report and the command line."""

import json

import pytest
import torch

from armgrad import ESTIMATORS, cli
from armgrad.diagnostics import compare, draw_gradients
from armgrad.estimators import ENUMERATION, select

from conftest import make_objective


def test_report_contents_and_rare_event_exclusion():
    f = make_objective(2, 3, seed=0)
    logits = torch.tensor([[0.3, -8.0, 1.0], [8.0, 0.0, -0.5]], dtype=torch.float64)
    report = compare(
        f, logits, ["arm", "st"], num_samples=2, num_draws=2000, generator=torch.Generator().manual_seed(0)
    )
    arm = report["arm"]
    # 2000 draws x 2 evaluations x s(-8) = 1.3 expected rare outcomes: the two |phi| = 8 units are untested
    assert arm.untested == 2 and arm.testable.tolist() == [[True, False, True], [False, True, True]]
    assert arm.max_abs_z < 5 and report["st"].max_abs_z > 5
    data = json.loads(json.dumps(report.to_dict()))
    assert [row["estimator"] for row in data["estimators"]] == ["arm", "st"]
    assert report.table().count("\n") == 4


def test_compare_rounds_budgets_up_to_a_valid_one():
    f = make_objective(1, 3, seed=1)
    report = compare(
        f, torch.zeros(1, 3, dtype=torch.float64), ["reinforce", "arm", "arms"], num_samples=1, num_draws=100
    )
    assert [r.evaluations for r in report.rows] == [1, 2, 2]


def test_cli_estimators_lists_the_registry(capsys):
    assert cli.main(["estimators"]) == 0
    out = capsys.readouterr().out
    assert all(f"`{name}`" in out for name in ESTIMATORS)


def test_cli_demo_writes_results(tmp_path, capsys):
    assert cli.main(["demo", "--units", "4", "--draws", "300", "--budgets", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["budgets"]["2"]["estimators"]
    assert {r["estimator"] for r in rows} == set(select(evaluates_f_at=lambda where: where != ENUMERATION))
    assert "| disarm | yes | 2 |" in (tmp_path / "report.md").read_text()
    assert "budget 2" in capsys.readouterr().out


def test_too_few_draws_are_refused_by_name():
    f, logits = make_objective(1, 3, seed=0), torch.zeros(1, 3, dtype=torch.float64)
    for draws in (0, 1):  # one draw has no variance, no z-score: the report would be nan
        with pytest.raises(ValueError, match=f"num_draws must be at least 2 .*, got {draws}"):
            compare(f, logits, ["arm"], num_draws=draws)
    with pytest.raises(ValueError, match="num_draws must be at least 1 .*, got 0"):
        draw_gradients(f, logits, "arm", 2, num_draws=0)
    with pytest.raises(TypeError, match="num_draws must be an int, got float"):
        draw_gradients(f, logits, "arm", 2, num_draws=10.0)
    assert draw_gradients(f, logits, "arm", 2, num_draws=1).shape == (1, 1, 3)
