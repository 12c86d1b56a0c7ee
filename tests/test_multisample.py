"""Multi-sample objectives: every estimator of ``armgrad.multisample.ESTIMATORS`` against the exact gradient of
``L_K`` by enumeration of all K-tuples, generated from the registry; the checks' power; bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from armgrad import multisample
from armgrad.diagnostics import bias_z_scores, chi2_pvalue
from armgrad.estimators import registry, select
from armgrad.multisample import ESTIMATORS, LocalDisARM, exact

DRAWS, BATCH, UNITS = 20000, 4, 3
KS = (1, 2, 3)


def problem(seed: int):
    """Logits and a log-weight ``log p(x, b) - log q(b)`` whose ``log q`` uses the logits it is given."""
    g = torch.Generator().manual_seed(seed)
    phi = (1.5 * torch.randn(BATCH, UNITS, generator=g, dtype=torch.float64)).clamp(-3, 3)
    target = torch.rand(BATCH, UNITS, generator=g, dtype=torch.float64)
    coupling = torch.randn(UNITS, UNITS, generator=g, dtype=torch.float64)

    def make_log_weight(logits):
        def log_weight(b):
            log_q = (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)
            return -3 * ((b - target) ** 2).sum(-1) + ((b @ coupling) * b).sum(-1) - log_q

        return log_weight

    return phi, make_log_weight


def exact_gradient(phi, make_log_weight, k):
    leaf = phi.clone().requires_grad_(True)
    value = exact(make_log_weight(leaf), leaf, k)
    return value.detach(), torch.autograd.grad(value.sum(), leaf)[0]


def draws(estimator, phi, make_log_weight, k, seed=0):
    """``DRAWS`` independent estimates of ``L_K`` and of its gradient w.r.t. the logits (pathwise part included)."""
    leaf = phi.expand(DRAWS, *phi.shape).clone().requires_grad_(True)
    value = multisample.estimate(
        make_log_weight(leaf), leaf, estimator, k, generator=torch.Generator().manual_seed(seed)
    )
    return value.detach(), torch.autograd.grad(value.sum(), leaf)[0]


def cases(table):
    return [(name, k) for name in select(table, unbiased=True) for k in KS if k >= table[name].budget.minimum]


def check(estimator, k, seed=0):
    phi, make_log_weight = problem(seed)
    value, grad = exact_gradient(phi, make_log_weight, k)
    values, grads = draws(estimator, phi, make_log_weight, k, seed)
    for what, sample, truth in (("gradient", grads, grad), ("value", values, value)):
        z = bias_z_scores(sample, truth)
        assert z.abs().max() < 5 and chi2_pvalue(z) > 1e-4, (
            f"{estimator} K={k} {what}: max |z| = {z.abs().max():.2f}, chi2 p = {chi2_pvalue(z):.2e}"
        )


@pytest.mark.parametrize("name,k", cases(ESTIMATORS))
def test_unbiased_for_the_gradient_of_the_k_sample_bound(name, k):
    check(ESTIMATORS[name], k)


class LocalDisARMTimes(LocalDisARM):
    name = "local_disarm_times_1_1"

    def combine(self, log_w, b, logits, noise):
        value, grad = super().combine(log_w, b, logits, noise)
        return value, 1.1 * grad


def test_a_wrong_estimator_fails_the_generated_checks():
    table = registry(*ESTIMATORS.values(), LocalDisARMTimes())
    wrong = [c for c in cases(table) if c[0] == LocalDisARMTimes.name]
    assert [k for _, k in wrong] == list(KS)
    for name, k in wrong:
        with pytest.raises(AssertionError, match="gradient: max"):
            check(table[name], k)


def test_dropping_q_s_dependence_on_the_logits_biases_k_2():
    """The pathwise term through -log q(b_k | phi) is part of the gradient of L_K for K >= 2."""
    phi, make_log_weight = problem(0)
    _, truth = exact_gradient(phi, make_log_weight, 2)
    _, frozen = draws("vimco", phi, lambda logits: make_log_weight(logits.detach()), 2)
    assert bias_z_scores(frozen, truth).abs().max() > 10


def test_exact_bound_matches_brute_force_and_tends_to_log_p():
    phi, make_log_weight = problem(3)
    log_weight = make_log_weight(phi)
    states = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float64)
    b = states.unsqueeze(1).expand(8, BATCH, UNITS)
    log_w = log_weight(b)
    q = torch.distributions.Bernoulli(logits=phi).log_prob(b).sum(-1).exp()
    brute = sum(q[i] * q[j] * (torch.logaddexp(log_w[i], log_w[j]) - math.log(2)) for i in range(8) for j in range(8))
    torch.testing.assert_close(exact(log_weight, phi, 2), brute)
    elbo, log_p = (q * log_w).sum(0), torch.logsumexp(log_w + q.log(), 0)  # log p(x) = log E_q[w]
    bounds = [exact(log_weight, phi, k) for k in (1, 2, 3, 4)]
    torch.testing.assert_close(bounds[0], elbo)
    assert all((a <= b + 1e-12).all() for a, b in zip(bounds, bounds[1:])) and (bounds[-1] <= log_p).all()


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_value_is_the_bound_at_the_samples(name):
    phi, make_log_weight = problem(1)
    est = ESTIMATORS[name]
    noise = est.draw_noise(3, phi, torch.Generator().manual_seed(0))
    seen = []
    log_weight = make_log_weight(phi)
    value = multisample.estimate(lambda b: seen.append(b) or log_weight(b), phi, name, 3, noise=noise)
    (b,) = seen
    assert b.shape == (est.evaluations(3), BATCH, UNITS)
    torch.testing.assert_close(value, torch.logsumexp(log_weight(b[:3]), 0) - math.log(3))


def test_a_single_zero_weight_is_legitimate():
    phi = torch.zeros(2, 3, requires_grad=True)

    def log_weight(b):  # the first sample of every pair has weight zero
        out = -b.sum(-1)
        return torch.cat([torch.full_like(out[:1], -math.inf), out[1:]])

    for name in ESTIMATORS:
        value = multisample.estimate(log_weight, phi, name, 2, generator=torch.Generator().manual_seed(0))
        (g,) = torch.autograd.grad(value.sum(), phi)
        assert torch.isfinite(value).all() and torch.isfinite(g).all(), name


def test_vimco_signal_with_a_zero_weight_among_the_others_is_the_papers():
    """Mnih & Rezende's baseline for sample k replaces w_k by the geometric mean of the others, which is 0 when
    one of them is 0: here, written out weight by weight for K = 3 with w_1 = 0."""
    a, c = 0.3, -1.2
    log_w = torch.tensor([[a], [-math.inf], [c]], dtype=torch.float64)  # (K, batch)
    b = torch.tensor([[[1.0]], [[0.0]], [[1.0]]], dtype=torch.float64)  # (K, batch, D = 1)
    phi = torch.tensor([[0.4]], dtype=torch.float64)
    _, grad = ESTIMATORS["vimco"].combine(log_w, b, phi, None)
    w = [math.exp(a), 0.0, math.exp(c)]
    bound = math.log(sum(w) / 3)
    replaced = [[0.0, 0.0, w[2]], [w[0], math.exp((a + c) / 2), w[2]], [w[0], 0.0, 0.0]]  # w_k -> others' GM
    signals = [bound - math.log(sum(ws) / 3) for ws in replaced]
    p = torch.sigmoid(phi).item()
    expected = sum(sig * (bk - p) for sig, bk in zip(signals, (1.0, 0.0, 1.0)))
    assert grad.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda b: b.sum(), r"log_weight returned shape \(\), expected \(2, 2\)"),
        (lambda b: b.sum(-1).long(), "floating-point"),
        (lambda b: b.sum(-1) / 0.0 - b.sum(-1) / 0.0, "nan or \\+inf"),
        (lambda b: b.sum(-1) + math.inf, "nan or \\+inf"),
        (lambda b: b.sum(-1) - math.inf, "every log-weight of a batch element is -inf"),
    ],
)
def test_bad_log_weights(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        multisample.estimate(bad, torch.zeros(2, 3), "vimco", 2)


def test_bad_budgets_and_names():
    with pytest.raises(ValueError, match="num_samples=1 is too small for estimator 'vimco'"):
        multisample.estimate(lambda b: -b.sum(-1), torch.zeros(2, 3), "vimco", 1)
    with pytest.raises(ValueError, match="'disarm' estimates single-sample objectives"):
        multisample.estimate(lambda b: -b.sum(-1), torch.zeros(2, 3), "disarm", 2)
    with pytest.raises(ValueError, match="Did you mean 'vimco'"):
        multisample.estimate(lambda b: -b.sum(-1), torch.zeros(2, 3), "vimc", 2)
    with pytest.raises(ValueError, match="tuples; the limit"):
        exact(lambda b: -b.sum(-1), torch.zeros(2, 10), 3)


# ---- training on the K-sample bound from the command line --------------------------------------------


@pytest.fixture
def data(tmp_path, monkeypatch):
    from test_data import write_mnist

    monkeypatch.setenv("ARMGRAD_DATA", str(tmp_path / "cache"))
    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    return str(tmp_path / "data")


def iwae_flags(data, out, estimator, k="3", *extra):
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
        "5",
        "--grad-var-draws",
        "2",
        "--objective",
        "iwae",
        "--estimator",
        estimator,
        "--num-samples",
        k,
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_iwae_trains_from_the_command_line_and_resumes_exactly(tmp_path, data, name):
    import json

    from armgrad import cli

    assert cli.main(iwae_flags(data, tmp_path / "straight", name)) == 0
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert straight["objective"] == "iwae" and straight["num_samples"] == 3
    assert {"train_bound", "test_elbo", "test_bound_k", "test_bound"} <= set(straight)
    assert straight["test_elbo"] <= straight["test_bound_k"] + 1e-3  # K = 3 bound above the ELBO (same model)
    first = iwae_flags(data, tmp_path / "resumed", name)
    first[first.index("--steps") + 1] = "2"
    assert cli.main(first) == 0
    assert cli.main(iwae_flags(data, tmp_path / "resumed", name, "3", "--resume")) == 0
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    for key in ("train_bound", "test_elbo", "test_bound_k", "test_bound", "grad_var"):
        assert resumed[key] == straight[key], key


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--objective", "iwae", "--estimator", "disarm"], "'disarm' estimates single-sample objectives"),
        (["--objective", "iwae", "--estimator", "vimco", "--num-samples", "1"], "too small for estimator 'vimco'"),
        (["--objective", "iwae", "--estimator", "vimco", "--model", "linear2"], "one stochastic layer"),
        (["--estimator", "vimco"], "--estimator vimco estimates the multi-sample bound: add --objective iwae"),
    ],
)
def test_iwae_usage_errors(tmp_path, capsys, flags, match):
    from armgrad import cli

    with pytest.raises(SystemExit) as raised:
        cli.main(["vae", "--out", str(tmp_path / "r"), *flags])
    assert raised.value.code == 2 and match in capsys.readouterr().err
