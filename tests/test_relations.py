"""Known relations between estimators, and the behaviour of the biased ones."""

import math

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import closed_form_estimators, compare, draw_gradients, exact_variance_1d

from conftest import UNBIASED, make_logits, make_objective


def folded(f, r, batch):
    return lambda b: f(b.reshape(b.shape[0] * r, *b.shape[2:])).reshape(b.shape[0], r, *batch)


@pytest.mark.parametrize("name", closed_form_estimators())
@pytest.mark.parametrize("logit", [-2.0, 0.1, 3.0])
def test_one_unit_variance_matches_closed_form(name, logit):
    f0, f1 = 0.3, -0.45
    phi = torch.tensor([logit], dtype=torch.float64)
    f = lambda b: f1 * b[..., 0] + f0 * (1 - b[..., 0])  # noqa: E731
    budget = ESTIMATORS[name].valid_budget(1)
    draws = draw_gradients(f, phi, name, budget, 200000, generator=torch.Generator().manual_seed(4))
    exact_var = exact_variance_1d(name, logit, f0, f1)
    # the sample variance of R draws has relative standard error about sqrt(2 / R) * kurtosis term
    assert draws[:, 0].var().item() == pytest.approx(exact_var, rel=0.05)


def test_variance_ordering_on_the_toy_problem():
    """On ``sum_d (b_d - 0.49)^2`` the literature's order holds: DisARM <= ARM < AR, REINFORCE."""
    f = lambda b: ((b - 0.49) ** 2).sum(-1)  # noqa: E731
    phi = make_logits(4, 4, seed=61).clamp(-3, 3)
    report = compare(
        f,
        phi,
        ["reinforce", "ar", "arm", "disarm", "reinforce_loo", "arms"],
        2,
        20000,
        generator=torch.Generator().manual_seed(0),
    )
    v = {row.name: row.variance_x_cost for row in report.rows}
    assert v["disarm"] <= v["arm"] < v["ar"]
    assert v["arm"] < v["reinforce"]
    assert "| disarm | yes | 2 |" in report.table()


def test_biased_estimators_are_reported_as_biased():
    f = make_objective(4, 3, seed=72)
    phi = make_logits(4, 3, seed=73).clamp(-2, 2)
    report = compare(f, phi, ["st", "gumbel", "arm"], 2, 20000, generator=torch.Generator().manual_seed(2))
    assert report["st"].max_abs_z > 10 and report["gumbel"].max_abs_z > 10
    assert report["arm"].max_abs_z < 5
    assert not report["st"].unbiased and report["arm"].unbiased


def test_exact_variance_closed_forms_agree_at_the_symmetric_point():
    # at p = 1/2 ARM's pair always differs, and DisARM has zero conditional spread
    assert exact_variance_1d("disarm", 0.0, 0.0, 1.0) == pytest.approx(0.0, abs=1e-15)
    assert exact_variance_1d("arm", 0.0, 0.0, 1.0) == pytest.approx(1 / 12 - 1 / 16)
    assert math.isclose(exact_variance_1d("reinforce", 0.0, 1.0, 1.0), 0.25 - 0.0)


NOT_SHIFT_INVARIANT = {"reinforce", "ar"}  # the estimators without a baseline or a pairing


@pytest.mark.parametrize("name", UNBIASED)
def test_invariance_to_a_constant_added_to_f(name):
    """Baselined and antithetic estimators ignore a constant shift of f; plain ones do not."""
    f = make_objective(4, 4, seed=62)
    phi = make_logits(4, 4, seed=63)
    budget = ESTIMATORS[name].valid_budget(4)
    u = ESTIMATORS[name].draw_noise(budget, phi, torch.Generator().manual_seed(0))
    g = armgrad.grad(f, phi, name, budget, noise=u)
    g_shifted = armgrad.grad(lambda b: f(b) + 100.0, phi, name, budget, noise=u)
    if name in NOT_SHIFT_INVARIANT:
        assert not torch.allclose(g, g_shifted)
    else:
        torch.testing.assert_close(g, g_shifted, rtol=1e-9, atol=1e-9)


# REINFORCE's mean on this f is a difference of terms 25 times larger, which the grid's step at u = p
# resolves only to ~1e-3: the augmented estimators, whose f values enter as a difference, are checked
@pytest.mark.parametrize("name", ["ar", "arm", "disarm"])
@pytest.mark.parametrize("logit", [-2.0, 0.3, 4.0])
def test_closed_form_variance_matches_quadrature_over_u(name, logit):
    """The estimators themselves, evaluated on a midpoint grid of u, integrate to the closed form."""
    n, f0, f1 = 400_000, 0.2401, 0.2601  # the toy problem's f(0), f(1) at p0 = 0.49
    u = ((torch.arange(n, dtype=torch.float64) + 0.5) / n).view(1, n, 1)
    logits = torch.full((n, 1), logit, dtype=torch.float64)
    f = lambda b: f1 * b[..., 0] + f0 * (1 - b[..., 0])  # noqa: E731
    g = armgrad.grad(f, logits, name, ESTIMATORS[name].valid_budget(1), noise=u)[:, 0]
    p = 1 / (1 + math.exp(-logit))
    assert g.mean().item() == pytest.approx(p * (1 - p) * (f1 - f0), rel=1e-4)
    assert (g**2).mean().item() - g.mean().item() ** 2 == pytest.approx(
        exact_variance_1d(name, logit, f0, f1), rel=1e-3, abs=1e-15
    )
