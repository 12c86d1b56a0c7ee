"""experiments/locks.py: one process per run folder; stale locks taken over (the refusal of a second command
end to end, and SIGTERM, are in test_faults.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from armgrad import cli
from armgrad.experiments import locks
from armgrad.experiments.training import ConfigurationError

from test_cli import tiny


def test_a_stale_lock_is_taken_over_and_the_dead_writers_temporaries_removed(mnist_dir, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / locks.LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    (out / ".checkpoint.abc123").write_bytes(b"half a checkpoint")
    (out / ".metrics.csv.xyz").write_text("step,x\n1,")
    assert cli.main(tiny(mnist_dir, out)) == 0
    assert not (out / locks.LOCK).exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_lock_held_on_another_host_or_by_a_live_process_is_refused(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / locks.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "today", "command": "x"}))
    with pytest.raises(ConfigurationError, match="in use by process 1 on host elsewhere"):
        locks.acquire(folder)
    (folder / locks.LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(ConfigurationError, match=f"in use by process {os.getpid()} on this host"):
        with locks.hold([folder]):
            raise AssertionError("the lock of a live holder was granted")  # not reached: hold() refuses
    assert (folder / locks.LOCK).exists()  # not ours: left alone


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    def kill(pid, signal):  # what os.kill(pid, 0) raises for a live process this user may not signal
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(locks.os, "kill", kill)
    assert locks._alive(12345)
    monkeypatch.setattr(locks.os, "kill", lambda pid, signal: (_ for _ in ()).throw(ProcessLookupError()))
    assert not locks._alive(12345)
