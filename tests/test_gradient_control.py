"""Double CV and RODEO: what the generated unbiasedness tests cannot show.

Both stay unbiased for any function in place of df/db and for any control parameters, so a wrong df/db
shows only as variance: exactness on a linear f and variance reduction by training are part of their
proof. The generated tests (test_generated.py) prove unbiasedness, at the initial controls and moved
away from them; the power tests here show why moving them matters."""

import pytest
import torch
from test_generated import make_instance, moderate_logits

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import bias_z_scores, chi2_pvalue, draw_gradients
from armgrad.estimators.gradient_control import RODEO, DoubleCV

from conftest import make_objective, summed_variance, train_controls


def test_double_cv_is_exact_for_a_linear_f_at_alpha_minus_one():
    """The Taylor control of a linear f is f itself: every term but the correction cancels."""
    w = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    phi = moderate_logits(6, 4, seed=1)
    f = lambda b: (b * w).sum(-1) + 3.0  # noqa: E731
    _, truth = armgrad.exact(f, phi)
    for k in (2, 3, 5):
        g = armgrad.grad(
            f, phi, DoubleCV(num_units=4, alpha=-1.0).double(), k, generator=torch.Generator().manual_seed(k)
        )
        torch.testing.assert_close(g, truth)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_training_the_controls_lowers_the_variance_below_leave_one_out(name):
    f = lambda b: ((b - 0.45) ** 2).sum(-1) + 2 * b.prod(-1) + (b[..., 0] - b[..., 1]) ** 2  # noqa: E731
    phi = torch.tensor([[0.5, -0.3, 1.0]], dtype=torch.float64)
    torch.manual_seed(0)
    est = ESTIMATORS[name].create(num_units=3).double()
    loo = summed_variance(f, phi, "reinforce_loo", 2)
    assert summed_variance(f, phi, est, 2) == pytest.approx(loo)  # alpha = beta = 0: leave-one-out REINFORCE
    train_controls(est, f, phi, 2, steps=200)
    assert summed_variance(f, phi, est, 2) < 0.85 * loo, (summed_variance(f, phi, est, 2), loo)
    if name == "double_cv":
        assert est.alpha < -0.2  # towards the Taylor optimum, alpha = -1 for a linear f


class NoCorrection(DoubleCV):
    """Double CV without its correction term: unbiased only at alpha = 0."""

    def gradient(self, fb, b, dfdb, p):
        return super().gradient(fb, b, dfdb, p) + self.alpha.to(fb.dtype) * dfdb.mean(0) * p * (1 - p)


class OwnGradient(RODEO):
    """RODEO with the Taylor increment built from the sample's own df/db: no longer independent of b_k."""

    def taylor_terms(self, dfdb, b):
        return dfdb, (dfdb * b).sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize("wrong", [NoCorrection, OwnGradient])
def test_a_wrong_control_passes_at_zero_and_fails_when_moved(wrong):
    f = make_objective(6, 4, seed=100)
    phi = moderate_logits(6, 4, seed=200)
    _, truth = armgrad.exact(f, phi)

    def z(controls):
        est = make_instance(wrong, 4, controls, seed=0)
        draws = draw_gradients(f, phi, est, 2, 20000, generator=torch.Generator().manual_seed(0))
        return bias_z_scores(draws, truth)

    at_zero = z("initial")
    assert at_zero.abs().max() < 5 and chi2_pvalue(at_zero) > 1e-4
    moved = z("moved")
    assert moved.abs().max() > 10 or chi2_pvalue(moved) < 1e-6


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_by_name_they_ask_to_be_created(name):
    with pytest.raises(ValueError, match=rf"create it with armgrad.ESTIMATORS\['{name}'\].create\(num_units=D\)"):
        armgrad.grad(lambda b: b.sum(-1), torch.zeros(2, 3), name, 2)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_an_f_without_a_gradient_in_b_is_refused(name):
    w = torch.randn(2, requires_grad=True)
    table = lambda b: w[(b[..., 0] > 0.5).long()]  # noqa: E731  depends on w, not differentiably on b
    est = ESTIMATORS[name].create(num_units=3)
    for call in (armgrad.grad, armgrad.estimate):
        with pytest.raises(ValueError, match=f"estimator '{name}' builds its control variates from df/db"):
            call(table, torch.zeros(2, 3), est, 2)


@pytest.mark.parametrize("name", ["double_cv", "rodeo"])
def test_the_pathwise_gradient_still_reaches_what_f_closes_over(name):
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    f = lambda b: (w * (b - 0.4) ** 2).sum(-1)  # noqa: E731
    value = armgrad.estimate(
        f, torch.zeros(3, 4, dtype=torch.float64), ESTIMATORS[name].create(num_units=4).double(), 2
    )
    value.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
