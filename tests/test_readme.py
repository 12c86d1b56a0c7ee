"""The README's quickstart runs as written."""

import re
from pathlib import Path

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
