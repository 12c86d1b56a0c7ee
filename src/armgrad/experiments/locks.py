"""One process per run folder: a lock file naming its holder, released on every exit path.

``hold(folders)`` creates ``FOLDER/.lock`` (with ``O_EXCL``: two processes can never both create it)
holding the holder's pid, host and command, for each folder, and removes them when the ``with``
block ends, however it ends (an error, Ctrl-C, SIGTERM turned into an exception). A lock left by a
process that no longer runs (killed with SIGKILL, a crashed machine on the same host) is recognised
and taken over; a live holder, or one on another host whose liveness cannot be checked, is refused
with a message naming it. While the lock is held, the holder also removes the temporaries a dead
writer left in the folder (``.checkpoint.*``, ``.metrics.csv.*``, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from .training import ConfigurationError

LOCK = ".lock"
TEMPORARY_PREFIXES = (".checkpoint.", ".metrics.csv.", ".results.json.", ".report.md.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def acquire(folder) -> Path:
    """Create ``folder/.lock`` for this process, taking over a dead holder's; refuse a live one's."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"--out {folder} is an existing file, not a folder: give a folder for the run")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the run folder {folder} ({error.strerror or error}): give a "
            f"folder you can write to with --out"
        ) from None
    path = folder / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv[:8]),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # being written this very moment, or damaged: look again, then treat as stale
                time.sleep(0.05)
                holder = _holder(path) or {}
            same_host = holder.get("host") == me["host"]
            if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]) or not holder:
                path.unlink(missing_ok=True)  # a dead holder's lock (or an empty one): take it over
                continue
            where = "this host" if same_host else f"host {holder.get('host')}"
            raise ConfigurationError(
                f"{folder} is in use by process {holder.get('pid')} on {where} since {holder.get('since')} "
                f"({holder.get('command', '?')}): one process per run folder. Wait for it, use another --out, or, "
                f"if that process is gone, delete {path}"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(me))
        remove_temporaries(folder)
        return path
    raise ConfigurationError(f"could not take the lock {path}: other processes keep taking it")


def release(path: Path) -> None:
    holder = _holder(path)
    if holder is not None and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def remove_temporaries(folder) -> None:
    """Remove the half-written files a dead writer left (the lock's holder is the only writer)."""
    for entry in Path(folder).iterdir():
        if entry.is_file() and entry.name.startswith(TEMPORARY_PREFIXES):
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(folders):
    """Hold the lock of every folder (in a sorted order, so two studies never wait on each other)."""
    held = []
    try:
        for folder in sorted({str(Path(f).resolve()) for f in folders}):
            held.append(acquire(folder))
        yield
    finally:
        for path in reversed(held):
            release(path)
