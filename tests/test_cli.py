"""The command line as a user meets it: errors without tracebacks, validated flags, run folders that are
never overwritten silently, honest files (no NaN in JSON, empty cells for what was not computed, the
user's file mode), progress lines and a short summary."""

import json
import os
import stat
import subprocess
import sys

import pytest

from armgrad import cli

from test_data import write_mnist


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    return str(tmp_path / "data")


def tiny(data, out, *extra):
    return [
        "vae",
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--test-samples",
        "3",
        "--grad-var-draws",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def fails(argv, capsys, status, match):
    """``armgrad argv`` exits with ``status`` and one error line naming the problem, no traceback."""
    with pytest.raises(SystemExit) as raised:
        code = cli.main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert raised.value.code == status, err
    assert "Traceback" not in err
    assert f"armgrad {argv[0]}: error:" in err and match in err, err
    return err


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--steps", "-3"], "argument --steps: expected a positive integer, got -3"),
        (["--steps", "0"], "argument --steps: expected a positive integer, got 0"),
        (["--eval-every", "0"], "argument --eval-every: expected a positive integer"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (["--lr", "0"], "argument --lr: expected a number > 0"),
        (["--lr", "fast"], "argument --lr: expected a number > 0, got 'fast'"),
        (["--test-samples", "0"], "argument --test-samples: expected a positive integer"),
        (["--grad-var-draws", "1"], "argument --grad-var-draws: expected an integer >= 2"),
        (["--threads", "0"], "argument --threads: expected a positive integer"),
        (["--estimator", "armm"], "unknown estimator 'armm'. Did you mean 'arm'?"),
        (
            ["--estimator", "arm", "--num-samples", "3"],
            "--num-samples 3: estimator 'arm' spends its budget in antithetic pairs: num_samples must be even",
        ),
        (["--estimator", "exact"], "--estimator exact enumerates 2^D states"),
        (["--resume", "--overwrite"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path, capsys, flags, match):
    fails(["vae", "--out", str(tmp_path / "run"), *flags], capsys, 2, match)
    assert not (tmp_path / "run").exists()  # nothing was started, no empty run folder


def test_missing_data_is_a_failure_with_a_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = fails(
        ["vae", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")],
        capsys,
        1,
        "file train-images-idx3-ubyte not found",
    )
    assert "--data-dir" in err


def test_a_data_folder_that_does_not_exist_is_refused_not_replaced_by_the_system_copy(tmp_path, capsys):
    fails(
        [
            "vae",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path / "no-such-folder"),
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
        2,
        "is not an existing folder",
    )
    assert not (tmp_path / "r").exists()
    from armgrad.data import load_dataset

    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        load_dataset("fashion-mnist", tmp_path / "no-such-folder")


def test_results_record_where_the_data_came_from(data, tmp_path):
    import gzip
    import hashlib
    from pathlib import Path

    assert cli.main(tiny(data, tmp_path / "r")) == 0
    files = json.loads((tmp_path / "r" / "results.json").read_text())["data_files"]
    assert len(files) == 4 and all(Path(p).is_file() and Path(p).is_relative_to(Path(data).resolve()) for p in files)
    for path, digest in files.items():
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest


@pytest.mark.parametrize("flag", [["--out", ""], ["--out", "  "]])
def test_an_empty_output_folder_is_refused(tmp_path, capsys, flag):
    fails(["vae", *flag], capsys, 2, "empty path")
    fails(["report", str(tmp_path), *flag], capsys, 2, "empty path")


def test_report_of_nothing(tmp_path, capsys):
    fails(["report", str(tmp_path / "nonexistent")], capsys, 1, "no results.json here or below")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["report", str(tmp_path / "nonexistent"), "--debug"])


@pytest.mark.slow
def test_no_traceback_from_the_installed_command(tmp_path):
    """The real entry point, in a process of its own: the message alone, exit 1."""
    done = subprocess.run(
        [sys.executable, "-m", "armgrad", "report", str(tmp_path / "none")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("armgrad report: error:")


def test_an_existing_run_is_never_overwritten_silently(tmp_path, capsys, data):
    out = tmp_path / "run"
    assert cli.main(tiny(data, out)) == 0
    first = json.loads((out / "results.json").read_text())
    err = fails(tiny(data, out), capsys, 2, f"{out} already holds a run (finished, 4 steps)")
    assert "--resume" in err and "--overwrite" in err
    assert json.loads((out / "results.json").read_text()) == first  # untouched
    # --resume with another configuration: refused before any data is loaded, saying what differs
    fails(tiny(data, out, "--resume", "--lr", "0.01"), capsys, 2, "lr: 0.0001 in the checkpoint, 0.01 now")
    # --resume of the same run: nothing to do but the results again
    assert cli.main(tiny(data, out, "--resume")) == 0
    assert json.loads((out / "results.json").read_text())["test_elbo"] == first["test_elbo"]
    # --overwrite starts again
    capsys.readouterr()
    assert cli.main(tiny(data, out, "--overwrite", "--seed", "1")) == 0
    assert "removed the run" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["seed"] == 1


def test_files_are_honest_and_readable(tmp_path, capsys, data):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert cli.main(tiny(data, out)) == 0
        assert cli.main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    assert "training a linear VAE on mnist with disarm (2 f evaluations per layer and example), 4 steps" in err
    assert "test_bound not computed" in err  # the first evaluation, before the end
    lines = (out / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    first = dict(zip(header, lines[1].split(",")))
    last = dict(zip(header, lines[2].split(",")))
    assert first["test_bound"] == "" and last["test_bound"] != ""  # an empty cell, not "nan"
    assert "nan" not in (out / "metrics.csv").read_text().lower()
    report = (tmp_path / "report" / "report.json").read_text()
    assert "NaN" not in report and json.loads(report)["groups"][0]["test_elbo"]["stderr"] is None  # one seed: null
    for path in [
        out / "results.json",
        out / "checkpoint.pt",
        out / "metrics.csv",
        out / "curves.png",
        tmp_path / "report" / "report.md",
        tmp_path / "report" / "report.json",
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    results = json.loads((out / "results.json").read_text())
    assert {"load_average", "threads", "cpu_count"} <= set(results)


def test_a_missing_plotting_library_never_loses_a_run(tmp_path, capsys, data, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "run"
    assert cli.main(tiny(data, out)) == 0
    assert (out / "results.json").exists() and not (out / "curves.png").exists()
    assert "pip install 'armgrad[experiments]'" in capsys.readouterr().err
    assert cli.main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").exists() and not (tmp_path / "report" / "report.png").exists()


def test_progress_lines_when_not_a_terminal(tmp_path, capsys, data, monkeypatch):
    monkeypatch.setenv("ARMGRAD_PROGRESS_SECONDS", "0")
    assert cli.main(tiny(data, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "linear disarm: 3/4 steps (75%)" in err and "steps/s" in err and "left" in err
    assert "test bound (K=3): 30/30 images" in err  # the final evaluation has its own progress


def test_summary_says_who_came_out_ahead(tmp_path, capsys, data):
    for estimator in ("arm", "disarm"):
        for seed in ("0", "1"):
            assert (
                cli.main(tiny(data, tmp_path / "runs" / f"{estimator}{seed}", "--estimator", estimator, "--seed", seed))
                == 0
            )
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "mnist, linear model, 200 binary latents, elbo, 2 f evaluations per example, 4 steps:" in out
    assert "came out ahead on test elbo" in out and "over 2 paired seeds" in out
    assert f"report: {tmp_path / 'report' / 'report.md'}" in out
    assert "|---|" not in out  # not the raw Markdown: that is --markdown
    assert cli.main(["report", str(tmp_path / "runs"), "--markdown"]) == 0
    assert "|---|" in capsys.readouterr().out


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["vae", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # whatever the terminal's width
    assert "(default: 1000000)" in text and "(default: disarm)" in text and "(default: 0.001)" in text
    assert "--lr LR Adam learning rate of the model (None: the --protocol's) (default: None)" in text
    assert "disarm: batch 50, Adam 1e-4, learned prior" in text


@pytest.mark.slow
def test_study_script_says_what_it_does_and_skips_finished_runs(tmp_path, data):
    """scripts/study.sh: one line per run with its log, skipped finished runs, then the summary."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / ".venv" / "bin" / "armgrad").exists():
        pytest.skip("scripts/study.sh runs .venv/bin/armgrad: set up with scripts/setup.sh")
    env = {
        **os.environ,
        "DATASET": "mnist",
        "MODELS": "linear",
        "ESTIMATORS": "arm disarm",
        "SEEDS": "0",
        "STEPS": "4",
        "EVAL_EVERY": "2",
        "OUT": str(tmp_path / "study"),
        "EXTRA": f"--data-dir {data} --batch-size 8 --test-samples 3 --grad-var-draws 2",
    }
    first = subprocess.run(["bash", "scripts/study.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"[1/2] linear arm seed 0 -> {tmp_path / 'study' / 'linear-arm-seed0'} (log: " in first.stdout
    assert "[2/2] done in" in first.stdout and "came out ahead on test elbo" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr
    again = subprocess.run(["bash", "scripts/study.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert "[1/2] skipped, already finished" in again.stdout and "[2/2] skipped" in again.stdout


def test_protocol_presets_and_what_overrides_them(tmp_path, data):
    from armgrad.experiments.vae import protocol_values

    assert protocol_values("rodeo", "fashion-mnist") == {"batch_size": 100, "lr": 3e-4, "prior_lr": 0.0}
    assert protocol_values("rodeo", "mnist")["lr"] == 1e-3
    out = tmp_path / "run"
    assert cli.main(tiny(data, out, "--protocol", "rodeo")) == 0  # tiny() gives --batch-size 8 explicitly
    results = json.loads((out / "results.json").read_text())
    config = results["config"]
    assert results["protocol"] == "rodeo" and (config["batch_size"], config["lr"], config["prior_lr"]) == (8, 1e-3, 0.0)
    import torch

    prior = torch.load(out / "checkpoint.pt", weights_only=False)["model"]["prior_logits"]
    assert torch.equal(prior, torch.zeros_like(prior))  # the RODEO protocol's prior stays at p = 1/2
    assert cli.main(tiny(data, tmp_path / "disarm")) == 0
    assert json.loads((tmp_path / "disarm" / "results.json").read_text())["config"]["lr"] == 1e-4


def test_resume_cannot_make_a_run_shorter_but_can_make_it_longer(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(tiny(data, out)) == 0  # 4 steps
    before = (out / "results.json").read_text()
    err = fails([*tiny(data, out), "--resume", "--steps", "2"], capsys, 2, "is already at step 4")
    assert "--steps 4 or more" in err
    assert (out / "results.json").read_text() == before  # untouched
    assert cli.main([*tiny(data, out), "--resume", "--steps", "6"]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 6


def test_resume_of_a_finished_run_without_its_checkpoint_is_refused(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(tiny(data, out)) == 0
    (out / "checkpoint.pt").unlink()
    fails([*tiny(data, out), "--resume"], capsys, 2, "no checkpoint.pt: --resume cannot continue it")


@pytest.mark.parametrize("lr", ["1e3", "1e30"])
def test_a_diverged_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(data, tmp_path, capsys, lr):
    import torch

    out = tmp_path / "r"
    args = tiny(data, out, "--lr", lr)
    for flag, value in (("--steps", "600"), ("--checkpoint-every", "100"), ("--eval-every", "100")):
        args[args.index(flag) + 1] = value
    err = fails(args, capsys, 1, "training diverged between steps")
    assert "try a smaller --lr" in err and ("is intact" in err or "no checkpoint had been written yet" in err)
    assert not (out / "results.json").exists()  # a diverged run reports no numbers
    if (out / "checkpoint.pt").exists():  # the last checkpoint written is a good one
        state = torch.load(out / "checkpoint.pt", weights_only=False)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
        assert f"(step {state['step']:,})" in err


def test_json_says_which_values_overflowed_and_which_were_not_computed(tmp_path):
    from armgrad.experiments.reporting import json_safe, write_json

    data = {"grad_var": float("inf"), "low": float("-inf"), "test_bound": float("nan"), "ok": 1.5}
    write_json(tmp_path / "r.json", data)
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "grad_var": "inf",
        "low": "-inf",
        "test_bound": None,
        "ok": 1.5,
    }
    assert json_safe([float("inf")]) == ["inf"]


def test_metrics_csv_is_replaced_whole_never_rewritten_in_place(tmp_path, monkeypatch):
    from armgrad.experiments import reporting

    path = tmp_path / "metrics.csv"
    reporting.write_csv(path, [{"step": 1, "x": 1.0}])
    before = path.read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reporting.os, "replace", disk_full)  # the write fails at its last moment
    with pytest.raises(OSError):
        reporting.write_csv(path, [{"step": 1, "x": 1.0}, {"step": 2, "x": 2.0}])
    assert path.read_text() == before  # the old file whole, not empty or cut mid-row


def test_version_has_one_source(capsys):
    from importlib.metadata import version

    import armgrad

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"armgrad {armgrad.__version__} ")
    assert version("armgrad") == armgrad.__version__
