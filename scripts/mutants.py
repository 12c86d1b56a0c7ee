"""Can the tests fail? Each mutant below is a small wrong change to the library that a test must catch.

    .venv/bin/python scripts/mutants.py            # every mutant, each against its tests (about 10 minutes)
    .venv/bin/python scripts/mutants.py --list     # what they are
    .venv/bin/python scripts/mutants.py vimco ...  # those whose name contains one of the words

Each mutant is applied to a copy of ``src/`` in a temporary folder (the working tree is never touched), and its
tests run with that copy first on the path. A mutant that every one of its tests passes has SURVIVED: a
behaviour no test pins. The exit status is the number of survivors. Every mutant here survived the tests
once, until the test named in its comment was written (docs/testing.md, "Tests that can fail").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    name: str
    path: str  # below src/armgrad
    old: str  # found exactly once
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant(  # test_training: the divergence guard's documented limit
        "divergence limit ten times higher",
        "experiments/training.py",
        "DIVERGED_NATS_PER_PIXEL = 100.0",
        "DIVERGED_NATS_PER_PIXEL = 1000.0",
        ("tests/test_training.py",),
    ),
    Mutant(  # test_report: a reference run lacking a metric
        "paired differences with a reference lacking the metric",
        "experiments/report.py",
        "if runs[s].get(metric) is not None and base[s].get(metric) is not None",
        "if runs[s].get(metric) is not None",
        ("tests/test_report.py",),
    ),
    Mutant(  # test_locks: another user's live process
        "another user's process taken for dead",
        "experiments/locks.py",
        "    except PermissionError:  # another user's live process\n        return True",
        "    except PermissionError:  # another user's live process\n        return False",
        ("tests/test_locks.py",),
    ),
    Mutant(  # test_multisample: VIMCO's baseline with a zero weight among the others
        "vimco geometric mean of the finite weights only",
        "multisample.py",
        "geometric = torch.where(zero_others > 0, -math.inf, geometric)",
        "geometric = geometric",
        ("tests/test_multisample.py",),
    ),
    Mutant(  # test_formats: IDX of every numeric type
        "idx int16 read little-endian",
        "data/formats.py",
        '0x0B: np.dtype(">i2"),',
        '0x0B: np.dtype("<i2"),',
        ("tests/test_formats.py",),
    ),
    Mutant(  # test_formats: trailing bytes
        "idx with bytes beyond its shape accepted",
        "data/formats.py",
        "if len(data) != expected:",
        "if len(data) < expected:",
        ("tests/test_formats.py",),
    ),
    Mutant(  # test_pyro: the mixed case's learned scale
        "pyro drops a reparameterised site's entropy term",
        "pyro.py",
        "if not is_identically_zero(entropy):",
        "if False:",
        ("tests/test_pyro.py", "-k", "Normal and not categorical"),
    ),
    Mutant(  # test_categorical_relaxed: the published backward passes at tau != 1
        "st_gumbel backward without its temperature",
        "estimators/categorical_relaxed.py",
        "soft = softmax(perturbed / tau)",
        "soft = softmax(perturbed)",
        ("tests/test_categorical_relaxed.py",),
    ),
    Mutant(
        "categorical st backward without its temperature",
        "estimators/categorical_relaxed.py",
        "soft = softmax(logits / tau)\n",
        "soft = softmax(logits)\n",
        ("tests/test_categorical_relaxed.py",),
    ),
    Mutant(  # test_categorical_relaxed: conditional Gumbels are Gumbels given their argmax
        "gumbel_rao conditional gumbels truncated too low",
        "estimators/categorical_relaxed.py",
        "others = -torch.logaddexp(log_e - phi, log_e_i - log_z)",
        "others = -torch.logaddexp(log_e - phi, log_e_i - log_z + 0.1)",
        ("tests/test_categorical_relaxed.py",),
    ),
    Mutant(  # test_relaxed: Concrete's gradient at the given noise
        "binary gumbel at another temperature",
        "estimators/relaxed.py",
        "relaxed = torch.sigmoid((logits + torch.logit(noise)) / temperature)",
        "relaxed = torch.sigmoid((logits + torch.logit(noise)) / (1.1 * temperature))",
        ("tests/test_relaxed.py",),
    ),
    Mutant(  # test_relaxed: straight-through's p (1 - p)
        "binary straight-through backward scaled",
        "estimators/relaxed.py",
        "b = hard + (p - p.detach())",
        "b = hard + 0.9 * (p - p.detach())",
        ("tests/test_relaxed.py",),
    ),
)


def run(mutant: Mutant, scratch: Path) -> bool:
    """True if some test caught ``mutant``."""
    src = scratch / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "src", src)
    target = src / "armgrad" / mutant.path
    text = target.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"mutant {mutant.name!r}: {mutant.old!r} is in {mutant.path} {text.count(mutant.old)} times")
    target.write_text(text.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    probe = [sys.executable, "-c", "import armgrad; print(armgrad.__file__)"]
    where = subprocess.run(probe, env=env, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    if not where.startswith(str(src)):
        raise SystemExit(f"the mutated copy was not imported first (armgrad from {where})")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True).returncode != 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="run only the mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and their tests")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.words or any(w in m.name for w in args.words)]
    if not chosen:
        parser.error(f"no mutant's name contains any of {args.words}")
    if args.list:
        for m in chosen:
            print(f"{m.name}: src/armgrad/{m.path} ({' '.join(m.tests)})")
        return 0
    survivors = []
    with tempfile.TemporaryDirectory(prefix="armgrad-mutants-") as scratch:
        for m in chosen:
            caught = run(m, Path(scratch))
            print(f"{'caught  ' if caught else 'SURVIVED'}  {m.name}", flush=True)
            if not caught:
                survivors.append(m.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants caught")
    return len(survivors)


if __name__ == "__main__":
    sys.exit(main())
