"""No silent wrong result, no lost run: what a careful but unlucky user meets (issue 22).

Two processes on one run folder, a stale lock, SIGTERM, a full disk (a file-size limit), damaged
checkpoints and data files, a read-only or misnamed output folder, another command's checkpoint,
temporaries left by a dead writer, and ARMS at a budget where float32 used to lose its copula.
Each test fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import armgrad
from armgrad import cli
from armgrad.experiments import locks
from armgrad.experiments.training import ConfigurationError

from test_cli import fails, tiny
from test_data import write_mnist

pytestmark = pytest.mark.usefixtures("isolated_cache")


def command(mnist_dir, out, *extra, steps="100000"):
    args = tiny(mnist_dir, out, *extra)
    args[args.index("--steps") + 1] = steps
    args[args.index("--checkpoint-every") + 1] = "50"
    args[args.index("--eval-every") + 1] = "100000"
    return [sys.executable, "-m", "armgrad", *args]


def wait_for(path, seconds=60):
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


# ---- one process per run folder ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_and_sigterm_stops_the_first_cleanly(mnist_dir, tmp_path):
    out = tmp_path / "r"
    first = subprocess.Popen(command(mnist_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "checkpoint.pt")
        holder = json.loads((out / locks.LOCK).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        for extra in ([], ["--resume"], ["--estimator", "arm", "--overwrite"]):
            second = subprocess.run(command(mnist_dir, out, *extra), capture_output=True, text=True)
            assert second.returncode == 2, second.stderr
            assert f"in use by process {first.pid} on this host" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err
    assert "terminated (SIGTERM; a run continues from its last checkpoint with --resume)" in err
    assert "Traceback" not in err
    assert not (out / locks.LOCK).exists()  # released
    assert not [p for p in out.iterdir() if p.name.startswith(".checkpoint.")]  # no temporary left
    reached = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    resumed = subprocess.run(
        command(mnist_dir, out, "--resume", steps=str(reached + 20)), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr


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


def study_args(mnist_dir, out, *extra) -> list:
    """`armgrad study` of DisARM and ARM for 2 steps on the small MNIST files, into ``out``."""
    flags = "--dataset mnist --steps 2 --batch-size 8 --test-samples 3 --grad-var-draws 2 --estimator disarm arm"
    return ["study", "--data-dir", mnist_dir, *flags.split(), *extra, "--out", str(out)]


def test_a_study_holds_every_run_folder(mnist_dir, tmp_path, capsys):
    study = study_args(mnist_dir, tmp_path / "s")
    held = tmp_path / "s" / "linear-arm-seed0"
    held.mkdir(parents=True)
    (held / locks.LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    fails(study, capsys, 2, "linear-arm-seed0 is in use by process")
    assert not (tmp_path / "s" / "linear-disarm-seed0" / locks.LOCK).exists()  # what it took, it gave back
    (held / locks.LOCK).unlink()
    assert cli.main(study) == 0


# ---- files: temporaries, a full disk, damaged files ------------------------------------------------------


def test_a_failed_checkpoint_write_leaves_no_temporary_and_the_previous_checkpoint(tmp_path, monkeypatch):
    from armgrad.experiments import training
    from armgrad.experiments.reporting import StorageFullError

    path = tmp_path / "checkpoint.pt"
    training.save_checkpoint(path, {"step": 1, "config": {}, "model": {}})

    def full(state, target):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.torch, "save", full)
    with pytest.raises(
        StorageFullError,
        match="is full: the checkpoint of step 2 could not be written; the previous checkpoint is intact",
    ):
        training.save_checkpoint(path, {"step": 2, "config": {}, "model": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert training.load_checkpoint(path)["step"] == 1


@pytest.mark.slow
def test_a_full_disk_is_named_as_such_from_the_command_line(mnist_dir, tmp_path):
    """A file-size limit (what a full disk looks like to a user who is not root): the first checkpoint
    cannot be written; one line says so, nothing half-written is left."""
    out = tmp_path / "r"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # noqa: E731
    done = subprocess.run(command(mnist_dir, out, steps="60"), capture_output=True, text=True, preexec_fn=limit)
    assert done.returncode == 1, done.stderr
    assert "is full: the checkpoint of step 50 could not be written; the previous checkpoint is intact" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary, no lock


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(mnist_dir, tmp_path, capsys, damage):
    out = tmp_path / "r"
    assert cli.main(tiny(mnist_dir, out)) == 0
    path = out / "checkpoint.pt"
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "random": os.urandom(5000), "empty": b""}[damage])
    err = fails(
        [*tiny(mnist_dir, out), "--resume", "--steps", "6"],
        capsys,
        1,
        f"{path} is damaged or not an armgrad checkpoint",
    )
    assert "delete it" in err and "internal error" not in err


def test_another_commands_checkpoint_is_refused(mnist_dir, tmp_path, capsys):
    out = tmp_path / "r"
    flags = "--dataset mnist-threshold --steps 2 --batch-size 8 --eval-every 2 --checkpoint-every 2"
    sbn = [
        "sbn",
        "--data-dir",
        mnist_dir,
        *flags.split(),
        "--test-samples",
        "2",
        "--eval-samples",
        "2",
        "--out",
        str(out),
    ]
    assert cli.main(sbn) == 0
    fails([*tiny(mnist_dir, out), "--resume"], capsys, 2, "is the checkpoint of another kind of run")


def test_an_output_that_is_a_file_or_cannot_be_written_is_refused_before_training(
    mnist_dir, tmp_path, capsys, monkeypatch
):
    (tmp_path / "file").write_text("not a folder")
    fails(tiny(mnist_dir, tmp_path / "file"), capsys, 2, "is an existing file, not a folder")
    from armgrad.experiments import training

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(training.tempfile, "mkstemp", read_only)
    fails(tiny(mnist_dir, tmp_path / "ro"), capsys, 2, "cannot write into")
    assert not (tmp_path / "ro" / "metrics.csv").exists()


def test_a_truncated_data_file_is_named(tmp_path, capsys):
    folder = tmp_path / "data"
    write_mnist(folder, n_train=120, n_test=30)  # gzip-compressed IDX files
    victim = folder / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:300])
    err = fails(tiny(str(folder), tmp_path / "r"), capsys, 1, f"{victim} is damaged")
    assert "fetch it again" in err and "internal error" not in err


# ---- numbers -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_arms_in_float32_at_ten_million_draws_is_float64s_estimate():
    """The Dirichlet copula's (1 - d)^(n-1) and J(m) lost float32's precision from about 1e5 draws (the value
    2.96 against an exact 3.12 here); on the same uniforms float32 now gives float64's numbers."""
    phi = torch.tensor([[0.4, -1.0]], dtype=torch.float64)
    f = lambda b: (b[..., 0] * 2 + b[..., 1] - 0.3) ** 2 + b[..., 0]  # noqa: E731
    n = 10**7
    u = armgrad.ESTIMATORS["arms"].draw_noise(n, phi, torch.Generator().manual_seed(0)).clamp(1e-30, 1 - 1e-7)
    value32 = armgrad.estimate(f, phi.float(), "arms", n, noise=u.float())
    grad32 = armgrad.grad(f, phi.float(), "arms", n, noise=u.float())
    value64 = armgrad.estimate(f, phi, "arms", n, noise=u)
    grad64 = armgrad.grad(f, phi, "arms", n, noise=u)
    torch.testing.assert_close(value32.double(), value64, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-5)
    exact_value, exact_grad = armgrad.exact(f, phi)
    torch.testing.assert_close(value32.double(), exact_value, rtol=2e-3, atol=0)
    torch.testing.assert_close(grad32.double(), exact_grad, rtol=0, atol=5e-3)


# ---- the report: each run once, a damaged run skipped and said ----------------------------------------------


@pytest.fixture
def study(mnist_dir, tmp_path):
    """Two estimators x two seeds of 2 steps, as `armgrad study` writes them."""
    out = tmp_path / "s"
    assert cli.main(study_args(mnist_dir, out, "--eval-every", "1", "--seed", "0", "1")) == 0
    return out


def test_a_run_reached_twice_or_copied_counts_once(study, tmp_path, capsys):
    import shutil

    from armgrad.experiments.report import load_runs, summary, write_report

    shutil.copytree(study / "linear-arm-seed0", study / "copy-of-arm-seed0")
    loaded = load_runs([study, study / "linear-arm-seed1"])
    assert len(loaded.results) == 4
    assert [d[0] for d in loaded.duplicates] == [str(study / "linear-arm-seed0")] or [
        d[0] for d in loaded.duplicates
    ] == [str(study / "copy-of-arm-seed0")]
    text = write_report([study, study / "linear-arm-seed1"])
    assert "| arm | 2 | 2 |" in text and "is the same run as" in text  # 2 seeds, not 3 (or 4)
    short = summary([study, study / "linear-arm-seed1"])
    rows = [line.split() for line in short.splitlines() if line.strip().split()[:1] in (["arm"], ["disarm"])]
    assert [row[1] for row in rows if "came" not in row] == ["2", "2"]
    assert "is the same run as" in short


@pytest.mark.parametrize(
    "damage,why",
    [
        ("results.json:{not json", "is not readable JSON"),
        ("results.json:", "is not readable JSON"),
        ("results.json:[1, 2]", "is not an armgrad results file"),
        ('results.json:{"estimator": "arm", "steps": 2, "test_elbo": "high"}', "test_elbo is 'high', not a number"),
        ("metrics.csv:step,train_elbo\n1,-500.0\n2", "metrics.csv is missing or damaged"),
    ],
)
@pytest.mark.slow
def test_a_damaged_run_is_skipped_named_and_the_others_reported(study, capsys, damage, why):
    name, content = damage.split(":", 1)
    (study / "linear-disarm-seed1" / name).write_text(content)
    assert cli.main(["report", str(study)]) == 1
    captured = capsys.readouterr()
    assert why in captured.err and "1 run(s) skipped" in captured.err and "Traceback" not in captured.err
    assert "disarm" in captured.out and "arm" in captured.out  # the others' report
    assert "Skipped:" in captured.out


def test_a_requeued_submitit_job_resumes_its_batch(mnist_dir, tmp_path):
    """SLURM's preemption or time limit: submitit calls the job's checkpoint(), whose resubmission
    continues the same runs from their checkpoints."""
    from armgrad.experiments.study import BatchJob, study_configs

    from test_study import config

    configs = study_configs(config(mnist_dir, tmp_path), ["linear"], ["disarm"], [0], tmp_path / "s")
    job = BatchJob()
    again = job.checkpoint(configs, False, 1)
    assert again.args == (configs, True, 1) and isinstance(again.function, BatchJob)
    assert again.function(*again.args)[0]["steps"] == configs[0].steps  # it runs (from step 0: no checkpoint yet)
