"""The distribution families (``armgrad.families``): each one's sampler, score, log-probability and states
agree with one another and with torch.distributions, which shares no code with them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from armgrad.families import (
    BERNOULLI,
    CATEGORICAL,
    FAMILIES,
    bernoulli_log_prob,
    categorical_log_prob,
    softmax,
)


def logits_for(family, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (4, 3) if family is BERNOULLI else (4, 3, 5)
    return 2 * torch.randn(shape, generator=g, dtype=torch.float64)


def reference(family, logits):
    if family is BERNOULLI:
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 1)
    return torch.distributions.Independent(torch.distributions.OneHotCategorical(logits=logits), 1)


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))
def test_states_log_prob_and_score_against_torch_distributions(family):
    phi = logits_for(family)
    event = family.event_shape(phi.shape)
    states = family.states(event, phi.dtype)
    assert states.shape == (family.num_states(event), *event)
    assert len({tuple(s.flatten().tolist()) for s in states}) == states.shape[0]  # all distinct
    x = states.view(states.shape[0], *([1] * (phi.dim() - len(event))), *event).expand(states.shape[0], *phi.shape)
    log_q = family.log_prob(x, phi)
    torch.testing.assert_close(log_q, reference(family, phi).log_prob(x))
    torch.testing.assert_close(log_q.exp().sum(0), torch.ones(phi.shape[: phi.dim() - len(event)], dtype=phi.dtype))
    leaf = phi.clone().requires_grad_(True)
    (autograd_score,) = torch.autograd.grad(family.log_prob(x[5], leaf).sum(), leaf)
    torch.testing.assert_close(family.score(x[5], phi), autograd_score)


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))
def test_the_sampler_draws_from_the_distribution(family):
    phi = logits_for(family, seed=1)
    n = 40000
    u = torch.rand((n, *phi.shape), generator=torch.Generator().manual_seed(2), dtype=phi.dtype).clamp_(min=1e-300)
    x = family.sample(phi, u)
    probs = family.probs(phi)
    freq = x.mean(0)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() / se).max() < 5
    if family is CATEGORICAL:
        assert torch.equal(x.sum(-1), torch.ones(x.shape[:-1], dtype=x.dtype))  # one-hot


def test_softmax_is_torchs_to_rounding_and_stable_at_extreme_logits():
    x = torch.randn(50, 20, 10, dtype=torch.float64) * 30
    x[0, 0] = torch.tensor([1000.0, -1000.0, 0, 0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(softmax(x), torch.softmax(x, -1))
    assert math.isclose(float(softmax(x)[0, 0, 0]), 1.0)


def test_bad_categorical_logits_are_named():
    with pytest.raises(ValueError, match="C >= 2"):
        CATEGORICAL.check_logits(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="D = 0"):
        CATEGORICAL.check_logits(torch.zeros(3, 0, 4))


@pytest.mark.parametrize("family", [BERNOULLI, CATEGORICAL])
def test_a_family_stays_one_object_through_copies_and_pickles(family):
    """The registry is keyed by the family objects: a model deep-copied (a study stacks copies of a
    model) or unpickled must still name the same family."""
    import copy
    import pickle

    assert copy.copy(family) is family and copy.deepcopy(family) is family
    assert pickle.loads(pickle.dumps(family)) is family
    assert copy.deepcopy({"family": family})["family"] is family


@pytest.mark.parametrize(
    "logits_shape, value_shape",
    [((3, 4, 5), (3, 4, 5)), ((5,), (3, 4, 5)), ((3, 4, 5), (4, 5)), ((2, 3, 5), (1, 3, 5))],
    ids=["same", "prior", "data", "both-broadcast"],
)
def test_bernoulli_log_prob_is_one_node_with_exact_first_and_second_derivatives(logits_shape, value_shape):
    """The written-out backward of :func:`bernoulli_log_prob` against finite differences, in both inputs (relaxed
    values), under broadcasting either way, and twice (REBAR's and RELAX's controls differentiate it again)."""
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(logits_shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    value = torch.rand(value_shape, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, value))
    assert torch.autograd.gradgradcheck(bernoulli_log_prob, (logits, value))
    shape = torch.broadcast_shapes(logits_shape, value_shape)
    expected = -F.binary_cross_entropy_with_logits(logits.expand(shape), value.expand(shape), reduction="none").sum(-1)
    torch.testing.assert_close(bernoulli_log_prob(logits, value), expected)
    assert bernoulli_log_prob(logits, value).grad_fn.name().endswith("_BernoulliLogProbBackward")


def test_bernoulli_log_prob_is_stable_at_extreme_logits():
    logits = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0]]).T  # (5, 1): one unit each
    ones, zeros = bernoulli_log_prob(logits, torch.ones(5, 1)), bernoulli_log_prob(logits, torch.zeros(5, 1))
    torch.testing.assert_close(ones, torch.tensor([-200.0, -30.0, -math.log(2), 0.0, 0.0]))
    torch.testing.assert_close(zeros, torch.tensor([0.0, 0.0, -math.log(2), -30.0, -200.0]))


@pytest.mark.parametrize(
    "logits_shape, value_shape",
    [((3, 4, 5, 6), (3, 4, 5, 6)), ((5, 6), (3, 4, 5, 6)), ((3, 4, 5, 6), (4, 5, 6))],
    ids=["same", "prior", "broadcast-value"],
)
def test_categorical_log_prob_is_one_node_with_exact_first_and_second_derivatives(logits_shape, value_shape):
    """As the Bernoulli one: finite differences in both inputs to second order, with values off the simplex too
    (the gradient's general form ``value - softmax * sum(value)``, not the one-hot score alone)."""
    g = torch.Generator().manual_seed(1)
    logits = (2 * torch.randn(logits_shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    value = torch.rand(value_shape, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(categorical_log_prob, (logits, value))
    assert torch.autograd.gradgradcheck(categorical_log_prob, (logits, value))
    expected = (value * torch.log_softmax(logits, -1)).sum((-2, -1))
    torch.testing.assert_close(categorical_log_prob(logits, value), expected)
    assert categorical_log_prob(logits, value).grad_fn.name().endswith("_CategoricalLogProbBackward")
