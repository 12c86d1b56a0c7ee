"""estimators/score.py: REINFORCE and REINFORCE-LOO written out by hand on fixed draws (their unbiasedness is
the registry's suites': test_generated.py, test_unbiased.py, test_categorical.py)."""

from __future__ import annotations

import pytest
import torch

from armgrad import ESTIMATORS, categorical


def by_hand(fb, b, p, baseline: bool):
    """``1/K sum_k (f_k - mean_{j != k} f_j) (b_k - p)``, or without the baseline, one term at a time."""
    k = fb.shape[0]
    terms = []
    for i in range(k):
        others = (fb.sum(0) - fb[i]) / (k - 1) if baseline else 0.0
        terms.append((fb[i] - others)[..., None] * (b[i] - p))
    return sum(terms) / k


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("name", ["reinforce", "reinforce_loo"])
def test_the_estimate_is_its_formula(name, k):
    torch.manual_seed(k)
    logits = torch.randn(4, 6, dtype=torch.float64)
    b = (torch.rand(k, 4, 6, dtype=torch.float64) < 0.5).double()
    fb = torch.randn(k, 4, dtype=torch.float64)
    grad = ESTIMATORS[name].combine(fb, b, logits, None).grad
    torch.testing.assert_close(grad, by_hand(fb, b, torch.sigmoid(logits), baseline=name == "reinforce_loo"))


def test_the_pair_form_is_exactly_zero_where_the_two_draws_agree():
    """At K = 2, 1/2 (f1 - f2)(b1 - b2): no rounding noise where b1 = b2 (design: why the pair form)."""
    logits = torch.zeros(1, 3, dtype=torch.float64)
    b = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]]], dtype=torch.float64)
    fb = torch.tensor([[0.1 + 0.2], [0.3]], dtype=torch.float64)  # equal in exact arithmetic, not in floats
    grad = ESTIMATORS["reinforce_loo"].combine(fb, b, logits, None).grad
    assert grad[0, 0].item() == 0.0 and grad[0, 1].item() != 0.0


def test_categorical_reinforce_loo_is_its_formula_with_the_softmax_score():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    z = torch.nn.functional.one_hot(torch.randint(4, (3, 2, 3)), 4).double()
    fz = torch.randn(3, 2, dtype=torch.float64)
    grad = categorical.ESTIMATORS["reinforce_loo"].combine(fz, z, logits, None).grad
    expected = (
        sum((fz[i] - (fz.sum(0) - fz[i]) / 2)[:, None, None] * (z[i] - torch.softmax(logits, -1)) for i in range(3)) / 3
    )
    torch.testing.assert_close(grad, expected)
