"""The benchmark suite runs end to end and writes its tables (no timing is asserted here)."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suite  # noqa: E402


def test_suite_writes_every_section(tmp_path):
    threads = torch.get_num_threads()
    try:
        suite.main(["--repeats", "1", "--models", "linear", "--checkpoint", str(tmp_path / "none.pt"),
                    "--only", "grad", "step", "layers", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "suite.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"grad", "step", "layers"}
    names = {row["case"] for row in sections["grad"]["rows"]}
    assert {"arm", "disarm", "reinforce_loo", "relax"} <= names
    assert [row["layers"] for row in sections["layers"]["rows"]] == [1, 2, 3, 4]
    assert all(row["ratio_to_floor"] > 0 for row in sections["step"]["rows"])
    assert "| linear | arm |" in (tmp_path / "suite.md").read_text()


def test_variance_at_a_trained_checkpoint(tmp_path, monkeypatch):
    from test_vae import tiny_config

    from armgrad.experiments.vae import train

    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))
    config = tiny_config(tmp_path, steps=3, batch_size=10)
    train(config)
    suite.main(["--only", "variance", "--repeats", "1", "--variance-draws", "3", "--batch", "10",
                "--checkpoint", f"{config.out}/checkpoint.pt", "--out", str(tmp_path / "bench")])
    rows = json.loads((tmp_path / "bench" / "suite.json").read_text())["sections"]["variance"]["rows"]
    assert {r["estimator"] for r in rows} == set(suite.VARIANCE_ESTIMATORS)
    for r in rows:
        assert r["grad_var"] > 0 and r["var_x_evaluations"] == r["grad_var"] * r["f_evaluations"]
