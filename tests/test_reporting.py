"""experiments/reporting.py: what the experiments write (strict JSON, CSV, Markdown), written atomically."""

from __future__ import annotations

import json
import math

from armgrad.experiments.reporting import json_safe, markdown_table, write_csv, write_json


def test_nan_is_null_and_an_infinity_is_named():
    data = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": "text"}
    assert json_safe(data) == {"a": None, "b": ["inf", "-inf", 1.5], "c": "text"}


def test_json_and_csv_files(tmp_path):
    write_json(tmp_path / "r.json", {"x": math.nan, "y": 2.0})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": None, "y": 2.0}
    write_csv(tmp_path / "m.csv", [{"step": 1, "elbo": -3.5}, {"step": 2, "elbo": math.nan, "var": None, "late": 7}])
    assert (tmp_path / "m.csv").read_text().splitlines() == ["step,elbo,var,late", "1,-3.5,,", "2,,,7"]
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_markdown_table():
    assert (
        markdown_table(["a", "b"], [[1, 0.123456], ["x", 2.0]]) == "| a | b |\n|---|---|\n| 1 | 0.1235 |\n| x | 2 |\n"
    )
