"""The multi-layer recipe: its power, its single call of f, its errors, and T = 1.

Unbiasedness of every registered estimator through chains of two and three layers is generated from
the registry in ``test_generated.py``; the enumeration here is the reference for the power test."""

import itertools

import pytest
import torch

from armgrad import ESTIMATORS
from armgrad.diagnostics import bias_z_scores, chi2_pvalue
from armgrad.network import chain_estimate

from conftest import instance

R, B, D0, D1, D2 = 4000, 3, 3, 2, 3


def make_chain(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D0, generator=g, dtype=torch.float64)
    w0 = 1.5 * torch.randn(D0, D1, generator=g, dtype=torch.float64)
    w1 = 1.5 * torch.randn(D1, D2, generator=g, dtype=torch.float64)
    c1 = torch.randn(D2, generator=g, dtype=torch.float64)
    a = torch.randn(D1 + D2, D1 + D2, generator=g, dtype=torch.float64)
    target = torch.rand(B, D1 + D2, generator=g, dtype=torch.float64)

    def objective(samples, logits):
        b = torch.cat(samples, -1)
        return ((b - target) ** 2).sum(-1) + ((b @ a) * b).sum(-1) + torch.sin(logits[1].sum(-1))

    return x, (w0, w1, c1), objective


def exact_gradients(x, params, objective):
    w0, w1, c1 = (p.clone().requires_grad_(True) for p in params)
    phi1 = x @ w0
    total = 0
    for bits in itertools.product([0.0, 1.0], repeat=D1 + D2):
        b = torch.tensor(bits, dtype=torch.float64)
        b1, b2 = b[:D1].expand(B, D1), b[D1:].expand(B, D2)
        phi2 = b1 @ w1 + c1
        log_q = torch.distributions.Bernoulli(logits=phi1).log_prob(b1).sum(-1) + torch.distributions.Bernoulli(
            logits=phi2
        ).log_prob(b2).sum(-1)
        f = objective([b1.unsqueeze(0), b2.unsqueeze(0)], [phi1.detach().unsqueeze(0), phi2.detach().unsqueeze(0)])[0]
        total = total + (log_q.exp() * f).sum()
    return torch.autograd.grad(total, (w0, w1, c1))


def test_a_missing_propagation_is_detected():
    """Holding the layer above fixed instead of re-drawing it for each branch biases layer 1."""
    x, params, objective = make_chain(seed=3)
    exact = exact_gradients(x, params, objective)
    w0, w1, c1 = (p.expand(R, *p.shape).clone().requires_grad_(True) for p in params)
    frozen = {}

    def stale_top(h):  # returns the logits of the first call for every later call: no propagation
        out = h @ w1 + c1.unsqueeze(-2)
        frozen.setdefault("phi", out)
        return frozen["phi"].expand_as(out) if frozen["phi"].shape != out.shape else out

    value = chain_estimate(
        objective,
        [lambda h: h @ w0, stale_top],
        x.expand(R, B, D0),
        "arm",
        2,
        generator=torch.Generator().manual_seed(0),
    )
    value.sum().backward()
    z = bias_z_scores(w0.grad, exact[0])
    assert z.abs().max() > 5 or chi2_pvalue(z) < 1e-6


def test_fused_estimators_call_f_once_with_all_branches():
    x, params, objective = make_chain(seed=4)
    w0, w1, c1 = params
    calls = []

    def counting(samples, logits):
        calls.append(tuple(s.shape for s in samples))
        return objective(samples, logits)

    chain_estimate(counting, [lambda h: h @ w0, lambda h: h @ w1 + c1], x, "arm", 2)
    assert calls == [((4, B, D1), (4, B, D2))]  # 2 layers x one antithetic pair
    calls.clear()
    chain_estimate(counting, [lambda h: h @ w0, lambda h: h @ w1 + c1], x, ["disarm", "st"], 2)
    assert len(calls) == 2  # st differentiates f: a call of its own


def test_chain_errors():
    x, params, objective = make_chain(seed=4)
    with pytest.raises(ValueError, match="got 3 estimators for 2 layers"):
        chain_estimate(objective, [lambda h: h, lambda h: h], x, ["arm"] * 3, 2)
    with pytest.raises(ValueError, match="must be even"):
        chain_estimate(objective, [lambda h: h, lambda h: h], x, "arm", 3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        chain_estimate(objective, [lambda h: h, lambda h: h], x, "arm", 2, generator=0)
    with pytest.raises(TypeError, match=r"layers\[1\] must be callable .*, got Tensor"):
        chain_estimate(objective, [lambda h: h, torch.zeros(3)], x, "arm", 2)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_one_layer_chain_is_the_plain_estimate(name):
    """With T = 1 the recipe is exactly armgrad.estimate on the layer's logits."""
    import armgrad

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 5, generator=g, dtype=torch.float64)
    f = lambda b: ((b - target) ** 2).sum(-1)  # noqa: E731
    budget, est = ESTIMATORS[name].valid_budget(2), instance(name, 5)
    chained = chain_estimate(
        lambda s, _: f(s[0]), [lambda h: h @ w], x, est, budget, generator=torch.Generator().manual_seed(1)
    )
    (g_chain,) = torch.autograd.grad(chained.sum(), w)
    # no ancestral sample is drawn for the last layer (the estimator replaces it): the same noise
    gen = torch.Generator().manual_seed(1)
    plain = armgrad.estimate(f, x @ w, est, budget, generator=gen)
    (g_plain,) = torch.autograd.grad(plain.sum(), w)
    torch.testing.assert_close(chained, plain)
    torch.testing.assert_close(g_chain, g_plain)


def test_rebar_with_hard_upper_layers_is_detected(monkeypatch):
    """REBAR's control needs the layers above relaxed with shared noise; drawn hard, layer 1 is biased."""
    from test_generated import CHAIN_DRAWS, brute_force_chain, layer_fns, make_chain

    from armgrad import network

    x, params, objective = make_chain(2, seed=300)
    _, truth = brute_force_chain(x, params, objective)
    monkeypatch.setattr(
        network,
        "_relaxed_configurations",
        lambda base_samples, base_logits, layers, t, stacked, temperature, generator: network._configurations(
            base_samples, base_logits, layers, t, stacked, base_logits[t].detach(), generator
        ),
    )
    copies = [p.expand(CHAIN_DRAWS, *p.shape).clone().requires_grad_(True) for p in params]
    value = chain_estimate(
        objective,
        layer_fns(copies, CHAIN_DRAWS),
        x.expand(CHAIN_DRAWS, *x.shape),
        "rebar",
        3,
        generator=torch.Generator().manual_seed(0),
    )
    value.sum().backward()
    z = bias_z_scores(copies[0].grad, truth[0])
    assert z.abs().max() > 10
