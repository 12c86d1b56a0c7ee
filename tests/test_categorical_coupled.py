"""estimators/categorical_coupled.py: categorical DisARM, DisARM-IW and CARMS beyond the generated suite of
test_categorical.py (unbiasedness against enumeration at every budget, one call of f, per-example noise)."""

from __future__ import annotations

import pytest
import torch
from test_categorical import TABLE, assert_unbiased, draw, make_problem

from armgrad import categorical


def test_categorical_disarm_at_two_categories_is_binary_disarm():
    import armgrad

    g = torch.Generator().manual_seed(3)
    phi = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    target = torch.randn(4, 3, generator=g, dtype=torch.float64)
    f_binary = lambda b: ((b - target) ** 2).sum(-1) * torch.cos(b.sum(-1))  # noqa: E731, b = 1 <-> category 0
    f_categorical = lambda z: f_binary(z[..., 0])  # noqa: E731
    for seed in range(3):
        u = armgrad.ESTIMATORS["disarm"].draw_noise(4, phi[..., 0], torch.Generator().manual_seed(seed))
        binary = armgrad.grad(f_binary, phi[..., 0] - phi[..., 1], "disarm", 4, noise=u)
        ours = categorical.grad(f_categorical, phi, "disarm", 4, noise=u.unsqueeze(-1))
        torch.testing.assert_close(ours[..., 0], binary)
        torch.testing.assert_close(ours[..., 1], -binary)


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_disarm_in_either_order_of_the_logits_is_unbiased(order):
    for variables, categories in [(2, 3), (1, 5), (3, 4)]:
        phi, f = make_problem(variables, categories, seed=20 + categories)
        _, exact_grad = categorical.exact(f, phi)
        _, grads = draw(f, phi, "disarm", 2, order=order)
        assert_unbiased(grads, exact_grad, f"disarm, order {order}, D={variables}, C={categories}")


def test_carms_pair_marginal_has_the_right_margins_and_full_support():
    from armgrad.estimators.categorical_coupled import CARMS

    phi = 2 * torch.randn(4, 2, 5, dtype=torch.float64)
    for n in (3, 4, 6):
        joint = CARMS.pair_marginal(phi, n)
        torch.testing.assert_close(joint.sum(-1), torch.softmax(phi, -1))
        torch.testing.assert_close(joint, joint.transpose(-1, -2))
        assert (joint > 0).all()  # every pair can be drawn: the importance weights exist


@pytest.mark.parametrize("name,order", [("disarm", None), ("disarm", "descending"), ("disarm_iw", None)])
def test_stick_breaking_combine_alone_equals_combine_after_sample(name, order):
    """combine() reuses the chain sample() built from the same noise; called on its own it rebuilds it from
    the samples: the two must agree exactly."""
    est, options = TABLE[name], ({"order": order} if order else {})
    phi, f = make_problem(3, 5, seed=30)
    noise = est.draw_noise(4, phi, torch.Generator().manual_seed(0))
    b = est.sample(phi, noise, **options)
    fb = f(b)
    cached = est.combine(fb, b, phi, noise, **options).grad
    rebuilt = est.combine(fb, b, phi, noise.clone(), **options).grad
    torch.testing.assert_close(cached, rebuilt, rtol=0, atol=0)
