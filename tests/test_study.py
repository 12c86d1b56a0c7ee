"""Many runs in one process (armgrad study): each run trains what it trains alone, resumes exactly,
and writes the folder an alone run writes.

The tests of ``experiments/study.py`` and of what runs side by side need: ``models/stacked.py`` (the
stacked parameters), ``experiments/mixture.py`` (each run's estimator) and ``_random.RunGenerators``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from armgrad.experiments.study import batches, run_study, study_configs
from armgrad.experiments.training import ConfigurationError
from armgrad.experiments.vae import VAEConfig, check_runs, train, train_runs

from test_data import write_mnist

ESTIMATORS = ["disarm", "arm", "reinforce_loo"]  # one batch: each run its own estimator


@pytest.fixture(autouse=True)
def one_thread():
    """Runs side by side match runs alone to float rounding only when each product sums in one thread: with
    two, torch splits a batched product and a single one differently (these tests passed or failed by
    which test ran before them and left torch at one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))
    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    return tmp_path / "data"


def config(data, out, **overrides) -> VAEConfig:
    base = dict(
        dataset="mnist",
        data_dir=str(data),
        steps=6,
        batch_size=8,
        eval_every=3,
        checkpoint_every=3,
        test_samples=3,
        grad_var_draws=2,
        model="linear",
        out=str(out),
    )
    return VAEConfig(**{**base, **overrides})


def runs(data, folder, **overrides) -> list:
    return [config(data, folder / f"{e}-{s}", estimator=e, seed=s, **overrides) for s, e in enumerate(ESTIMATORS)]


def load(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)


def assert_same_run(a, b, atol, rtol=0.0, optimizer=True):
    """The same run: parameters within ``atol`` (0: identical), the same random streams and rows."""
    for key in a["model"]:
        torch.testing.assert_close(
            a["model"][key], b["model"][key], rtol=rtol, atol=atol, msg=lambda m, key=key: f"{key}: {m}"
        )
    if optimizer:
        for index, state in a["optimizers"]["model"]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    state[key],
                    b["optimizers"]["model"]["state"][index][key],
                    rtol=rtol,
                    atol=atol,
                    msg=lambda m, key=key: f"{key}: {m}",
                )
    assert torch.equal(a["data_gen"], b["data_gen"]) and torch.equal(a["noise_gens"][0], b["noise_gens"][0])
    assert a["step"] == b["step"] and len(a["rows"]) == len(b["rows"])


@pytest.mark.slow
def test_runs_in_a_batch_train_what_they_train_alone_after_1000_steps(data, tmp_path):
    """After 1,000 steps of the linear VAE (batch 8) a run of the batch matches the run alone: its
    parameters within 1e-7 while every Bernoulli draw agrees (relative 1e-5 for Adam's moments); the batched
    products sum in another order, and once in a while a draw ``u < s(phi)`` lands on the other side of the
    threshold, after which the two runs differ by one sample's worth (here 6e-4 in one prior logit of one run). The
    test allows 2e-3 and checks the first 20 steps to 1e-6; the random streams are the same."""
    short = train_runs(runs(data, tmp_path / "short", steps=20, eval_every=20, checkpoint_every=20))
    batch = train_runs(runs(data, tmp_path / "batch", steps=1000, eval_every=500, checkpoint_every=500))
    for s, estimator in enumerate(ESTIMATORS):
        name = f"{estimator}-{s}"
        train(
            config(
                data,
                tmp_path / f"short-{name}",
                estimator=estimator,
                seed=s,
                steps=20,
                eval_every=20,
                checkpoint_every=20,
            )
        )
        assert_same_run(load(tmp_path / f"short-{name}"), load(tmp_path / "short" / name), atol=1e-6, rtol=1e-5)
        alone = train(
            config(
                data,
                tmp_path / f"alone-{name}",
                estimator=estimator,
                seed=s,
                steps=1000,
                eval_every=500,
                checkpoint_every=500,
            )
        )
        assert_same_run(load(tmp_path / f"alone-{name}"), load(tmp_path / "batch" / name), atol=2e-3, optimizer=False)
        assert batch[s]["train_elbo"] == pytest.approx(alone["train_elbo"], abs=1e-2)
        assert batch[s]["test_elbo"] == pytest.approx(alone["test_elbo"], abs=1e-2)
        assert batch[s]["runs_in_process"] == 3 and alone["runs_in_process"] == 1
        assert short[s]["test_elbo"] == pytest.approx(-590, abs=20)  # a trained model's numbers, not nan
    # and each run's folder is an alone run's folder
    folder = tmp_path / "batch" / "arm-1"
    assert {"checkpoint.pt", "metrics.csv", "results.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "results.json").read_text())["config"]["estimator"] == "arm"


@pytest.mark.slow
def test_a_batch_resumes_exactly_and_alone_runs_resume_its_checkpoints(data, tmp_path):
    whole = train_runs(runs(data, tmp_path / "whole"))
    train_runs(runs(data, tmp_path / "cut", steps=3))  # "killed" after the checkpoint at step 3
    resumed = train_runs(runs(data, tmp_path / "cut"), resume=True)
    for s, estimator in enumerate(ESTIMATORS):
        name = f"{estimator}-{s}"
        assert_same_run(load(tmp_path / "whole" / name), load(tmp_path / "cut" / name), atol=0)
        assert resumed[s]["test_elbo"] == whole[s]["test_elbo"]
    # one run alone through the engine (no run axis) resumes exactly too
    train_runs(runs(data, tmp_path / "one-whole")[:1])
    train_runs(runs(data, tmp_path / "one-cut", steps=3)[:1])
    train_runs(runs(data, tmp_path / "one-cut")[:1], resume=True)
    assert_same_run(load(tmp_path / "one-whole" / "disarm-0"), load(tmp_path / "one-cut" / "disarm-0"), atol=0)
    # a run of the batch continued alone, from the batch's checkpoint at step 3
    train_runs(runs(data, tmp_path / "mixed", steps=3))
    train(config(data, tmp_path / "mixed" / "arm-1", estimator="arm", seed=1), resume=True)
    assert_same_run(load(tmp_path / "whole" / "arm-1"), load(tmp_path / "mixed" / "arm-1"), atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_runs_whose_checkpoints_lag_catch_up_first(data, tmp_path):
    """Killed between the runs' checkpoints: the runs behind train up to the others, then all go on."""
    train_runs(runs(data, tmp_path / "lag", steps=3))
    train_runs(runs(data, tmp_path / "lag", steps=6, checkpoint_every=6)[:1], resume=True, stop_at=6)
    assert load(tmp_path / "lag" / "disarm-0")["step"] == 6 and load(tmp_path / "lag" / "arm-1")["step"] == 3
    train_runs(runs(data, tmp_path / "lag", steps=9), resume=True)
    train_runs(runs(data, tmp_path / "straight", steps=9))
    for s, estimator in enumerate(ESTIMATORS):
        name = f"{estimator}-{s}"
        assert_same_run(load(tmp_path / "straight" / name), load(tmp_path / "lag" / name), atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_a_killed_study_resumes_to_the_same_result(data, tmp_path):
    """SIGKILL in the middle of `armgrad study`, then the same command with --resume."""

    def command(out, steps, *extra):
        return [
            sys.executable,
            "-m",
            "armgrad",
            "study",
            "--dataset",
            "mnist",
            "--data-dir",
            str(data),
            "--estimator",
            "disarm",
            "reinforce_loo",
            "--seed",
            "0",
            "1",
            "--steps",
            str(steps),
            "--eval-every",
            "100",
            "--checkpoint-every",
            "100",
            "--batch-size",
            "8",
            "--test-samples",
            "3",
            "--grad-var-draws",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
            *extra,
        ]

    env = {**os.environ, "ARMGRAD_PROGRESS_SECONDS": "0.1"}
    proc = subprocess.Popen(
        command(tmp_path / "killed", 800), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 120
    while (
        not (tmp_path / "killed" / "linear-reinforce_loo-seed1" / "checkpoint.pt").exists() and time.time() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "linear-disarm-seed0" / "results.json").exists(), "killed too late"
    done = subprocess.run(command(tmp_path / "killed", 800, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    subprocess.run(command(tmp_path / "straight", 800), env=env, capture_output=True, check=True)
    for name in ("linear-disarm-seed0", "linear-reinforce_loo-seed1"):
        assert_same_run(load(tmp_path / "straight" / name), load(tmp_path / "killed" / name), atol=0)
    again = subprocess.run(command(tmp_path / "killed", 800, "--resume"), env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "finished, skipped" in again.stderr


@pytest.mark.slow
def test_submitit_local_executor_trains_the_same_runs(data, tmp_path):
    pytest.importorskip("submitit")
    configs = study_configs(config(data, tmp_path), ["linear"], ["disarm", "arm"], [0], tmp_path / "submitit-study")
    here = study_configs(config(data, tmp_path), ["linear"], ["disarm", "arm"], [0], tmp_path / "here-study")
    results = run_study(configs, launcher="submitit", cluster="local", runs_per_process=1, threads=1)
    run_study(here, threads=1, runs_per_process=1)
    assert len(results) == 2 and (tmp_path / "submitit-study" / "submitit").is_dir()
    for name in ("linear-disarm-seed0", "linear-arm-seed0"):
        assert_same_run(load(tmp_path / "here-study" / name), load(tmp_path / "submitit-study" / name), atol=0)


def test_what_cannot_share_a_process_is_refused(data, tmp_path):
    with pytest.raises(ConfigurationError, match="lr"):
        check_runs([config(data, tmp_path / "a"), config(data, tmp_path / "b", lr=1e-3)])
    with pytest.raises(ConfigurationError, match="relax.*armgrad vae"):  # alone it trains (armgrad vae)
        check_runs(
            [
                config(data, tmp_path / "a", estimator="relax", num_samples=3),
                config(data, tmp_path / "b", estimator="relax", num_samples=3, seed=1),
            ]
        )
    check_runs([config(data, tmp_path / "a", estimator="relax", num_samples=3)])
    with pytest.raises(ConfigurationError, match="at least 3 f evaluations"):  # each run is checked too
        check_runs([config(data, tmp_path / "a", estimator="relax")])
    with pytest.raises(ConfigurationError, match="batch of its own"):
        check_runs(
            [
                config(data, tmp_path / "a", objective="iwae", estimator="local_disarm"),
                config(data, tmp_path / "b", objective="iwae", estimator="vimco", num_samples=2),
            ]
        )
    # the study groups what can share a process, and splits batches to the size asked
    configs = study_configs(
        config(data, tmp_path), ["linear", "nonlinear"], ["disarm", "arms", "reinforce"], [0, 1], tmp_path / "s"
    )
    plan = batches(configs, runs_per_process=4)
    assert sorted(len(b) for b in plan) == [2, 2, 4, 4]
    assert all(len({c.model for c in b}) == 1 for b in plan)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cuda_runs_alone(data, tmp_path):
    batch = runs(data, tmp_path / "batch", steps=20, eval_every=20, checkpoint_every=20, device="cuda")
    train_runs(batch)
    for s, estimator in enumerate(ESTIMATORS):
        name = f"{estimator}-{s}"
        train(
            config(
                data,
                tmp_path / name,
                estimator=estimator,
                seed=s,
                steps=20,
                eval_every=20,
                checkpoint_every=20,
                device="cuda",
            )
        )
        assert_same_run(load(tmp_path / name), load(tmp_path / "batch" / name), atol=1e-5, rtol=1e-4)


def test_study_command_line_refuses_with_one_line(data, tmp_path, capsys):
    from armgrad.cli import main

    base = ["study", "--dataset", "mnist", "--data-dir", str(data), "--steps", "4", "--out", str(tmp_path / "s")]
    assert main([*base, "--estimator", "relax", "--num-samples", "3"]) == 2
    err = capsys.readouterr().err
    assert "relax learns control parameters: train it one run per process with armgrad vae" in err
    assert "Traceback" not in err and not (tmp_path / "s").exists()
    with pytest.raises(SystemExit) as stopped:
        main([*base, "--estimator", "disarm", "arm", "--num-samples", "3"])
    assert stopped.value.code == 2 and "must be even" in capsys.readouterr().err


def test_runs_on_the_importance_weighted_bound_train_side_by_side(data, tmp_path):
    """Multi-sample objectives share a process too; their training metric is the K-sample bound."""
    iwae = dict(objective="iwae", estimator="vimco", num_samples=3)
    both = train_runs([config(data, tmp_path / f"vimco-{s}", seed=s, **iwae) for s in (0, 1)])
    alone = train(config(data, tmp_path / "alone", seed=1, **iwae))
    assert "train_elbo" not in both[1] and both[1]["train_bound"] == pytest.approx(alone["train_bound"], abs=1e-4)
    assert both[1]["test_bound_k"] == pytest.approx(alone["test_bound_k"], abs=1e-3)
    assert_same_run(load(tmp_path / "vimco-1"), load(tmp_path / "alone"), atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_a_study_reports_its_folder_against_arm_whichever_estimator_it_lists_first(data, tmp_path, capsys):
    """Studies sharing a folder (scripts/protocol_1m.sh runs two) each rewrite its report.md: against
    ARM where the folder has ARM runs, whatever the study's own first estimator, unless --reference says."""
    from armgrad.cli import main

    out = tmp_path / "s"
    base = [
        "study",
        "--dataset",
        "mnist",
        "--data-dir",
        str(data),
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--test-samples",
        "3",
        "--grad-var-draws",
        "2",
        "--out",
        str(out),
    ]
    assert main([*base, "--estimator", "reinforce_loo", "arm"]) == 0
    assert "## Seed by seed against arm" in (out / "report.md").read_text()
    assert main([*base, "--estimator", "disarm"]) == 0  # the folder's arm runs are still its baseline
    report = (out / "report.md").read_text()
    assert "## Seed by seed against arm" in report and "| disarm | 1 |" in report and "| reinforce_loo | 1 |" in report
    assert main([*base, "--estimator", "disarm", "--resume", "--reference", "reinforce_loo"]) == 0
    assert "## Seed by seed against reinforce_loo" in (out / "report.md").read_text()
    capsys.readouterr()


def test_categorical_runs_in_a_batch_train_what_they_train_alone(data, tmp_path):
    """Three categorical estimators side by side (a RunMixture over (R, batch, D, C) logits; CARMS's noise has no
    category axis, DisARM's has C - 1): each run matches the same run alone, its random streams identical."""
    latents = dict(categories=3, latent_vars=4, num_samples=2)
    names = ["disarm", "reinforce_loo", "carms"]
    batch = train_runs(
        [config(data, tmp_path / "batch" / f"{e}-{s}", estimator=e, seed=s, **latents) for s, e in enumerate(names)]
    )
    for s, estimator in enumerate(names):
        alone = train(config(data, tmp_path / f"alone-{estimator}", estimator=estimator, seed=s, **latents))
        assert_same_run(
            load(tmp_path / f"alone-{estimator}"), load(tmp_path / "batch" / f"{estimator}-{s}"), 1e-6, 1e-5
        )
        assert batch[s]["test_elbo"] == pytest.approx(alone["test_elbo"], abs=1e-3)
        assert batch[s]["runs_in_process"] == 3 and batch[s]["latents"] == "4x3 categorical"
