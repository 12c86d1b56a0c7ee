"""The README's quickstart runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python quickstart"
    namespace = {}
    exec(compile(blocks[0], "README quickstart", "exec"), namespace)
    assert namespace["logits"].grad.shape == (50, 200)
    assert namespace["g"].shape == (50, 200)
    assert "| arm |" in namespace["report"].table()
    assert namespace["phi"].grad.shape == (50, 20) and namespace["bound"].shape == (50,)


def test_pyro_quickstart_runs():
    pytest.importorskip("pyro")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    pyro_block = next(b for b in blocks if "armgrad.pyro" in b)
    namespace = {}
    exec(compile(pyro_block, "README Pyro quickstart", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) == 200 and sum(losses[-20:]) < sum(losses[:20])  # it trains


def test_categorical_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "from armgrad import categorical" in b)
    namespace = {}
    exec(compile(block, "README categorical quickstart", "exec"), namespace)
    assert namespace["logits"].grad.shape == (50, 20, 10)
    assert namespace["g"].shape == (50, 20, 10)
    assert namespace["exact_grad"].shape == (3, 2, 4)
    assert "| arsm | yes | 7 |" in namespace["report"].table()  # C(C-1)/2 + 1 = 7 evaluations at C = 4
