"""scripts/mutants.py, the check that the tests can fail: it tells a caught mutant from a surviving one, never
touches the working tree, and every mutant it lists still applies to the code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mutants  # noqa: E402


def test_every_mutant_applies_to_the_code_as_it_is():
    for m in mutants.MUTANTS:
        text = (ROOT / "src" / "armgrad" / m.path).read_text()
        assert text.count(m.old) == 1, f"{m.name}: {m.old!r} no longer appears once in {m.path}"
        assert m.new != m.old and all((ROOT / t).exists() for t in m.tests if t.startswith("tests/"))


@pytest.mark.slow
def test_a_caught_mutant_and_a_surviving_one_are_told_apart(tmp_path):
    before = (ROOT / "src" / "armgrad" / "data" / "formats.py").read_text()
    (trailing,) = [m for m in mutants.MUTANTS if m.name == "idx with bytes beyond its shape accepted"]
    assert mutants.run(trailing, tmp_path)
    harmless = trailing._replace(old="is not an IDX file: its header is", new="is not an IDX file; its header is")
    assert not mutants.run(harmless, tmp_path)  # a wording no test pins: it survives, and is reported so
    assert (ROOT / "src" / "armgrad" / "data" / "formats.py").read_text() == before
