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
