"""The public contract of docs/design.md section 2: shapes, dtypes, one call of f, generators, errors."""

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.estimators import BINARY_AND_RELAXED, RELAXED, select

from conftest import budget_for, instance

ALL = list(ESTIMATORS)


def smooth_f(b):
    return ((b - 0.3) ** 2).sum(-1) + b[..., 0] * b[..., -1]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 5, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_single_call(name, shape, dtype):
    calls = []

    def f(b):
        calls.append(tuple(b.shape))
        assert b.dtype == dtype

        def relaxed(r):  # in [0, 1] (a float32 sigmoid can round to exactly 0 or 1), and not binary
            return ((r >= 0) & (r <= 1)).all() and ((r > 0) & (r < 1)).any()

        where = ESTIMATORS[name].evaluates_f_at
        if where not in (RELAXED, BINARY_AND_RELAXED):  # binary points, or every state
            assert ((b == 0) | (b == 1)).all()
        elif where == RELAXED:
            assert relaxed(b)
        else:  # the control-variate estimators evaluate f at b and at two relaxations
            third = b.shape[0] // 3
            assert ((b[:third] == 0) | (b[:third] == 1)).all() and relaxed(b[third:])
        return smooth_f(b)

    torch.manual_seed(len(shape))
    logits = torch.randn(shape, dtype=dtype, requires_grad=True)
    out = armgrad.estimate(f, logits, instance(name, logits), budget_for(name))
    assert out.shape == shape[:-1] and out.dtype == dtype
    expected_s = ESTIMATORS[name].evaluations(budget_for(name), shape[-1])
    assert calls == [(expected_s, *shape)]
    out.mean().backward()
    assert logits.grad.shape == shape and torch.isfinite(logits.grad).all()
    g = armgrad.grad(smooth_f, logits, instance(name, logits), budget_for(name))
    assert g.shape == shape and g.dtype == dtype and not g.requires_grad


@pytest.mark.parametrize("name", ALL)
def test_estimate_backward_equals_grad_on_the_same_seed(name):
    layer = torch.nn.Linear(5, 4).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    logits = layer(x)
    est = instance(name, logits)
    out = armgrad.estimate(smooth_f, logits, est, budget_for(name), generator=torch.Generator().manual_seed(3))
    (dlogits,) = torch.autograd.grad(out.sum(), logits, retain_graph=True)
    g = armgrad.grad(smooth_f, logits, est, budget_for(name), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(dlogits, g)
    out.sum().backward()  # and the estimator's gradient flows on into the network producing the logits
    torch.testing.assert_close(layer.weight.grad, g.T @ x)


@pytest.mark.parametrize("name", [n for n in ALL if ESTIMATORS[n].noise_shape(2, (3,)) is not None])
def test_generator_reproducibility(name):
    logits = torch.randn(7, 6)
    est, budget = instance(name, logits), ESTIMATORS[name].valid_budget(4)
    first = armgrad.grad(smooth_f, logits, est, budget, generator=torch.Generator().manual_seed(11))
    again = armgrad.grad(smooth_f, logits, est, budget, generator=torch.Generator().manual_seed(11))
    other = armgrad.grad(smooth_f, logits, est, budget, generator=torch.Generator().manual_seed(12))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    torch.manual_seed(5)
    global_a = armgrad.grad(smooth_f, logits, est, budget)
    torch.manual_seed(5)
    assert torch.equal(global_a, armgrad.grad(smooth_f, logits, est, budget))


def test_common_random_numbers_feed_ar_and_arm_the_same_noise():
    logits = torch.randn(3, 4)
    u = ESTIMATORS["arm"].draw_noise(2, logits, torch.Generator().manual_seed(0))
    assert u.shape == ESTIMATORS["ar"].noise_shape(1, logits.shape) == (1, 3, 4)
    p = torch.sigmoid(logits)
    seen = []
    armgrad.grad(lambda b: seen.append(b) or smooth_f(b), logits, "ar", 1, noise=u)
    armgrad.grad(lambda b: seen.append(b) or smooth_f(b), logits, "arm", 2, noise=u)
    assert torch.equal(seen[0][0], (u[0] < p).float())  # AR's sample is ARM's second branch
    assert torch.equal(seen[1][1], seen[0][0])
    assert torch.equal(seen[1][0], (u[0] > torch.sigmoid(-logits)).float())


def test_exact_is_deterministic_and_reports_value():
    logits = torch.tensor([[0.0, 0.0]])
    value, g = armgrad.exact(lambda b: b.sum(-1), logits)
    torch.testing.assert_close(value, torch.tensor([1.0]))
    torch.testing.assert_close(g, torch.tensor([[0.25, 0.25]]))


def test_budget_and_noise_facts():
    assert ESTIMATORS["rebar"].evaluations(6) == 6 and ESTIMATORS["rebar"].valid_budget(2) == 3
    assert ESTIMATORS["arm"].evaluations(6) == 6 and ESTIMATORS["exact"].evaluations(0, 5) == 32
    assert ESTIMATORS["arm"].noise_shape(6, torch.Size([2, 3])) == (3, 2, 3)
    assert all(e.reference and e.summary for e in ESTIMATORS.values())


# ---- bad input -------------------------------------------------------------------------------


def test_non_float_logits():
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        armgrad.estimate(smooth_f, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        armgrad.grad(smooth_f, [[0.0, 1.0]])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits(bad):
    logits = torch.zeros(2, 3)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match="logits contains non-finite"):
        armgrad.estimate(smooth_f, logits)


def test_logits_without_event_dimension():
    with pytest.raises(ValueError, match="event dimension"):
        armgrad.estimate(smooth_f, torch.tensor(0.5))
    with pytest.raises(ValueError, match="D = 0"):
        armgrad.estimate(smooth_f, torch.zeros(3, 0))


@pytest.mark.parametrize("name", ALL)
def test_f_returning_wrong_shape(name):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"f returned shape .* expected"):
        armgrad.grad(lambda b: b.sum(), logits, instance(name, logits), budget_for(name))
    with pytest.raises(ValueError, match=r"f returned shape \(.*, 2, 3\)"):
        armgrad.grad(lambda b: b, logits, instance(name, logits), budget_for(name))


@pytest.mark.parametrize("name", ALL)
def test_f_returning_non_finite(name):
    with pytest.raises(ValueError, match="f returned non-finite"):
        armgrad.grad(
            lambda b: b.sum(-1) / 0.0 - b.sum(-1) / 0.0,
            torch.zeros(2, 3),
            instance(name, torch.zeros(2, 3)),
            budget_for(name),
        )


def test_huge_but_finite_values_are_accepted():
    """The fast finite check (one sum) must not mistake an overflowing sum for a nan."""
    big = torch.finfo(torch.float32).max / 2
    g = armgrad.grad(lambda b: big * torch.ones(b.shape[:-1]), torch.full((8, 3), 1e30), "arm", 2)
    assert torch.isfinite(g).all()


def test_f_returning_other_types():
    with pytest.raises(TypeError, match="f must return a torch.Tensor"):
        armgrad.grad(lambda b: 1.0, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        armgrad.grad(lambda b: b.sum(-1).long(), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="f must be callable"):
        armgrad.grad(3, torch.zeros(2, 3))


@pytest.mark.parametrize(
    "name,budget,match",
    [
        ("arm", 3, "must be even"),
        ("disarm", 1, "at least 2"),
        ("arm", 0, "at least 2"),
        ("reinforce", 0, "at least 1"),
        ("reinforce_loo", 1, "at least 2"),
        ("arms", 1, "at least 2"),
    ],
)
def test_bad_budget(name, budget, match):
    with pytest.raises(ValueError, match=match):
        armgrad.estimate(smooth_f, torch.zeros(2, 3), name, budget)


def test_non_integer_budget():
    with pytest.raises(TypeError, match="num_samples must be an int"):
        armgrad.estimate(smooth_f, torch.zeros(2, 3), "arm", 2.0)


def test_unknown_estimator_suggests_close_name():
    with pytest.raises(ValueError, match="unknown estimator 'dsiarm'. Did you mean 'disarm'"):
        armgrad.estimate(smooth_f, torch.zeros(2, 3), "dsiarm")
    with pytest.raises(TypeError, match="estimator must be a name"):
        armgrad.estimate(smooth_f, torch.zeros(2, 3), 42)


def test_enumeration_over_too_many_units():
    with pytest.raises(ValueError, match=r"D=21 units needs 2\*\*21 = 2097152 evaluations"):
        armgrad.exact(smooth_f, torch.zeros(21))
    with pytest.raises(ValueError, match="D <= 4"):
        armgrad.exact(smooth_f, torch.zeros(5), max_units=4)


def test_bad_noise():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"needs \(1, 2, 3\)"):
        armgrad.grad(smooth_f, logits, "arm", 2, noise=torch.rand(2, 2, 3))
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\)"):
        armgrad.grad(smooth_f, logits, "arm", 2, noise=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="draws no noise"):
        armgrad.grad(smooth_f, logits, "exact", 0, noise=torch.rand(1, 2, 3))


@pytest.mark.parametrize("name", select(needs_df_db=True))
def test_f_that_cannot_take_relaxed_inputs(name):
    logits = torch.zeros(2, 3)
    thresholded = lambda b: (b > 0.5).float().sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="does not depend differentiably on b"):
        armgrad.grad(thresholded, logits, instance(name, logits), budget_for(name))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_generator_that_is_not_one_is_named(name):
    logits = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        armgrad.grad(smooth_f, logits, instance(name, logits), budget_for(name), generator=7)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        armgrad.estimate(smooth_f, logits, instance(name, logits), budget_for(name), generator=7)


def test_unknown_option_is_an_error_not_silence():
    with pytest.raises(ValueError, match="estimator 'gumbel' has no option 'temperatre'; its options: temperature"):
        armgrad.grad(smooth_f, torch.zeros(2, 3), "gumbel", 2, temperatre=0.1)
    with pytest.raises(ValueError, match="estimator 'arm' has no option 'temperature'; it takes no options"):
        armgrad.grad(smooth_f, torch.zeros(2, 3), "arm", 2, temperature=0.1)
    assert ESTIMATORS["exact"].option_names() == ("max_units",)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        armgrad.grad(smooth_f, torch.zeros(2, 3), "gumbel", 2, temperature=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ALL)
def test_cuda(name):
    logits = torch.randn(4, 3, device="cuda", requires_grad=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    est = instance(name, logits)
    est = est.to("cuda") if not isinstance(est, str) else est
    out = armgrad.estimate(smooth_f, logits, est, budget_for(name), generator=gen)
    out.sum().backward()
    assert out.device.type == "cuda" and logits.grad.device.type == "cuda"
