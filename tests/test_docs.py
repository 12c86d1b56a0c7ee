"""The documentation: the README's and the site's code examples run as written, every public name has
a docstring, and the site builds with warnings as errors (``bash scripts/docs.sh``)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_blocks(path: Path, blocks: list[str]) -> dict:
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{path.relative_to(ROOT)} block {i + 1}", "exec"), namespace)
    return namespace


def test_quickstart_runs():
    blocks = python_blocks(README)
    assert blocks, "the README has no python quickstart"
    namespace = run_blocks(README, blocks[:1])
    assert namespace["logits"].grad.shape == (50, 200)
    assert namespace["g"].shape == (50, 200)
    assert "| arm |" in namespace["report"].table()
    assert namespace["phi"].grad.shape == (50, 20) and namespace["bound"].shape == (50,)


def test_categorical_quickstart_runs():
    block = next(b for b in python_blocks(README) if "from armgrad import categorical" in b)
    namespace = run_blocks(README, [block])
    assert namespace["logits"].grad.shape == (50, 20, 10)
    assert namespace["g"].shape == (50, 20, 10)
    assert namespace["exact_grad"].shape == (3, 2, 4)
    assert "| arsm | yes | 7 |" in namespace["report"].table()  # C(C-1)/2 + 1 = 7 evaluations at C = 4


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_of_the_site_runs(page):
    """Each page's ``python`` blocks in order, in one namespace (a page's later examples may use its earlier ones)."""
    if "import pyro" in page.read_text():
        pytest.importorskip("pyro")
    namespace = run_blocks(page, python_blocks(page))
    if "losses" in namespace:  # the Pyro guide's SVI loop: it trains
        losses = namespace["losses"]
        assert len(losses) == 200 and sum(losses[-20:]) < sum(losses[:20])


# the modules the API reference documents (docs/api.md): every public name in them needs a docstring
PUBLIC_MODULES = (
    "armgrad",
    "armgrad.api",
    "armgrad.categorical",
    "armgrad.network",
    "armgrad.multisample",
    "armgrad.diagnostics",
    "armgrad.families",
    "armgrad.estimators",
    "armgrad.estimators.base",
    "armgrad.pyro",
)


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
    return list(names)


def undocumented(module) -> list[str]:
    missing = []
    for name in public_names(module):
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{module.__name__}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not inspect.isfunction(member):
                    continue
                if not inspect.getdoc(getattr(obj, attr)):  # its own, or the one of the method it overrides
                    missing.append(f"{module.__name__}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring():
    if importlib.util.find_spec("pyro") is None:
        pytest.skip("armgrad.pyro needs pyro")
    missing = [m for name in PUBLIC_MODULES for m in undocumented(importlib.import_module(name))]
    assert not missing, f"public names without a docstring (the API reference would omit them): {missing}"


def test_the_docstring_check_can_fail():
    import types

    module = types.ModuleType("fake")

    def documented():
        """Here."""

    def bare():
        return None

    class Thing:
        """A class."""

        def method(self):
            return None

    module.__all__ = ["documented", "bare", "Thing"]
    module.documented, module.bare, module.Thing = documented, bare, Thing
    assert undocumented(module) == ["fake.bare", "fake.Thing.method"]


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """``mkdocs build --strict``: a broken link, a page missing from the nav or an unreadable docstring fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("armgrad.api.estimate", "armgrad.categorical.estimate", "armgrad.network.chain_estimate"):
        assert f'id="{name}"' in api, name
