"""REBAR and RELAX: unbiased for any control parameters, trainable, and leak-free."""

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import bias_z_scores, chi2_pvalue, draw_gradients
from armgrad.estimators import Rebar, Relax, control

from conftest import make_logits, make_objective, summed_variance, train_controls


def random_controls(kind, units, seed):
    torch.manual_seed(seed)
    est = (Rebar() if kind == "rebar" else Relax(units, hidden=8)).double()
    with torch.no_grad():
        est.log_temperature.fill_(float(torch.empty(()).uniform_(-2, 1)))
        est.scale.fill_(float(torch.empty(()).uniform_(-1, 2)))
        if kind == "relax":
            for p in est.network.parameters():
                p.normal_(0, 0.7)
    return est


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rebar", "relax"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_for_any_control_parameters(kind, seed):
    f = make_objective(6, 4, seed=80 + seed)
    phi = make_logits(6, 4, seed=90 + seed)
    _, exact_grad = armgrad.exact(f, phi)
    est = random_controls(kind, 4, seed)
    # budget 12 = 4 hard draws per estimate, so that the rare value of a |phi| = 8 unit shows up
    # about 27 times in 20,000 estimates (at budget 3, only 7 times: too few for a z-test)
    draws = draw_gradients(f, phi, est, 12, 20000, generator=torch.Generator().manual_seed(seed))
    z = bias_z_scores(draws, exact_grad)
    assert z.abs().max() < 5 and chi2_pvalue(z) > 1e-4, z


def test_rebar_by_name_is_unbiased():
    f = make_objective(6, 4, seed=85)
    phi = make_logits(6, 4, seed=86)
    _, exact_grad = armgrad.exact(f, phi)
    draws = draw_gradients(f, phi, "rebar", 12, 20000, generator=torch.Generator().manual_seed(5))
    z = bias_z_scores(draws, exact_grad)
    assert z.abs().max() < 5 and chi2_pvalue(z) > 1e-4, z


def test_dropping_the_logit_dependence_of_the_conditional_sample_is_detected(monkeypatch):
    """The classic porting bug (z~ computed from detached logits) biases REBAR; the test sees it."""
    f = make_objective(6, 4, seed=80)
    phi = make_logits(6, 4, seed=90)
    _, exact_grad = armgrad.exact(f, phi)
    original = control.conditional_relaxed
    monkeypatch.setattr(control, "conditional_relaxed", lambda logits, b, v: original(logits.detach(), b, v))
    draws = draw_gradients(f, phi, "rebar", 12, 20000, generator=torch.Generator().manual_seed(0))
    z = bias_z_scores(draws, exact_grad)
    assert z.abs().max() > 10


def test_conditional_sample_has_the_right_law():
    """Mixing z~ | b over b ~ Bernoulli(p) gives back z ~ Logistic(phi, 1), with sign(z~) = 2b - 1."""
    n, phi = 200000, torch.tensor([0.7], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    b = (torch.rand(n, 1, generator=g, dtype=torch.float64) < torch.sigmoid(phi)).double()
    z = control.conditional_relaxed(phi, b, torch.rand(n, 1, generator=g, dtype=torch.float64))
    assert torch.equal((z > 0).double(), b)
    grid = torch.linspace(-4, 5, 19, dtype=torch.float64)
    empirical = (z <= grid).double().mean(0)
    assert (empirical - torch.sigmoid(grid - phi)).abs().max() < 0.005


def test_control_signal_does_not_leak_into_model_parameters():
    w = torch.randn(3, 4, requires_grad=True)
    f = lambda b: (w * (b - 0.4) ** 2).sum(-1)  # noqa: E731
    logits = torch.randn(3, 4, requires_grad=True)
    relax = ESTIMATORS["relax"].create(num_units=4)
    value = armgrad.estimate(f, logits, relax, 3)
    value.sum().backward()
    w_grad, logits_grad = w.grad.clone(), logits.grad.clone()
    loss = relax.backward_variance()
    assert loss > 0
    assert torch.equal(w.grad, w_grad) and torch.equal(logits.grad, logits_grad)
    assert relax.scale.grad is not None and relax.log_temperature.grad is not None
    assert relax.network[0].weight.grad is not None


@pytest.mark.parametrize("kind", ["rebar", "relax"])
def test_training_the_controls_lowers_the_variance(kind):
    f = lambda b: ((b - 0.45) ** 2).sum(-1) + 2 * b.prod(-1)  # noqa: E731
    phi = torch.tensor([[0.5, -0.3, 1.0]], dtype=torch.float64)
    est = ESTIMATORS[kind].create(num_units=3, scale=0.0).double()
    before = summed_variance(f, phi, est, 3)
    train_controls(est, f, phi, 3, steps=150)
    assert summed_variance(f, phi, est, 3) < 0.5 * before


def test_control_estimator_errors():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"create\(num_units=D\)"):
        armgrad.grad(lambda b: b.sum(-1), logits, "relax", 3)
    with pytest.raises(ValueError, match="multiple of 3"):
        armgrad.grad(lambda b: b.sum(-1), logits, "rebar", 4)
    with pytest.raises(ValueError, match="built for 5 units"):
        armgrad.grad(lambda b: b.sum(-1), logits, Relax(5), 3)
    with pytest.raises(TypeError, match="move it with"):
        armgrad.grad(lambda b: b.sum(-1), logits.double(), Relax(3), 3)
    with pytest.raises(RuntimeError, match="no estimate with trainable controls"):
        Rebar().backward_variance()
    with pytest.raises(ValueError, match="temperature must be positive"):
        Rebar(temperature=0.0)


def test_conditional_sample_and_its_gradient_stay_finite_at_extreme_logits():
    """float32 logits of +-120: the sigmoid of the other sign underflows to 0; nothing may become nan."""
    phi = torch.tensor([[-120.0, -30.0, 0.0, 30.0, 120.0]], requires_grad=True)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(64, 1, 5, generator=g).clamp(min=1e-7, max=1 - 1e-7)
    for b in (torch.zeros(64, 1, 5), torch.ones(64, 1, 5)):
        z = control.conditional_relaxed(phi, b, v)
        (grad,) = torch.autograd.grad(torch.sigmoid(z / 0.5).sum(), phi, create_graph=True)
        assert torch.isfinite(grad).all() and not torch.isnan(z).any()
        assert torch.equal(z > 0, b > 0)
