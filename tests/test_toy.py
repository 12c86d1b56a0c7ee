"""The toy experiment: its objective, its runs, and the files it writes."""

import json

import pytest
import torch

import armgrad
from armgrad import cli
from armgrad.experiments.toy import ToyConfig, objective, run_one, true_gradient


def test_true_gradient_matches_enumeration():
    targets = torch.tensor([0.49, 0.499, 0.501, 0.51], dtype=torch.float64)
    phi = torch.tensor([[0.3, -1.0, 2.0, 0.0], [4.0, -4.0, 0.1, -0.2]], dtype=torch.float64)
    _, exact_grad = armgrad.exact(objective(targets), phi)
    torch.testing.assert_close(true_gradient(phi, targets), exact_grad)


@pytest.mark.parametrize("name", ["arm", "disarm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arm_and_disarm_reach_the_optimum_at_p0_049(name, seed):
    config = ToyConfig(steps=300, var_every=100, var_draws=100)
    _, summary = run_one(name, torch.tensor([0.49], dtype=torch.float64), seed, config, config.steps)
    assert summary["final_prob"] > 0.85 and summary["fraction_at_optimum"] == 1.0


def test_minimising_goes_the_other_way():
    config = ToyConfig(steps=300, var_every=100, var_draws=100, minimize=True)
    _, summary = run_one("disarm", torch.tensor([0.499], dtype=torch.float64), 0, config, config.steps)
    assert summary["final_prob"] < 0.15 and summary["fraction_at_optimum"] == 1.0


def test_reinforce_drifts_where_arm_does_not():
    config = ToyConfig(steps=300, var_every=50, var_draws=300)
    _, reinforce = run_one("reinforce", torch.tensor([0.499], dtype=torch.float64), 0, config, config.steps)
    _, arm = run_one("arm", torch.tensor([0.499], dtype=torch.float64), 0, config, config.steps)
    assert reinforce["fraction_at_optimum"] == 0.0
    assert arm["grad_var"] * 1000 < reinforce["grad_var"]


@pytest.mark.slow
def test_cli_toy_writes_every_output(tmp_path, capsys):
    assert (
        cli.main(
            [
                "toy",
                "--quick",
                "--steps",
                "20",
                "--seeds",
                "1",
                "--out",
                str(tmp_path),
                "--estimators",
                "arm",
                "reinforce",
                "relax",
                "exact",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["runs"]
    assert len(runs) == 4 * 5  # 4 estimators x (4 targets + the high-dimensional version) x 1 seed
    for run in runs:
        assert {"estimator", "p0", "final_prob", "grad_var", "trajectory"} <= set(run)
        assert (tmp_path / run["trajectory"]).exists()
    for name in ["trajectory.png", "variance.png", "gradient.png", "high_dim.png", "report.md"]:
        assert (tmp_path / name).stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "| 0.49 | arm | 6 |" in report and "Measured variance against the closed form" in report
    assert "Toy problem" in capsys.readouterr().out


def test_learned_controls_start_from_the_run_seed_whatever_ran_before():
    """RELAX's network is initialised from the run's seed, not from the global generator's state."""
    config = ToyConfig.quick(var_every=10, var_draws=20)
    target = torch.tensor([0.499], dtype=torch.float64)
    torch.manual_seed(1)
    _, first = run_one("relax", target, 0, config, 20)
    torch.rand(100)  # another run used the global generator meanwhile
    _, again = run_one("relax", target, 0, config, 20)
    assert first == again
