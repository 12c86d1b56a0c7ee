"""The categorical estimators (``armgrad.categorical``), generated from their registry.

Every unbiased estimator, at the first two budgets its rule allows, on every shape D in {1, 2, 3} x
C in {2, 3, 4, 5}, with an ``f`` that is nonlinear in each one-hot vector and couples the variables:
per-coordinate z-tests of the gradient and of the value against ``categorical.exact``, which is itself
checked against an enumeration written here with ``itertools``. Every biased estimator must show its
bias; a 10 % scaled copy of an unbiased one in a temporary registry must fail the same checks.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from armgrad import categorical
from armgrad.diagnostics import bias_z_scores, chi2_pvalue
from armgrad.estimators import ENUMERATION, Combined, select
from armgrad.estimators import registry as make_registry
from armgrad.estimators.categorical_coupled import DisARM as CategoricalDisARM

TABLE = categorical.ESTIMATORS
SHAPES = [(d, c) for d in (1, 2, 3) for c in (2, 3, 4, 5)]
BATCH, DRAWS = 2, 20000


def make_problem(variables: int, categories: int, seed: int):
    """Logits with a large spread and an objective nonlinear in each one-hot vector, coupling the variables."""
    g = torch.Generator().manual_seed(seed)
    phi = 1.5 * torch.randn(BATCH, variables, categories, generator=g, dtype=torch.float64)
    n = variables * categories
    coupling = torch.randn(n, n, generator=g, dtype=torch.float64)
    target = torch.randn(BATCH, n, generator=g, dtype=torch.float64)

    def f(z):
        x = z.reshape(*z.shape[:-2], n)
        return ((x @ coupling) * x).sum(-1) + torch.sin(3 * (x * target).sum(-1))

    return phi, f


def brute_force(f, phi):
    """``E[f]`` and its gradient by ``itertools`` over the ``C^D`` states, one batch element at a time."""
    batch, variables, categories = phi.shape
    p = torch.softmax(phi, -1)
    value, grad = torch.zeros(batch, dtype=phi.dtype), torch.zeros_like(phi)
    for states in itertools.product(range(categories), repeat=variables):
        z = torch.zeros(variables, categories, dtype=phi.dtype)
        z[range(variables), list(states)] = 1
        fz = f(z.expand(1, batch, variables, categories))[0]
        q = torch.stack([p[:, d, c] for d, c in enumerate(states)]).prod(0)
        value += q * fz
        grad += (q * fz).view(batch, 1, 1) * (z - p)
    return value, grad


def budgets(spec, shape) -> list[int]:
    if spec.evaluates_f_at == ENUMERATION:
        return [0]
    first = spec.valid_budget(2 if spec.budget.minimum >= 2 or spec.budget.group_of is None else 1, shape)
    return [first, first + spec.budget.size(shape)]


def draw(f, phi, est, budget, draws=DRAWS, seed=0, **options):
    """``draws`` independent estimates: values ``(draws, batch)`` and gradients ``(draws, batch, D, C)``."""
    leaf = phi.expand(draws, *phi.shape).clone().requires_grad_(True)
    value = categorical.estimate(f, leaf, est, budget, generator=torch.Generator().manual_seed(seed), **options)
    value.sum().backward()
    return value.detach(), leaf.grad


def assert_unbiased(draws, truth, what):
    """``max |z| < 5`` and a chi-square p-value above 1e-4 over the independent coordinates (``C - 1`` per
    variable: the gradient of the softmax logits sums to zero over categories)."""
    z = bias_z_scores(draws, truth)
    if z.dim() >= 3:
        z = z[..., :-1]
    p = chi2_pvalue(z)
    assert z.abs().max() < 5 and p > 1e-4, f"{what}: max |z| = {z.abs().max():.2f}, chi2 p = {p:.2e}"


def check_unbiased(spec, unit: int, seed: int = 0) -> None:
    for variables, categories in SHAPES:
        phi, f = make_problem(variables, categories, seed=10 * variables + categories + seed)
        exact_value, exact_grad = categorical.exact(f, phi)
        budget = budgets(spec, (variables, categories))[unit]
        values, grads = draw(f, phi, spec, budget, seed=seed)
        what = f"{spec.name} at budget {budget}, D={variables}, C={categories}"
        assert_unbiased(grads, exact_grad, what + " (gradient)")
        assert_unbiased(values, exact_value, what + " (value)")


UNBIASED = [n for n in select(TABLE, unbiased=True) if TABLE[n].evaluates_f_at != ENUMERATION]
BIASED = select(TABLE, unbiased=False)


# ---- the oracle --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variables,categories", SHAPES)
def test_exact_is_the_brute_force_enumeration(variables, categories):
    phi, f = make_problem(variables, categories, seed=1)
    value, grad = categorical.exact(f, phi)
    want_value, want_grad = brute_force(f, phi)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)


def test_exact_value_carries_the_pathwise_gradient():
    phi, _ = make_problem(2, 3, seed=2)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    value, _ = categorical.exact(lambda z: torch.tanh(z.flatten(-2) @ w), phi)
    value.sum().backward()
    p = torch.softmax(phi, -1)
    truth = 0
    for a, b in itertools.product(range(3), repeat=2):
        x = torch.zeros(BATCH, 6, dtype=torch.float64)
        x[:, a], x[:, 3 + b] = 1, 1
        truth = truth + (p[:, 0, a] * p[:, 1, b]).view(-1, 1) * (1 - torch.tanh(x @ w.detach()) ** 2).view(-1, 1) * x
    torch.testing.assert_close(w.grad, truth.sum(0))


# ---- generated from the registry ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("unit", [0, 1])
@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_against_enumeration(name, unit):
    check_unbiased(TABLE[name], unit)


@pytest.mark.parametrize("name", BIASED)
def test_bias_is_detectable(name):
    phi, f = make_problem(2, 3, seed=5)
    _, exact_grad = categorical.exact(f, phi)
    _, grads = draw(f, phi, name, TABLE[name].valid_budget(1, (2, 3)))
    z = bias_z_scores(grads, exact_grad)
    assert z.abs().max() > 10, f"{name}: bias not detectable, max |z| = {z.abs().max():.2f}"


@pytest.mark.parametrize("name", list(TABLE))
def test_one_call_of_f_with_every_evaluation_stacked(name):
    spec, shape = TABLE[name], (3, 4)
    phi = torch.randn(5, *shape, dtype=torch.float64)
    budget = budgets(spec, shape)[0]
    calls = []

    def f(z):
        calls.append(tuple(z.shape))
        return (z * torch.arange(4.0, dtype=z.dtype)).sum((-2, -1)) ** 2

    g = categorical.grad(f, phi, name, budget)
    assert len(calls) == 1 and calls[0][1:] == (5, *shape)
    assert calls[0][0] == spec.evaluations(budget, shape)
    assert g.shape == phi.shape and torch.isfinite(g).all()


@pytest.mark.parametrize("name", [n for n in TABLE if TABLE[n].evaluates_f_at != ENUMERATION])
def test_every_batch_element_has_its_own_noise(name):
    """N copies of the same logits give N independent estimates (the ARS/ARSM reference codes share the
    reference category across the batch; armgrad must not)."""
    phi, f = make_problem(2, 3, seed=6)
    copies = phi[:1].expand(2, 2, 3)
    _, grads = draw(f, copies, name, TABLE[name].valid_budget(1, (2, 3)), draws=4000)
    a, b = grads[:, 0].flatten(1), grads[:, 1].flatten(1)
    a, b = a - a.mean(0), b - b.mean(0)
    corr = (a * b).mean(0) / (a.std(0) * b.std(0) + 1e-300)
    assert corr.abs().max() < 5 / math.sqrt(4000), f"{name}: batch elements correlated, {corr}"


# ---- the generated checks have power -------------------------------------------------------------------


class ScaledDisARM(CategoricalDisARM):
    """A deliberately wrong estimator: categorical DisARM's gradient times 1.1."""

    name = "disarm_times_1_1"

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        grad, weights = super().combine(fb, b, logits, noise, **options)
        return Combined(1.1 * grad, weights)


def test_a_wrong_estimator_is_caught():
    table = make_registry(*TABLE.values(), ScaledDisARM())
    assert ScaledDisARM.name in select(table, unbiased=True)
    with pytest.raises(AssertionError, match="max \\|z\\|"):
        check_unbiased(table[ScaledDisARM.name], 0)
    check_unbiased(table["disarm"], 0)  # the right one passes the same check


# ---- published properties and reductions ---------------------------------------------------------------


# ---- refusals ---------------------------------------------------------------------------------------------


def f_ok(z):
    return z.sum((-2, -1))


@pytest.mark.parametrize(
    "logits,error,match",
    [
        (torch.zeros(3, 4, 1), ValueError, "C >= 2"),
        (torch.zeros(4), ValueError, "\\(\\*batch, D, C\\)"),
        (torch.zeros(3, 4, 2, dtype=torch.long), TypeError, "floating-point"),
        (torch.tensor([[0.0, float("nan")]]), ValueError, "non-finite"),
        ([[0.0, 1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_logits(logits, error, match):
    with pytest.raises(error, match=match):
        categorical.estimate(f_ok, logits, "reinforce", 1)


@pytest.mark.parametrize(
    "f,error,match",
    [
        (lambda z: z.sum(-1), ValueError, "f returned shape"),
        (lambda z: z.sum((-2, -1)) / 0, ValueError, "non-finite"),
        (lambda z: 3.0, TypeError, "torch.Tensor"),
    ],
)
def test_bad_f(f, error, match):
    with pytest.raises(error, match=match):
        categorical.estimate(f, torch.zeros(2, 3, 4), "reinforce_loo", 2)


@pytest.mark.parametrize("name", list(TABLE))
def test_a_generator_that_is_not_one_is_named(name):
    phi = torch.zeros(2, 3, 4)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got str"):
        categorical.grad(f_ok, phi, name, TABLE[name].valid_budget(2, (3, 4)), generator="seed 0")


def test_bad_names_budgets_and_options():
    phi = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="Did you mean 'disarm'"):
        categorical.estimate(f_ok, phi, "disram", 2)
    with pytest.raises(ValueError, match="'arms' has no categorical form"):
        categorical.estimate(f_ok, phi, "arms", 2)
    with pytest.raises(ValueError, match="'arsm' has no bernoulli form"):
        import armgrad

        armgrad.estimate(lambda b: b.sum(-1), torch.zeros(2, 3), "arsm", 2)
    with pytest.raises(ValueError, match="multiple of 7 \\(C\\(C-1\\)/2 \\+ 1"):
        categorical.estimate(f_ok, phi, "arsm", 8)
    with pytest.raises(ValueError, match="at least 12"):
        categorical.estimate(f_ok, phi, "indecater", 4)
    with pytest.raises(ValueError, match="must be even"):
        categorical.estimate(f_ok, phi, "disarm", 3)
    with pytest.raises(ValueError, match="has no option 'temprature'"):
        categorical.estimate(f_ok, phi, "st", 1, temprature=2.0)
    with pytest.raises(ValueError, match="temperature >= 1"):
        categorical.estimate(f_ok, phi.requires_grad_(True), "reinmax", 1, temperature=0.5)
    with pytest.raises(ValueError, match="order must be one of"):
        categorical.estimate(f_ok, phi, "disarm", 2, order="sideways")
    with pytest.raises(ValueError, match="C\\*\\*D = 1048576"):
        categorical.exact(f_ok, torch.zeros(1, 20, 2), max_units=19)
    with pytest.raises(ValueError, match="is a categorical estimator"):
        import armgrad

        armgrad.estimate(lambda b: b.sum(-1), torch.zeros(2, 3), TABLE["disarm"], 2)


# ---- chains of categorical and Bernoulli layers (network.chain_estimate) -------------------------------

CHAINS = {
    "categorical, bernoulli": [("categorical", 2, 3), ("bernoulli", 2)],
    "bernoulli, categorical": [("bernoulli", 2), ("categorical", 2, 3)],
    "categorical, categorical, bernoulli": [("categorical", 1, 3), ("categorical", 2, 2), ("bernoulli", 1)],
}
CHAIN_BATCH, CHAIN_INPUT = 2, 3


def _size(spec):
    return spec[1] * (spec[2] if spec[0] == "categorical" else 1)


def make_chain(specs, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(CHAIN_BATCH, CHAIN_INPUT, generator=g, dtype=torch.float64)
    params, d_in = [], CHAIN_INPUT
    for spec in specs:
        params += [
            1.5 * torch.randn(d_in, _size(spec), generator=g, dtype=torch.float64),
            torch.randn(_size(spec), generator=g, dtype=torch.float64),
        ]
        d_in = _size(spec)
    total = sum(_size(s) for s in specs)
    a = torch.randn(total, total, generator=g, dtype=torch.float64)
    target = torch.randn(CHAIN_BATCH, total, generator=g, dtype=torch.float64)

    def objective(samples, logits):
        b = torch.cat([s.flatten(-2) if spec[0] == "categorical" else s for s, spec in zip(samples, specs)], -1)
        return ((b @ a) * b).sum(-1) + torch.sin((b * target).sum(-1))

    return x, params, objective


def chain_layers(specs, params, draws=None):
    """``phi_t = flat(h_{t-1}) @ W_t + c_t``, reshaped to ``(D, C)`` for a categorical layer; with ``draws``,
    the parameters carry a leading draw dimension."""

    def layer(w, c, spec, below):
        def apply(h):
            h = h.flatten(-2) if below == "categorical" else h
            out = h @ w + (c if draws is None else c.unsqueeze(-2))
            return out.unflatten(-1, spec[1:]) if spec[0] == "categorical" else out

        return apply

    below = ["input"] + [s[0] for s in specs[:-1]]
    return [layer(w, c, spec, b) for w, c, spec, b in zip(params[::2], params[1::2], specs, below)]


def brute_force_chain(specs, x, params, objective):
    params = [p.clone().requires_grad_(True) for p in params]
    layers = chain_layers(specs, params)
    per_layer = []
    for spec in specs:
        if spec[0] == "bernoulli":
            per_layer.append(
                [torch.tensor(bits, dtype=torch.float64) for bits in itertools.product([0.0, 1.0], repeat=spec[1])]
            )
        else:
            per_layer.append(
                [
                    torch.nn.functional.one_hot(torch.tensor(c), spec[2]).to(torch.float64)
                    for c in itertools.product(range(spec[2]), repeat=spec[1])
                ]
            )
    total = 0
    for config in itertools.product(*per_layer):
        h, log_q, samples, logits = x, 0, [], []
        for layer, spec, state in zip(layers, specs, config):
            phi = layer(h)
            s = state.expand(CHAIN_BATCH, *state.shape)
            if spec[0] == "bernoulli":
                log_q = log_q + torch.distributions.Bernoulli(logits=phi).log_prob(s).sum(-1)
            else:
                log_q = log_q + (s * torch.log_softmax(phi, -1)).sum((-2, -1))
            samples.append(s.unsqueeze(0))
            logits.append(phi.detach().unsqueeze(0))
            h = s
        total = total + log_q.exp() * objective(samples, logits)[0]
    return total.detach(), torch.autograd.grad(total.sum(), params)


def chain_budget(estimators, specs):
    for budget in range(2, 200):
        try:
            for est, spec in zip(estimators, specs):
                est.check_budget(budget, spec[1:])
            return budget
        except ValueError:
            continue
    raise AssertionError("no common budget")


def check_chain(spec_name, name, table=TABLE, seed=0, draws=20000):
    import armgrad
    from armgrad.network import chain_estimate

    specs = CHAINS[spec_name]
    x, params, objective = make_chain(specs, seed=40 + seed)
    _, truth = brute_force_chain(specs, x, params, objective)
    estimators = [table[name] if s[0] == "categorical" else armgrad.ESTIMATORS["disarm"] for s in specs]
    budget = chain_budget(estimators, specs)
    copies = [p.expand(draws, *p.shape).clone().requires_grad_(True) for p in params]
    value = chain_estimate(
        objective,
        chain_layers(specs, copies, draws),
        x.expand(draws, *x.shape),
        estimators,
        budget,
        generator=torch.Generator().manual_seed(seed),
    )
    value.sum().backward()
    for i, (p, exact_grad) in enumerate(zip(copies, truth)):
        z = bias_z_scores(p.grad, exact_grad)
        assert z.abs().max() < 5, (
            f"{name} on {spec_name}, budget {budget}, parameter {i}: max |z| = {z.abs().max():.2f}"
        )


@pytest.mark.parametrize("chain", list(CHAINS))
def test_exact_through_a_mixed_chain_is_the_exact_expectation(chain):
    from armgrad.network import chain_estimate

    specs = CHAINS[chain]
    x, params, objective = make_chain(specs, seed=7)
    truth_value, truth_grads = brute_force_chain(specs, x, params, objective)
    leaves = [p.clone().requires_grad_(True) for p in params]
    families = [s[0] for s in specs]
    value = chain_estimate(objective, chain_layers(specs, leaves), x, "exact", 0, family=families)
    torch.testing.assert_close(value, truth_value)
    for got, want in zip(torch.autograd.grad(value.sum(), leaves), truth_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.parametrize("name", UNBIASED)
def test_unbiased_through_mixed_chains(name, chain):
    check_chain(chain, name)


def test_a_wrong_estimator_is_caught_through_chains():
    table = make_registry(*TABLE.values(), ScaledDisARM())
    with pytest.raises(AssertionError, match="max \\|z\\|"):
        check_chain("categorical, bernoulli", ScaledDisARM.name, table)


def test_chain_refusals():
    import armgrad
    from armgrad.network import chain_estimate

    specs = CHAINS["bernoulli, categorical"]
    x, params, objective = make_chain(specs, seed=1)
    with pytest.raises(ValueError, match="at least one layer"):
        chain_estimate(objective, [], x, "arm", 2)
    with pytest.raises(ValueError, match="relaxes the layers above its own with sigmoids"):
        chain_estimate(objective, chain_layers(specs, params), x, [armgrad.ESTIMATORS["rebar"], TABLE["disarm"]], 3)
    with pytest.raises(ValueError, match="family must be one of 'bernoulli', 'categorical'"):
        chain_estimate(objective, chain_layers(specs, params), x, "disarm", 2, family="catgorical")
    with pytest.raises(ValueError, match="got 1 families for 2 layers"):
        chain_estimate(objective, chain_layers(specs, params), x, "disarm", 2, family=["categorical"])
