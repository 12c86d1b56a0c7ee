"""The tests mirror the code: every module of src/armgrad has a test file of its name (a module covered by a
property suite says so in its own file). A package's ``__init__`` that only re-exports has none; the
estimators' registry, which is more, has test_estimators.py."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REEXPORTS = {"__init__.py", "__main__.py"}  # of armgrad, data, models, experiments: names from their modules


def expected_test_files(src: Path) -> dict[str, str]:
    """Module path -> the test file it needs: ``test_<name>.py`` (leading underscores dropped)."""
    files = {}
    for module in sorted(src.rglob("*.py")):
        relative = module.relative_to(src).as_posix()
        if module.name in REEXPORTS:
            if relative != "estimators/__init__.py":
                continue
            files[relative] = "test_estimators.py"
        else:
            files[relative] = f"test_{module.stem.lstrip('_')}.py"
    return files


def test_every_module_has_its_test_file():
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing = {m: t for m, t in expected_test_files(ROOT / "src" / "armgrad").items() if t not in tests}
    assert not missing, f"modules without a test file of their name: {missing}"


def test_the_layout_check_can_fail(tmp_path):
    (tmp_path / "estimators").mkdir()
    for name in ("__init__.py", "_random.py", "estimators/__init__.py", "estimators/new_family.py"):
        (tmp_path / name).write_text("")
    assert expected_test_files(tmp_path) == {
        "_random.py": "test_random.py",
        "estimators/__init__.py": "test_estimators.py",
        "estimators/new_family.py": "test_new_family.py",
    }
