"""The VAE: model, bounds against exact marginal likelihood, training, exact resume, reports."""

import itertools
import json
import math

import pytest
import torch

from armgrad import cli
from armgrad.estimators import get_estimator
from armgrad.experiments.vae import VAEConfig, importance_weighted_bound, train
from armgrad.families import bernoulli_log_prob
from armgrad.models.stacked import stack
from armgrad.models.vae import DiscreteVAE, output_log_prob

from test_data import write_mnist


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))


def tiny_config(tmp_path, **overrides):
    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    base = dict(
        dataset="mnist",
        data_dir=str(tmp_path / "data"),
        steps=6,
        batch_size=8,
        eval_every=3,
        checkpoint_every=3,
        test_samples=5,
        grad_var_draws=3,
        out=str(tmp_path / "run"),
    )
    return VAEConfig(**{**base, **overrides})


@pytest.mark.parametrize("model,layers", [("linear", 1), ("nonlinear", 1), ("linear2", 2), ("linear4", 4)])
def test_model_structure(model, layers):
    mean = torch.rand(784)
    vae = DiscreteVAE(model, mean)
    assert vae.num_layers == layers and len(vae.encoder_layers()) == layers
    torch.testing.assert_close(vae.decoder[0][-1].bias, torch.logit(mean.clamp(0.001, 0.999)))
    x = (torch.rand(5, 784) < 0.5).float()
    samples, log_q = vae.sample_posterior(x, 3)
    assert len(samples) == layers and samples[0].shape == (3, 5, 200) and log_q.shape == (3, 5)
    assert vae.log_joint(x, samples).shape == (3, 5)
    if model == "nonlinear":
        assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.3 for m in vae.encoder[0])


@pytest.mark.parametrize("h_shape,x_shape", [((3, 4, 6), (4, 5)), ((4, 6), (4, 5)), ((2, 4, 6), (2, 4, 5))])
def test_the_fused_output_layer_has_the_composites_value_and_first_and_second_derivatives(h_shape, x_shape):
    """``output_log_prob`` on an ``nn.Linear`` (one node, its backward written out) against finite differences in
    every input (a relaxed x too), twice (REBAR's and RELAX's controls), and against the composite's value."""
    from armgrad.models.vae import _LinearBernoulli

    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(6, 5).double()
    h = torch.randn(h_shape, generator=g, dtype=torch.float64).requires_grad_(True)
    x = torch.rand(x_shape, generator=g, dtype=torch.float64).requires_grad_(True)
    out = output_log_prob(layer, h, x)
    assert out.grad_fn.name().endswith("_LinearBernoulliBackward")
    torch.testing.assert_close(out, bernoulli_log_prob(layer(h), x))
    inputs = (h, layer.weight, layer.bias, x)
    assert torch.autograd.gradcheck(_LinearBernoulli.apply, inputs)
    assert torch.autograd.gradgradcheck(_LinearBernoulli.apply, inputs)


def test_the_decoder_gradients_are_the_composites_alone_and_side_by_side():
    """The decoder's fused output layer gives the gradients of the composite ``bernoulli_log_prob(layer(h), x)``, and
    a stacked model (runs side by side: the composite path) gives each run the same."""
    torch.manual_seed(0)
    mean = torch.rand(784) * 0.8 + 0.1
    models = [DiscreteVAE("nonlinear", mean) for _ in range(2)]
    x = (torch.rand(2, 7, 784) < 0.5).float()
    b = (torch.rand(3, 2, 7, 200) < 0.5).float()
    stacked = stack(models)
    stacked.log_joint(x, [b]).sum().backward()
    for r, model in enumerate(models):
        model.log_joint(x[r], [b[:, r]]).sum().backward()
        *hidden, output = model.decoder[0]
        h = 2 * b[:, r] - 1
        for layer in hidden:
            h = layer(h)
        weight, bias = torch.autograd.grad(bernoulli_log_prob(output(h), x[r]).sum(), [output.weight, output.bias])
        torch.testing.assert_close(output.weight.grad, weight)
        torch.testing.assert_close(output.bias.grad, bias)
        torch.testing.assert_close(stacked.decoder[0][-1].weight.grad[r], weight, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(stacked.decoder[0][-1].bias.grad[r], bias, rtol=1e-4, atol=1e-4)


def latent_states(categories):
    """A tiny VAE and every state of its latents with their distribution: 4 binary units (16 states), or 2
    variables of 3 categories (9 one-hot states)."""
    if categories is None:
        vae = DiscreteVAE("linear", torch.rand(784), units=4).double()
        return (
            vae,
            torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64),
            torch.distributions.Bernoulli,
        )
    vae = DiscreteVAE("linear", torch.rand(784), units=2, categories=categories).double()
    states = torch.nn.functional.one_hot(torch.tensor(list(itertools.product(range(categories), repeat=2))), categories)
    return vae, states.double(), torch.distributions.OneHotCategorical


@pytest.mark.parametrize("categories", [None, 3], ids=["binary", "categorical"])
def test_importance_weighted_bound_approaches_the_exact_marginal_likelihood(categories):
    """log p(x) by enumeration of the latent states; K = 1 is the ELBO (unbiased), K -> infinity log p(x)."""
    torch.manual_seed(0)
    vae, states, family = latent_states(categories)
    x = (torch.rand(6, 784, dtype=torch.float64) < 0.3).double()
    log_joint = vae.log_joint(x, [states.unsqueeze(1).expand(len(states), 6, *states.shape[1:])])
    exact = torch.logsumexp(log_joint, 0)
    phi = vae.encoder_layers()[0](x)
    log_q = family(logits=phi).log_prob(states.unsqueeze(1)).sum(-1)
    exact_elbo = (log_q.exp() * (log_joint - log_q)).sum(0)
    gen = torch.Generator().manual_seed(0)
    repeats = 4000
    one_sample = importance_weighted_bound(vae, x.repeat(repeats, 1), 1, gen, example_chunk=1000).view(repeats, 6)
    z = (one_sample.mean(0) - exact_elbo) / (one_sample.std(0) / repeats**0.5)
    assert z.abs().max() < 5, z
    big = importance_weighted_bound(vae, x, 5000, gen, example_chunk=4, sample_chunk=700)
    assert (exact_elbo < big).all()
    torch.testing.assert_close(big, exact, atol=0.05, rtol=0)


@pytest.mark.parametrize("model,estimator,num_samples", [("linear", "disarm", 2), ("linear2", "relax", 3)])
def test_resume_ends_exactly_as_an_uninterrupted_run(tmp_path, model, estimator, num_samples):
    """Model, optimisers, generators and (RELAX) every layer's learned controls and their optimiser."""
    setting = dict(model=model, estimator=estimator, num_samples=num_samples)
    straight = train(tiny_config(tmp_path, out=str(tmp_path / "straight"), **setting))
    interrupted = tiny_config(tmp_path, out=str(tmp_path / "resumed"), steps=3, **setting)
    train(interrupted)
    resumed = train(tiny_config(tmp_path, out=str(tmp_path / "resumed"), **setting), resume=True)
    for key in ["train_elbo", "test_elbo", "test_bound", "grad_var"]:
        assert resumed[key] == straight[key], key
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for layer_a, layer_b in zip(a["estimators"], b["estimators"]):
        assert (layer_a is None) == (estimator == "disarm")
        assert layer_a is None or all(torch.equal(layer_a[k], layer_b[k]) for k in layer_a)
    if estimator == "relax":  # the controls moved, and their optimiser's state was restored too
        initial = get_estimator("relax").create(num_units=200).state_dict()["log_temperature"]
        assert not torch.equal(a["estimators"][0]["log_temperature"], initial)
        assert a["optimizers"]["controls"]["state"][0]["step"] == b["optimizers"]["controls"]["state"][0]["step"] == 6


def test_resume_refuses_another_configuration(tmp_path):
    train(tiny_config(tmp_path, steps=3))
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny_config(tmp_path, steps=6, lr=1e-3), resume=True)


@pytest.mark.parametrize(
    "model,estimator",
    [("linear2", "arm"), ("linear", "relax"), ("linear2", "relax"), ("linear2", "rodeo"), ("linear", "gumbel")],
)
def test_models_train_with_estimators(tmp_path, model, estimator):
    num_samples = 3 if estimator == "relax" else 2
    results = train(tiny_config(tmp_path, model=model, estimator=estimator, num_samples=num_samples))
    assert math.isfinite(results["train_elbo"]) and math.isfinite(results["test_bound"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert (state["estimators"][0] is not None) == (estimator in ("relax", "rodeo"))  # learned controls saved


@pytest.mark.slow
def test_cli_vae_and_report(tmp_path, capsys):
    config = tiny_config(tmp_path)
    for estimator in ["arm", "disarm"]:
        for seed in [0, 1]:
            assert (
                cli.main(
                    [
                        "vae",
                        "--dataset",
                        "mnist",
                        "--data-dir",
                        config.data_dir,
                        "--steps",
                        "4",
                        "--batch-size",
                        "8",
                        "--eval-every",
                        "2",
                        "--test-samples",
                        "3",
                        "--grad-var-draws",
                        "2",
                        "--estimator",
                        estimator,
                        "--seed",
                        str(seed),
                        "--out",
                        str(tmp_path / "runs" / f"{estimator}-{seed}"),
                    ]
                )
                == 0
            )
    results = json.loads((tmp_path / "runs" / "arm-0" / "results.json").read_text())
    assert {
        "dataset",
        "model",
        "estimator",
        "steps",
        "seconds",
        "train_elbo",
        "test_elbo",
        "test_bound",
        "grad_var",
    } <= set(results)
    assert (tmp_path / "runs" / "arm-0" / "curves.png").exists()
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| mnist | linear | 200 binary | elbo | arm | 2 | 4 | 2 |" in table and "±" in table
    # a shorter run (a study in progress) is its own row, never averaged with the finished ones
    assert (
        cli.main(
            [
                "vae",
                "--dataset",
                "mnist",
                "--data-dir",
                config.data_dir,
                "--steps",
                "2",
                "--batch-size",
                "8",
                "--eval-every",
                "2",
                "--test-samples",
                "3",
                "--grad-var-draws",
                "2",
                "--estimator",
                "arm",
                "--seed",
                "2",
                "--out",
                str(tmp_path / "runs" / "arm-2"),
            ]
        )
        == 0
    )
    assert cli.main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert (
        "| mnist | linear | 200 binary | elbo | arm | 2 | 4 | 2 |" in table
        and "| mnist | linear | 200 binary | elbo | arm | 2 | 2 | 1 |" in table
    )
    assert (tmp_path / "report" / "report.png").exists()
    # seed by seed against arm: disarm's two seeds pair with arm's at 4 steps; the 2-step arm run has no partner
    paired = json.loads((tmp_path / "report" / "report.json").read_text())["paired"]
    assert [(e["estimator"], e["steps"], e["pairs"]) for e in paired] == [("disarm", 4, 2)]
    runs = {
        (e, s): json.loads((tmp_path / "runs" / f"{e}-{s}" / "results.json").read_text())
        for e in ("arm", "disarm")
        for s in (0, 1)
    }
    diffs = [runs["disarm", s]["test_elbo"] - runs["arm", s]["test_elbo"] for s in (0, 1)]
    assert paired[0]["test_elbo"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert "| mnist | linear | 200 binary | elbo | 2 | 4 | disarm | 2 |" in table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trains_and_resumes_on_cuda(tmp_path):
    straight = train(tiny_config(tmp_path, model="linear2", device="cuda", out=str(tmp_path / "straight")))
    train(tiny_config(tmp_path, model="linear2", device="cuda", out=str(tmp_path / "resumed"), steps=3))
    resumed = train(tiny_config(tmp_path, model="linear2", device="cuda", out=str(tmp_path / "resumed")), resume=True)
    assert math.isfinite(straight["test_bound"])
    for key in ("train_elbo", "test_elbo", "test_bound"):
        assert resumed[key] == straight[key], key


# ---- categorical latents (issue 23): D variables of C categories, one-hot ------------------------------------


def test_categorical_model_samples_one_hot_and_scores_them_as_torch_does():
    torch.manual_seed(0)
    vae = DiscreteVAE("linear2", torch.rand(784), units=3, categories=4)
    assert vae.event_shape == (3, 4) and vae.prior_logits.shape == (3, 4)
    x = (torch.rand(5, 784) < 0.5).float()
    samples, logits = vae.sample_posterior_with_logits(x, 6)
    assert [s.shape for s in samples] == [(6, 5, 3, 4)] * 2 and [p.shape for p in logits] == [(6, 5, 3, 4)] * 2
    assert all(torch.equal(s.sum(-1), torch.ones(6, 5, 3)) for s in samples)  # one category per variable
    _, log_q = vae.sample_posterior(x, 6, torch.Generator().manual_seed(1))
    again, _ = vae.sample_posterior_with_logits(x, 6, torch.Generator().manual_seed(1))
    expected = sum(
        torch.distributions.OneHotCategorical(logits=phi).log_prob(z).sum(-1)
        for phi, z in zip(vae.sample_posterior_with_logits(x, 6, torch.Generator().manual_seed(1))[1], again)
    )
    torch.testing.assert_close(log_q, expected)
    prior = torch.distributions.OneHotCategorical(logits=vae.prior_logits).log_prob(samples[1]).sum(-1)
    top = vae.decoder[1](2 * samples[1].flatten(-2) - 1).unflatten(-1, (3, 4))
    middle = torch.distributions.OneHotCategorical(logits=top).log_prob(samples[0]).sum(-1)
    pixels = torch.distributions.Bernoulli(logits=vae.decoder[0](2 * samples[0].flatten(-2) - 1)).log_prob(x)
    torch.testing.assert_close(vae.log_joint(x, samples), prior + middle + pixels.sum(-1))


@pytest.mark.slow
def test_the_categorical_training_gradient_is_the_exact_one_on_average():
    """The encoder's gradient of the training loss with disarm (and arsm) over many draws against the
    same loss with ``exact`` (3^2 states enumerated): the VAE wires its categorical layer to the estimator."""
    from armgrad.experiments.vae import training_loss

    torch.manual_seed(0)
    vae = DiscreteVAE("linear", torch.rand(784), units=2, categories=3).double()
    x = (torch.rand(3, 784, dtype=torch.float64) < 0.3).double()
    weight = vae.encoder[0][0].weight

    def gradient(estimator, num_samples, generator=None):
        loss = training_loss(vae, x, generator, estimators=[estimator], num_samples=num_samples)
        return torch.autograd.grad(loss, weight)[0].flatten()

    exact = gradient("exact", 9)
    gen = torch.Generator().manual_seed(0)
    for estimator, num_samples, draws in (("disarm", 2, 3000), ("arsm", 4, 1500)):
        grads = torch.stack([gradient(estimator, num_samples, gen) for _ in range(draws)])
        err = grads.std(0) / draws**0.5
        moving = err > 1e-9  # weights of pixels that are 0 in every example get no gradient
        z = (grads.mean(0) - exact)[moving] / err[moving]
        assert z.abs().max() < 5.5, (estimator, z.abs().max())  # 4704 coordinates
    wrong = (grads.mean(0) * 1.1 - exact)[moving] / err[moving]
    assert wrong.abs().max() > 5.5  # the test can fail: a 10 % error is seen


def test_categorical_resume_ends_exactly_as_an_uninterrupted_run(tmp_path):
    setting = dict(categories=3, latent_vars=4, estimator="disarm", num_samples=2)
    straight = train(tiny_config(tmp_path, out=str(tmp_path / "straight"), **setting))
    train(tiny_config(tmp_path, out=str(tmp_path / "resumed"), steps=3, **setting))
    resumed = train(tiny_config(tmp_path, out=str(tmp_path / "resumed"), **setting), resume=True)
    for key in ["train_elbo", "test_elbo", "test_bound", "grad_var"]:
        assert resumed[key] == straight[key], key
    assert straight["latents"] == "4x3 categorical"
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["model"]["prior_logits"].shape == (4, 3)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(ValueError, match="categories: 3 in the checkpoint, 4 now"):
        train(tiny_config(tmp_path, out=str(tmp_path / "resumed"), **{**setting, "categories": 4}), resume=True)


def _cli_categorical(tmp_path, *flags):
    write_mnist(tmp_path / "data", n_train=60, n_test=20)
    common = ["--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--batch-size", "4", "--steps", "2"]
    common += ["--eval-every", "2", "--test-samples", "2", "--grad-var-draws", "2", "--threads", "1"]
    return cli.main(["vae", *common, *flags])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in __import__("armgrad").categorical.ESTIMATORS if n != "exact"])
def test_every_categorical_estimator_trains_from_the_command_line(tmp_path, name, capsys):
    """Generated from the registry: each at its smallest budget of at least 2, which the start line states."""
    from armgrad import categorical

    out = tmp_path / "run"
    assert (
        _cli_categorical(tmp_path, "--categories", "3", "--latent-vars", "4", "--estimator", name, "--out", str(out))
        == 0
    )
    expected = categorical.ESTIMATORS[name].valid_budget(2, (4, 3))
    results = json.loads((out / "results.json").read_text())
    assert results["num_samples"] == expected and results["latents"] == "4x3 categorical"
    assert math.isfinite(results["test_elbo"]) and math.isfinite(results["test_bound"])
    assert math.isfinite(results["grad_var"])
    err = capsys.readouterr().err
    assert "linear VAE with 4 x 3 categorical latents" in err
    assert f"with {name} ({expected} f evaluations per layer and example)" in err


def test_the_default_budgets_of_the_categorical_estimators_at_ten_categories():
    from armgrad.experiments.vae import with_defaults

    budgets = {
        name: with_defaults(VAEConfig(estimator=name, categories=10), set()).num_samples
        for name in ("arsm", "ars", "indecater", "disarm", "reinmax")
    }
    assert budgets == {"arsm": 46, "ars": 10, "indecater": 200, "disarm": 2, "reinmax": 2}
    config = with_defaults(VAEConfig(estimator="arsm", categories=10), set())
    assert config.latent_vars == 20 and config.event_shape == (20, 10)
    assert with_defaults(VAEConfig(estimator="rebar"), set()).num_samples == 3  # triples
    assert with_defaults(VAEConfig(estimator="disarm"), set()) == VAEConfig(estimator="disarm")  # binary: unchanged


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--categories", "10", "--estimator", "arms"], "--estimator arms cannot train categorical latents"),
        (["--estimator", "arsm"], "--estimator arsm cannot train binary latents"),
        (["--categories", "1"], "--categories: expected an integer >= 2, got 1"),
        (["--categories", "10", "--estimator", "arsm", "--num-samples", "10"], "at least 46 f evaluations"),
        (["--categories", "10", "--estimator", "arsm", "--num-samples", "50"], "a multiple of 46"),
        (["--categories", "3", "--estimator", "exact"], "--estimator exact enumerates C^D states"),
        (["--categories", "3", "--objective", "iwae", "--estimator", "vimco"], "have no categorical form"),
        (["--categories", "3", "--latent-vars", "0"], "--latent-vars: expected a positive integer, got 0"),
    ],
)
def test_the_command_line_refuses_what_categorical_latents_cannot_do(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(["vae", "--out", str(tmp_path / "run"), *flags])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work
