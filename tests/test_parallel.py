"""Data-parallel training: shards, torchrun with 2 CPU processes (gloo), rank-0 checkpoints, resume."""

import json
import os
import subprocess
import sys

import pytest
import torch

import armgrad
from armgrad.experiments import parallel
from armgrad.experiments.training import backward_step
from armgrad.experiments.vae import VAEConfig, train

from test_data import write_mnist


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


def settings(data, out, **overrides) -> dict:
    base = dict(
        dataset="mnist",
        data_dir=str(data),
        steps=4,
        batch_size=8,
        eval_every=2,
        checkpoint_every=2,
        test_samples=3,
        grad_var_draws=2,
        estimator="disarm",
        model="linear2",
        out=str(out),
    )
    return {**base, **overrides}


def flags(data, out, **overrides):
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings(data, out, **overrides).items()]


def config(data, out, **overrides):
    return VAEConfig(**settings(data, out, **overrides))


def torchrun(args, tmp_path, processes=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARMGRAD_DATA": str(tmp_path / "cache")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "armgrad",
        "vae",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def load(out):
    return torch.load(out / "checkpoint.pt", weights_only=False)


def assert_same_run(a, b, atol=1e-5):
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=atol, rtol=0, msg=key)
    for gen_a, gen_b in zip(a["noise_gens"], b["noise_gens"], strict=True):
        assert torch.equal(gen_a, gen_b)
    assert torch.equal(a["data_gen"], b["data_gen"])
    for row_a, row_b in zip(a["rows"], b["rows"], strict=True):
        assert row_a["train_elbo"] == pytest.approx(row_b["train_elbo"], abs=1e-3)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_shards_and_resume(tmp_path):
    data = tmp_path / "data"
    write_mnist(data, n_train=120, n_test=30)
    alone = train(config(data, tmp_path / "alone", shards=2))

    done = torchrun(flags(data, tmp_path / "ddp"), tmp_path)
    printed = json.loads(done.stdout[done.stdout.index("{") :])  # rank 0 alone prints the results
    assert printed["processes"] == 2 and printed["steps"] == 4
    ddp = load(tmp_path / "ddp")
    assert ddp["config"]["shards"] == 2  # one shard per process, recorded for resuming
    assert_same_run(ddp, load(tmp_path / "alone"))
    assert printed["test_elbo"] == pytest.approx(alone["test_elbo"], abs=1e-2)

    # killed after step 2, resumed by both processes from rank 0's checkpoint: the same run
    torchrun(flags(data, tmp_path / "resumed", steps=2), tmp_path)
    torchrun(flags(data, tmp_path / "resumed") + ["--resume"], tmp_path)
    assert_same_run(load(tmp_path / "resumed"), ddp, atol=1e-6)
    # and a single process resumes a two-process run when told its shards
    train(config(data, tmp_path / "resumed", steps=6, shards=2), resume=True)
    with pytest.raises(ValueError, match="shards"):
        train(config(data, tmp_path / "resumed", steps=8), resume=True)


def test_one_shard_is_the_plain_single_process_step(tmp_path):
    """The sharded loop with one shard computes what a plain step computes: the batch drawn from the run's
    data generator, the loss with noise from shard 0's stream, on the model as initialised."""
    from armgrad.data import load_dataset
    from armgrad.experiments.parallel import noise_seed
    from armgrad.experiments.vae import training_loss
    from armgrad.models.vae import DiscreteVAE

    data = tmp_path / "data"
    write_mnist(data, n_train=120, n_test=30)
    results = train(config(data, tmp_path / "a", steps=1, eval_every=1, seed=3))
    assert load(tmp_path / "a")["config"]["shards"] == 1
    images = load_dataset("mnist", str(data))
    torch.manual_seed(3)
    model = DiscreteVAE("linear2", images.train_mean)
    data_gen = torch.Generator().manual_seed(3)
    x = images.train_batch(torch.randint(images.train.shape[0], (8,), generator=data_gen), data_gen)
    loss = training_loss(
        model, x, torch.Generator().manual_seed(noise_seed(3, 0)), estimators=["disarm", "disarm"], num_samples=2
    )
    assert results["train_elbo"] == pytest.approx(-loss.item(), rel=1e-6)


@pytest.mark.slow
def test_sharded_gradient_has_the_same_mean_as_the_whole_batch_gradient():
    """Two noise streams over halves of the batch vs one over all of it: the same expectation."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 4).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    weight = torch.randn(4, dtype=torch.float64)

    def f(b):
        return ((b - 0.3) ** 2 * weight).sum(-1) + torch.cos(b.sum(-1))

    def loss(xs, gen):
        return armgrad.estimate(f, layer(xs), "disarm", 2, generator=gen).mean()

    def draws(shards, seed, n=3000):
        gens = [torch.Generator().manual_seed(seed + s) for s in range(shards)]
        out = []
        for _ in range(n):
            layer.zero_grad(set_to_none=True)
            backward_step(loss, x, gens, range(shards))
            out.append(torch.cat([p.grad.flatten() for p in layer.parameters()]))
        return torch.stack(out)

    one, two = draws(1, 10), draws(2, 20)
    se = (one.var(0) / len(one) + two.var(0) / len(two)).sqrt()
    assert ((one.mean(0) - two.mean(0)) / se).abs().max() < 5
    # the check has power: a sharded step that summed its shards instead of averaging them is caught
    assert ((one.mean(0) - 2 * two.mean(0)) / se).abs().max() > 5


def test_shards_must_split_the_batch():
    with pytest.raises(ValueError, match="split evenly"):
        parallel.check_shards(3, 50)
    with pytest.raises(ValueError, match="positive"):
        parallel.check_shards(0, 50)
    assert parallel.check_shards(2, 50) == 2
