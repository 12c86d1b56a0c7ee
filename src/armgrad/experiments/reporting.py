"""What every experiment shares for its output: one logger, a progress bar, files a person opens.

Numbers go to CSV and JSON, curves to PNG (matplotlib, headless), summaries to Markdown.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger("armgrad")


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", disable: bool = False):
    """A tqdm progress bar on stderr (off when stderr is not a terminal, tqdm is missing or ``disable``)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the experiments extra is not installed: no bar, same iteration
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=True if disable else None)  # None: off when not a terminal


class _NoBar:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts as a CSV with a header line: every key that occurs, a blank where one is missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats are shown with 4 significant digits."""

    def cell(x):
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
