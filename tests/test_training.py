"""experiments/training.py: checkpoints written atomically and read back or refused with what to do, and the
run folder prepared or refused before any training (exact resume itself: test_vae.py, test_sbn.py)."""

from __future__ import annotations

import os

import pytest
import torch

from armgrad import cli

from test_cli import fails, tiny


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


def test_zero_grads_sets_every_gradient_of_every_optimiser_to_none():
    from armgrad.experiments.training import zero_grads

    params = [torch.zeros(3, requires_grad=True) for _ in range(3)]
    optimizers = [torch.optim.Adam(params[:2]), torch.optim.SGD(params[2:], lr=0.1)]
    for p in params:
        p.grad = torch.ones(3)
    zero_grads(optimizers)
    assert all(p.grad is None for p in params)


def test_the_divergence_guard_refuses_a_loss_no_model_can_have_and_names_the_steps():
    from types import SimpleNamespace

    from armgrad.experiments.training import DivergedError, DivergenceGuard

    guard = DivergenceGuard(SimpleNamespace(out="runs/x", lr=1e-3), pixels=784, last_saved=1_000)
    guard.check_losses([0.69 * 784, 99 * 784, -99 * 784], 1_100)  # a bad model, not a diverged one
    with pytest.raises(DivergedError, match=r"steps 1,101 and 1,200: a training loss of 7.918e\+04 .*100 per pixel"):
        guard.check_losses([200.0, 101 * 784], 1_200)  # documented: beyond 100 nats per pixel
    with pytest.raises(DivergedError, match=r"not finite.*--lr \(now 0.001\).*step 1,000\) is intact"):
        guard.check_losses([float("nan")], 1_200)
    model = torch.nn.Linear(2, 2)
    guard.check_parameters(model, 1_200)
    with torch.no_grad():
        model.bias[0] = float("inf")
    with pytest.raises(DivergedError, match="parameter bias holds nan or inf"):
        guard.check_parameters(model, 1_200)
