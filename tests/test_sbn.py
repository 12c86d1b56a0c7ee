"""The stochastic binary network: bound against enumeration, training, resume, CLI on MNIST files."""

import itertools
import json

import pytest
import torch

from armgrad import cli
from armgrad.experiments.sbn import SBNConfig, nll_bound, train
from armgrad.models.sbn import StochasticBinaryNetwork

from test_data import write_mnist


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


def test_bound_approaches_the_exact_conditional_likelihood():
    torch.manual_seed(0)
    net = StochasticBinaryNetwork("linear", units=3).double()
    images = (torch.rand(5, 784, dtype=torch.float64) < 0.4).double()
    upper, lower = images[:, :392], images[:, 392:]
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    layer1, layer2 = net.stochastic_layers()
    phi1 = layer1(upper)  # (5, 3)
    log_p = []
    for b1, b2 in itertools.product(states, states):
        log_q1 = torch.distributions.Bernoulli(logits=phi1).log_prob(b1).sum(-1)
        log_q2 = torch.distributions.Bernoulli(logits=layer2(b1.expand(5, 3))).log_prob(b2).sum(-1)
        log_p.append(log_q1 + log_q2 + net.log_likelihood(lower, b2.expand(1, 5, 3))[0])
    exact = -torch.logsumexp(torch.stack(log_p), 0)
    gen = torch.Generator().manual_seed(0)
    one = nll_bound(net, images.repeat(2000, 1), 1, gen).view(2000, 5)
    big = nll_bound(net, images, 20000, gen, example_chunk=5, sample_chunk=2000)
    torch.testing.assert_close(big, exact, atol=0.02, rtol=0)  # M -> infinity: the exact likelihood
    gap = one.mean(0) - exact  # M = 1: an upper bound in expectation (Jensen), well above here
    assert (gap > 5 * one.std(0) / 2000**0.5).all(), gap


@pytest.mark.parametrize("model", ["linear", "nonlinear"])
def test_structure(model):
    net = StochasticBinaryNetwork(model)
    assert len(net.stochastic_layers()) == 2
    assert net.log_likelihood(torch.zeros(4, 392), torch.zeros(3, 4, 200)).shape == (3, 4)
    if model == "nonlinear":
        assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in net.layers[0])


def tiny(tmp_path, **overrides):
    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    base = dict(
        dataset="mnist-threshold",
        data_dir=str(tmp_path / "data"),
        steps=6,
        batch_size=8,
        eval_every=3,
        checkpoint_every=3,
        test_samples=7,
        eval_samples=3,
        out=str(tmp_path / "run"),
    )
    return SBNConfig(**{**base, **overrides})


@pytest.mark.slow
def test_resume_is_exact_including_the_best_checkpoint(tmp_path):
    straight = train(tiny(tmp_path, out=str(tmp_path / "a")))
    train(tiny(tmp_path, out=str(tmp_path / "b"), steps=3))
    resumed = train(tiny(tmp_path, out=str(tmp_path / "b")), resume=True)
    for key in ["train_nll", "test_nll_bound", "valid_nll_bound", "best_step"]:
        assert resumed[key] == straight[key], key


def test_dynamic_binarisation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mnist-threshold"):
        train(tiny(tmp_path, dataset="mnist"))


def test_cli_sbn_on_mnist_files(tmp_path, capsys):
    config = tiny(tmp_path)
    assert (
        cli.main(
            [
                "sbn",
                "--dataset",
                "mnist-threshold",
                "--data-dir",
                config.data_dir,
                "--steps",
                "4",
                "--batch-size",
                "8",
                "--eval-every",
                "2",
                "--test-samples",
                "5",
                "--eval-samples",
                "2",
                "--estimator",
                "arm",
                "--model",
                "nonlinear",
                "--out",
                str(tmp_path / "sbn"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "sbn" / "results.json").read_text())
    assert {"dataset", "model", "estimator", "steps", "seconds", "test_nll_bound", "valid_nll_bound"} <= set(results)
    assert (tmp_path / "sbn" / "completions.png").exists() and (tmp_path / "sbn" / "curves.png").exists()
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "sbn")]) == 0
    assert "test_nll_bound" in capsys.readouterr().out
