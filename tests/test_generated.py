"""Properties every registered estimator must have, generated from the registry.

A new estimator added to ``armgrad.ESTIMATORS`` gets, without anyone listing it here:

- if it is unbiased: z-tests of its gradient against exact enumeration on one layer at every
  budget its budget rule allows up to ``MAX_BUDGET``, and through ``chain_estimate`` on chains of
  two and three layers (or, for an estimator the chain recipe refuses, a test that the refusal
  is a clear error); learned controls are tested at their initial values and moved away from them;
- if it is biased: a test that its bias is detectable (so the z-tests have power on it).

The cases are built by functions of a registry, so that ``test_a_wrong_estimator_is_caught`` can
register a deliberately wrong estimator in a temporary registry and run the same generated checks
on it: they must fail.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import bias_z_scores, chi2_pvalue, draw_gradients
from armgrad.estimators import ENUMERATION, RELAXED, Combined, select
from armgrad.estimators import registry as make_registry
from armgrad.estimators.antithetic import ARM
from armgrad.network import chain_estimate

from conftest import make_objective

MAX_BUDGET = 4
DRAWS = 20000  # one-layer draws
CHAIN_DRAWS = 20000
BATCH, UNITS = 6, 4


def moderate_logits(batch: int, units: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random logits with |phi| = 5 present in every row: the rarer value has probability 0.0067,
    so even one draw per estimate shows it about 130 times in 20,000 estimates (a valid z-test)."""
    g = torch.Generator().manual_seed(seed)
    phi = (2 * torch.randn(batch, units, generator=g, dtype=dtype)).clamp(-5, 5)
    phi[:, 0], phi[:, 1] = 5.0, -5.0
    return phi


def assert_unbiased(draws, truth, what="", chi2=True):
    """``max |z| < 5`` and, where the z-scores are not linear combinations of one another, a chi-square
    p-value of ``sum z^2`` above 1e-4."""
    z = bias_z_scores(draws, truth)
    p = chi2_pvalue(z) if chi2 else 1.0
    assert z.abs().max() < 5 and p > 1e-4, f"{what}: max |z| = {z.abs().max():.2f}, chi2 p = {p:.2e}\nz = {z}"


def make_instance(spec, units: int, controls: str, seed: int = 0):
    """The estimator object to test: stateless ones as registered; learned ones created fresh, with
    their controls at the initial values or moved away from them (every parameter shifted at random)."""
    if not spec.learned:
        return spec
    est = spec.create(num_units=units).double()
    if controls == "moved":
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in est.parameters():
                p.add_(0.7 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return est


def budgets(spec) -> list[int]:
    if spec.evaluates_f_at == ENUMERATION:
        return [0]
    return spec.budget.allowed(MAX_BUDGET) or [spec.valid_budget(1)]


def controls_for(spec) -> list[str]:
    return ["initial", "moved"] if spec.learned else ["none"]


def chain_refused(spec) -> bool:
    """An unbiased estimator that evaluates f only at relaxed points: the chain recipe refuses it (none is
    registered today; REBAR and RELAX, at binary and relaxed points, relax the layers above)."""
    return spec.evaluates_f_at == RELAXED


def one_layer_cases(table) -> list:
    """Every unbiased Monte Carlo estimator (enumeration is the oracle: it is checked against a brute-force
    enumeration written here, not against itself)."""
    return [
        (name, budget, controls)
        for name in select(table, unbiased=True)
        if table[name].evaluates_f_at != ENUMERATION
        for budget in budgets(table[name])
        for controls in controls_for(table[name])
    ]


def chain_cases(table) -> list:
    return [
        (name, layers, budget, controls)
        for name in select(table, unbiased=True)
        if not chain_refused(table[name])
        for layers in (2, 3)
        for budget in budgets(table[name])
        for controls in controls_for(table[name])
    ]


def refused_chain_cases(table) -> list:
    return [name for name in select(table, unbiased=True) if chain_refused(table[name])]


# ---- the checks -------------------------------------------------------------------------------


def check_one_layer(spec, budget: int, controls: str, seed: int = 0) -> None:
    f = make_objective(BATCH, UNITS, seed=100 + seed)
    phi = moderate_logits(BATCH, UNITS, seed=200 + seed)
    _, truth = armgrad.exact(f, phi)
    est = make_instance(spec, UNITS, controls, seed)
    draws = draw_gradients(f, phi, est, budget, DRAWS, generator=torch.Generator().manual_seed(seed))
    assert_unbiased(draws, truth, f"{spec.name} at budget {budget}, controls {controls}")


SIZES = {2: (3, 2, 3), 3: (3, 2, 2, 2)}  # input units, then units per stochastic layer
CHAIN_BATCH = 2


def make_chain(layers: int, seed: int):
    """Linear-logistic layers with biases and an objective with interactions across all layers."""
    g = torch.Generator().manual_seed(seed)
    sizes = SIZES[layers]
    x = torch.randn(CHAIN_BATCH, sizes[0], generator=g, dtype=torch.float64)
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        params += [
            1.5 * torch.randn(d_in, d_out, generator=g, dtype=torch.float64),
            torch.randn(d_out, generator=g, dtype=torch.float64),
        ]
    total = sum(sizes[1:])
    a = torch.randn(total, total, generator=g, dtype=torch.float64)
    target = torch.rand(CHAIN_BATCH, total, generator=g, dtype=torch.float64)

    def objective(samples, logits):
        b = torch.cat(samples, -1)
        return ((b - target) ** 2).sum(-1) + ((b @ a) * b).sum(-1) + torch.sin(logits[-1].sum(-1))

    return x, params, objective


def layer_fns(params, draws: int | None = None):
    """``layer_t(h) = h @ W_t + c_t``; with ``draws``, the parameters carry a leading draw dimension."""

    def layer(w, c):
        if draws is None:
            return lambda h: h @ w + c
        return lambda h: h @ w + c.unsqueeze(-2)

    return [layer(w, c) for w, c in zip(params[::2], params[1::2])]


def brute_force_chain(x, params, objective):
    """The exact expectation of the chain and its gradient w.r.t. every parameter, by itertools."""
    params = [p.clone().requires_grad_(True) for p in params]
    layers = layer_fns(params)
    sizes = [w.shape[1] for w in params[::2]]
    total = 0
    for bits in itertools.product([0.0, 1.0], repeat=sum(sizes)):
        b, start, samples, logits, log_q, h = torch.tensor(bits, dtype=torch.float64), 0, [], [], 0, x
        for layer, d in zip(layers, sizes):
            phi = layer(h)
            bt = b[start : start + d].expand(CHAIN_BATCH, d)
            log_q = log_q + torch.distributions.Bernoulli(logits=phi).log_prob(bt).sum(-1)
            samples.append(bt.unsqueeze(0))
            logits.append(phi.detach().unsqueeze(0))
            h, start = bt, start + d
        total = total + log_q.exp() * objective(samples, logits)[0]
    return total.detach(), torch.autograd.grad(total.sum(), params)


def check_chain(spec, layers: int, budget: int, controls: str, seed: int = 0) -> None:
    x, params, objective = make_chain(layers, seed=300 + seed)
    _, truth = brute_force_chain(x, params, objective)
    # one copy of the parameters per draw, so that their .grad[r] is the r-th draw's gradient
    copies = [p.expand(CHAIN_DRAWS, *p.shape).clone().requires_grad_(True) for p in params]
    estimators = [make_instance(spec, w.shape[1], controls, seed + t) for t, w in enumerate(params[::2])]
    value = chain_estimate(
        objective,
        layer_fns(copies, CHAIN_DRAWS),
        x.expand(CHAIN_DRAWS, *x.shape),
        estimators,
        budget,
        generator=torch.Generator().manual_seed(seed),
    )
    assert value.shape == (CHAIN_DRAWS, CHAIN_BATCH)
    value.sum().backward()
    # a weight's gradient x^T g mixes the per-example gradients g that the bias's gradient sums: the
    # chi-square test (which assumes independent z-scores) is taken over the biases' alone
    for i, (p, exact_grad) in enumerate(zip(copies, truth)):
        assert_unbiased(
            p.grad, exact_grad, f"{spec.name} on {layers} layers, budget {budget}, parameter {i}", chi2=i % 2 == 1
        )


def check_bias_detectable(spec, seed: int = 0) -> None:
    f = make_objective(4, 3, seed=400 + seed)
    phi = moderate_logits(4, 3, seed=500 + seed).clamp(-2, 2)
    _, truth = armgrad.exact(f, phi)
    est = make_instance(spec, 3, "initial")
    draws = draw_gradients(f, phi, est, spec.valid_budget(2), DRAWS, generator=torch.Generator().manual_seed(seed))
    z = bias_z_scores(draws, truth)
    assert z.abs().max() > 10 or chi2_pvalue(z) < 1e-6, f"{spec.name}: bias not detectable, max |z| = {z.abs().max()}"


# ---- the generated tests ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name,budget,controls", one_layer_cases(ESTIMATORS))
def test_unbiased_on_one_layer(name, budget, controls):
    check_one_layer(ESTIMATORS[name], budget, controls)


@pytest.mark.slow
@pytest.mark.parametrize("name,layers,budget,controls", chain_cases(ESTIMATORS))
def test_unbiased_through_chains(name, layers, budget, controls):
    check_chain(ESTIMATORS[name], layers, budget, controls)


@pytest.mark.parametrize("name", refused_chain_cases(ESTIMATORS))
def test_chain_refusal_is_a_clear_error(name):
    x, params, objective = make_chain(2, seed=0)
    est = make_instance(ESTIMATORS[name], 2, "initial")
    with pytest.raises(ValueError, match=f"estimator {name!r} evaluates f only at relaxed points"):
        chain_estimate(objective, layer_fns(params), x, est, ESTIMATORS[name].valid_budget(2))


@pytest.mark.parametrize("name", select(unbiased=False))
def test_bias_is_detectable(name):
    check_bias_detectable(ESTIMATORS[name])


# ---- the generated tests have power ----------------------------------------------------------------


class ARMTimes(ARM):
    """A deliberately wrong estimator: ARM's gradient times 1.1 (its value is still right)."""

    name = "arm_times_1_1"
    summary = "ARM, 10 % too large (a test's wrong estimator)"

    def combine(self, fb, b, logits, noise) -> Combined:
        grad, weights = super().combine(fb, b, logits, noise)
        return Combined(1.1 * grad, weights)


def test_a_wrong_estimator_is_caught():
    table = make_registry(*ESTIMATORS.values(), ARMTimes())
    one_layer = [c for c in one_layer_cases(table) if c[0] == ARMTimes.name]
    chains = [c for c in chain_cases(table) if c[0] == ARMTimes.name]
    assert [c[1] for c in one_layer] == [2, 4] and {c[1] for c in chains} == {2, 3}  # it was generated cases
    for name, budget, controls in one_layer:
        with pytest.raises(AssertionError, match="max \\|z\\|"):
            check_one_layer(table[name], budget, controls)
    for name, layers, budget, controls in chains:
        with pytest.raises(AssertionError, match="max \\|z\\|"):
            check_chain(table[name], layers, budget, controls)
    for name, budget, controls in [c for c in one_layer_cases(table) if c[0] == "arm"]:
        check_one_layer(table[name], budget, controls)  # while the right one passes the same check


# ---- enumeration through chains ---------------------------------------------------------------------


def test_exact_on_a_one_layer_chain_is_armgrad_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 5, generator=g, dtype=torch.float64)
    f = lambda b: ((b - target) ** 2).sum(-1) + b[..., 0] * b[..., 1]  # noqa: E731
    value = chain_estimate(lambda s, _: f(s[0]), [lambda h: h @ w], x, "exact", 0)
    exact_value, exact_grad = armgrad.exact(f, x @ w)
    torch.testing.assert_close(value, exact_value)
    (gw,) = torch.autograd.grad(value.sum(), w)
    torch.testing.assert_close(gw, x.T @ exact_grad)


@pytest.mark.parametrize("layers", [2, 3])
def test_exact_through_a_chain_is_the_exact_expectation(layers):
    x, params, objective = make_chain(layers, seed=7)
    truth_value, truth_grads = brute_force_chain(x, params, objective)
    leaves = [p.clone().requires_grad_(True) for p in params]
    value = chain_estimate(objective, layer_fns(leaves), x, "exact", 0)
    torch.testing.assert_close(value, truth_value)
    for got, want in zip(torch.autograd.grad(value.sum(), leaves), truth_grads):
        torch.testing.assert_close(got, want)


def test_exact_through_a_chain_refuses_mixing_and_too_many_units():
    x, params, objective = make_chain(2, seed=7)
    with pytest.raises(ValueError, match="enumerates every layer of the chain jointly"):
        chain_estimate(objective, layer_fns(params), x, ["exact", "arm"], 2)
    with pytest.raises(ValueError, match="D <= 4"):
        chain_estimate(objective, layer_fns(params), x, "exact", 0, max_units=4)


# ---- the README's estimator table is the registry's ------------------------------------------------


def test_readme_estimator_table_is_the_registry():
    from pathlib import Path

    from armgrad.cli import estimators_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert estimators_table() in readme, "README's estimator table differs from `armgrad estimators`: paste it again"
