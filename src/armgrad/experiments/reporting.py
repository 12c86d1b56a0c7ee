"""What every experiment shares for its output: one logger, a progress bar, files a person opens.

Numbers go to CSV and JSON, curves to PNG (matplotlib, headless), summaries to Markdown.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("armgrad")


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str | None = "",
    disable: bool = False,
    unit: str = "step",
    every: float | None = None,
    initial: int = 0,
):
    """Progress on stderr: a tqdm bar on a terminal, else a plain line every ``every`` seconds.

    The plain line (``desc: 1500/3000 steps (50%), 150 steps/s, 10 s left, train_elbo -300.1``)
    is what a log file or a pipe gets; ``ARMGRAD_PROGRESS_SECONDS`` sets its interval (default 30).
    Nothing with ``disable`` (the other processes of a multi-process run). ``initial``: the count
    already done (a resumed run's step); rates count from there.
    """
    if disable:
        return _NoBar(iterable)
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, unit=unit, initial=initial)
        except ImportError:  # the experiments extra is not installed: plain lines
            pass
    every = float(os.environ.get("ARMGRAD_PROGRESS_SECONDS", 30)) if every is None else every
    return _PlainProgress(iterable, total, desc, unit, every, initial)


class _NoBar:
    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


class _PlainProgress(_NoBar):
    """A periodic log line with the count, the rate, the time left and the postfix."""

    def __init__(self, iterable, total, desc, unit, every, initial=0):
        super().__init__(iterable)
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.postfix = initial, {}
        self._first = (initial, time.perf_counter())
        self._last = self._first[1]

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n=1):
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            log.info("%s", self.line(now))

    def set_postfix(self, values=None, **kwargs):
        self.postfix = {**(values or {}), **kwargs}

    def line(self, now: float) -> str:
        done, started = self._first
        rate = (self.n - done) / max(now - started, 1e-9)
        text = f"{self.desc}: {self.n:,}"
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            text += (
                f"/{self.total:,} {self.unit}s ({100 * self.n / self.total:.0f}%), {rate:.3g} {self.unit}s/s, "
                f"{_duration(left)} left"
            )
        else:
            text += f" {self.unit}s, {rate:.3g} {self.unit}s/s"
        return text + "".join(f", {k} {v}" for k, v in self.postfix.items())


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def user_mode(path) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the mode of any file a user creates (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        user_mode(tmp)
        os.replace(tmp, path)
    except BaseException as error:  # a full disk, Ctrl-C, SIGTERM: no temporary left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError) and storage_full(error, path.parent):
            raise StorageFullError(
                f"the disk holding {path.parent} is full: could not write {path.name} "
                f"(the previous {path.name}, if any, is intact); free some space and run the same "
                f"command with --resume"
            ) from error
        raise


class StorageFullError(OSError):
    """A run file could not be written: the disk (or the user's file-size or quota limit) is full."""


def storage_full(error: BaseException, folder) -> bool:
    """Whether ``error`` (an ``OSError``, or torch's ``RuntimeError`` from a failed write) means no space."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    if isinstance(error, RuntimeError):  # torch.save's writer reports a short write as an "enforce fail"
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < 64 * 2**20 or _over_file_size_limit()
    return False


def _over_file_size_limit() -> bool:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


def json_safe(data):
    """``data`` as strict JSON can hold it: nan (what was not computed) becomes ``None`` (``null``), and an
    infinity, which was computed and overflowed, the string ``"inf"`` or ``"-inf"``, so the two never read alike."""
    if isinstance(data, float):
        if math.isnan(data):
            return None
        return data if math.isfinite(data) else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: Path, data) -> None:
    """``data`` as strict JSON (nan -> null), written atomically."""
    write_atomic(path, json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts as a CSV with a header line: every key that occurs, a blank where one is missing
    or was not computed (``None`` or nan)."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(
        [
            {k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()}
            for row in rows
        ]
    )
    write_atomic(path, text.getvalue())  # never a file cut mid-row, even on a full disk


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; floats are shown with 4 significant digits."""

    def cell(x):
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pyplot(required: bool = True):
    """matplotlib's pyplot on the headless Agg backend.

    Missing matplotlib raises an error that names the extra to install; with ``required=False`` it
    logs a warning and returns ``None`` (the caller skips its figure: results are never lost to it).
    """
    try:
        import matplotlib
    except ImportError:
        message = "matplotlib is not installed: pip install 'armgrad[experiments]' for the figures"
        if required:
            raise ModuleNotFoundError(message) from None
        log.warning("%s; figure skipped", message)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
