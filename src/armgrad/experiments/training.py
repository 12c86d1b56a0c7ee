"""What every training run shares: checkpoints that resume exactly, a metrics log, a results file.

A run folder holds ``checkpoint.pt`` (written atomically: a temporary file, then a rename, so a run
killed at any moment leaves the previous checkpoint intact), ``metrics.csv`` (one row per
evaluation), ``results.json`` (the final numbers) and the figures. Resuming restores the model,
the optimisers, the estimator's control parameters, the random generator, the step counter, the
elapsed seconds and the metrics so far; since every random draw of the training stream comes from
that one generator, a resumed run ends exactly as an uninterrupted one with the same seed would.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from .reporting import log, write_csv


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save(state)`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class RunLog:
    """Metrics rows, elapsed time and the checkpoint of one run."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.seconds = 0.0
        self._started = time.perf_counter()

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    def record(self, row: dict) -> None:
        self.rows.append(row)
        write_csv(self.out / "metrics.csv", self.rows)
        log.info("step %d: %s", row["step"], ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                        if k != "step" and isinstance(v, float)))

    def save(self, step: int, state: dict) -> None:
        save_checkpoint(self.checkpoint_path, {**state, "step": step, "seconds": self.elapsed(), "rows": self.rows})

    def resume(self) -> dict | None:
        """The saved state, with the log's rows and clock restored; ``None`` if there is none."""
        if not self.checkpoint_path.exists():
            return None
        state = load_checkpoint(self.checkpoint_path)
        self.rows = state["rows"]
        self.seconds = state["seconds"]
        self._started = time.perf_counter()
        log.info("resuming %s from step %d", self.out, state["step"])
        return state


def estimator_state(estimators: list) -> list:
    """State dicts of the estimators that carry trainable controls (``None`` for the others)."""
    return [e.state_dict() if isinstance(e, torch.nn.Module) else None for e in estimators]


def load_estimator_state(estimators: list, states: list) -> None:
    for estimator, state in zip(estimators, states):
        if state is not None:
            estimator.load_state_dict(state)
