"""estimators/base.py: the estimator type's own pieces. The budget rules, the one checked call of f and the
surrogate that carries the gradient (every estimator's behaviour through them: test_api.py, test_generated.py)."""

from __future__ import annotations

import pytest
import torch

from armgrad.estimators.base import Budget, evaluate, per_sample, with_gradient


def test_budget_rules_fixed_and_shape_dependent():
    pairs = Budget(group=2, unit="antithetic pairs", minimum=2)
    assert pairs.valid(3) == 4 and pairs.allowed(8) == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="num_samples must be even"):
        pairs.check(3, "arm")
    swaps = Budget(
        unit="draws of all joint swaps", group_of=lambda shape: shape[1] * (shape[1] - 1) // 2 + 1, rule="C(C-1)/2 + 1"
    )
    assert swaps.size((5, 10)) == 46 and swaps.valid(2, (5, 10)) == 46 and swaps.allowed(100, (5, 10)) == [46, 92]
    with pytest.raises(ValueError, match=r"at least 46 f evaluations .* \(C\(C-1\)/2 \+ 1 = 46 for these logits\)"):
        swaps.check(10, "arsm", (5, 10))
    with pytest.raises(ValueError, match="depends on the logits' shape"):
        swaps.size()
    with pytest.raises(TypeError, match="must be an int"):
        pairs.check(2.0, "arm")


def test_evaluate_checks_what_f_returns():
    b = torch.zeros(3, 4, 5)
    assert evaluate(lambda b: b.sum(-1), b).shape == (3, 4)
    with pytest.raises(ValueError, match=r"f returned shape \(3,\), expected \(3, 4\)"):
        evaluate(lambda b: b.sum((-1, -2)), b)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(lambda b: b.sum(-1) / 0, b)
    one_hot = torch.zeros(3, 4, 5, 2)
    assert evaluate(lambda z: z.sum((-2, -1)), one_hot, event_dims=2).shape == (3, 4)


def test_with_gradient_is_the_surrogate_value_plus_g_dot_phi():
    logits = torch.randn(4, 3, requires_grad=True)
    value, g = torch.randn(4), torch.randn(4, 3)
    out = with_gradient(value, logits, g)
    assert torch.equal(out, value)
    (out * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(logits.grad, per_sample(torch.arange(4.0), 1) * g)
    frozen = torch.randn(4, 3)
    assert with_gradient(value, frozen, g) is value  # no graph to carry it: the value alone
