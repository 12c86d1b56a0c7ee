"""Unbiasedness against exact enumeration at the extremes (|phi| = 8), as z-tests with fixed seeds.

The registry-generated tests (``test_generated.py``) cover every estimator at every budget with
moderate logits; these add the extreme logits, float32 and the value and pathwise parts.

For R independent draws, ``z = (mean - exact) / sqrt(var / R)`` per coordinate. An unbiased
estimator gives z-scores that look standard normal: we require ``max |z| < 5`` over all
coordinates and a chi-square p-value of ``sum z^2`` above 1e-4. A sign slip or a wrong factor gives
|z| in the tens (the power tests below prove that the check can fail).
"""

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import bias_z_scores, chi2_pvalue, draw_gradients
from armgrad.estimators.antithetic import _arms_joint_low

from conftest import UNBIASED, make_logits, make_objective

DRAWS = 20000


def assert_unbiased(draws, exact_grad):
    z = bias_z_scores(draws, exact_grad)
    assert z.abs().max() < 5, f"max |z| = {z.abs().max():.2f}\nz = {z}"
    assert chi2_pvalue(z) > 1e-4, f"chi2 p = {chi2_pvalue(z):.2e}\nz = {z}"


@pytest.mark.parametrize("name", UNBIASED)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_against_enumeration(name, seed):
    f = make_objective(6, 4, seed=10 + seed)
    phi = make_logits(6, 4, seed=20 + seed)
    budget = 4 if name != "arms" else 3 + seed  # ARMS with n = 3, 4, 5
    _, exact_grad = armgrad.exact(f, phi)
    gen = torch.Generator().manual_seed(seed)
    draws = draw_gradients(f, phi, name, budget, DRAWS, generator=gen)
    assert_unbiased(draws, exact_grad)


@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_at_smallest_budget_float32(name):
    f = make_objective(6, 4, seed=5, dtype=torch.float32)
    phi = make_logits(6, 4, seed=6, dtype=torch.float32)
    _, exact_grad = armgrad.exact(f, phi)
    draws = draw_gradients(
        f, phi, name, ESTIMATORS[name].valid_budget(2), DRAWS, generator=torch.Generator().manual_seed(7)
    )
    assert draws.dtype == torch.float32
    assert_unbiased(draws, exact_grad)


@pytest.mark.parametrize("name", UNBIASED)
def test_value_is_unbiased_for_expectation(name):
    f = make_objective(6, 4, seed=8)
    phi = make_logits(6, 4, seed=9)
    exact_value, _ = armgrad.exact(f, phi)
    r = 20000

    def folded(b):
        s = b.shape[0]
        return f(b.reshape(s * r, 6, 4)).reshape(s, r, 6)

    values = armgrad.estimate(
        folded, phi.expand(r, 6, 4), name, 2 if name != "arms" else 3, generator=torch.Generator().manual_seed(1)
    )
    assert values.shape == (r, 6)
    assert_unbiased(values, exact_value)


@pytest.mark.parametrize("name", UNBIASED)
def test_pathwise_gradient_of_closed_over_parameters_is_unbiased(name):
    r, batch, units = 5000, 3, 4
    g = torch.Generator().manual_seed(11)
    phi = make_logits(batch, units, seed=12)
    target = torch.rand(batch, units, generator=g, dtype=torch.float64)
    w0 = torch.randn(batch, units, generator=g, dtype=torch.float64)

    def objective(w):
        return lambda b: (w * (b - target) ** 2).sum(-1) + torch.sin((w * b).sum(-1))

    w_exact = w0.clone().requires_grad_(True)
    value, _ = armgrad.exact(objective(w_exact), phi)
    value.sum().backward()
    # one independent copy of w per draw, so that w.grad[r] is the r-th draw's gradient
    w = w0.expand(r, batch, units).clone().requires_grad_(True)
    armgrad.estimate(
        objective(w),
        phi.expand(r, batch, units),
        name,
        2 if name != "arms" else 3,
        generator=torch.Generator().manual_seed(3),
    ).sum().backward()
    assert_unbiased(w.grad, w_exact.grad)


@pytest.mark.parametrize("slip", ["sign", "half", "no_debias"])
def test_the_check_detects_a_wrong_estimator(slip):
    """The bias test has power: a sign slip, a factor of two, a missing debias all fail it."""
    f = make_objective(6, 4, seed=10)
    phi = make_logits(6, 4, seed=20)
    _, exact_grad = armgrad.exact(f, phi)
    gen = torch.Generator().manual_seed(0)
    if slip == "no_debias":  # ARMS n = 4 without the p(1-p) / (p - J(p)) factor
        m = torch.sigmoid(-phi.abs())
        draws = draw_gradients(f, phi, "arms", 4, DRAWS, generator=gen)
        draws = draws / ((1 - m) * m / (m - _arms_joint_low(m, 4)))
    else:
        draws = draw_gradients(f, phi, "arm", 4, DRAWS, generator=gen)
        draws = -draws if slip == "sign" else draws / 2
    z = bias_z_scores(draws, exact_grad)
    assert z.abs().max() > 10 or chi2_pvalue(z) < 1e-6
