"""armgrad.pyro.ELBO against Pyro itself: gradients averaged over many draws match TraceEnum_ELBO's.

Many draws at once: every model below is replicated over a data plate of N elements whose
parameters are per element (``(N, ...)`` tensors, every row equal), so one call gives N independent
gradient estimates (the rows of each parameter's gradient); this also checks that the elements of a
plate get independent estimates. The reference is TraceEnum_ELBO with every Bernoulli site
enumerated in the guide and the model (one scalar site per unit: config_enumerate does not
enumerate a ``.to_event`` site), itself checked against brute-force enumeration in plain torch.
Where a Normal site is present, TraceEnum's gradient is a Monte Carlo one too (exact in the
Bernoulli sites only) and the z-test is two-sample.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pyro = pytest.importorskip("pyro")
import pyro.distributions as dist  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate  # noqa: E402

import armgrad.pyro as ap  # noqa: E402
from armgrad import ESTIMATORS  # noqa: E402
from armgrad.estimators import Combined  # noqa: E402
from armgrad.estimators.antithetic import ARM  # noqa: E402

UNBIASED = ap.binary_point_estimators()
X = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


def per_element(name, value, n):
    return pyro.param(name, value.expand(n, *value.shape).clone())


# ---- model 1: one layer of 4 scalar Bernoulli sites -------------------------------------------

PHI = torch.tensor([0.8, -1.2, 0.3, -0.4], dtype=torch.float64)
THETA = torch.tensor([0.2, -0.5, 0.9, 0.0], dtype=torch.float64)
W = torch.tensor([1.0, -0.7, 0.4, 1.3], dtype=torch.float64)


def decode(s):
    """Observation logits (.., 4) from a scalar score s, nonlinear in s."""
    s = s.unsqueeze(-1)
    return s * torch.tensor([1.0, -0.5, 0.3, 0.8], dtype=s.dtype) + 0.2 * s**2


def one_layer_model(n):
    theta = per_element("theta", THETA, n)
    with pyro.plate("data", n, dim=-1):
        z = [pyro.sample(f"z{d}", dist.Bernoulli(logits=theta[:, d])) for d in range(4)]
        s = sum(W[d] * z[d] for d in range(4)) + 1.5 * z[0] * z[1] - z[2] * z[3]
        pyro.sample("x", dist.Bernoulli(logits=decode(s)).to_event(1), obs=X.expand(n, 4))


def one_layer_guide(n):
    phi = per_element("phi", PHI, n)
    with pyro.plate("data", n, dim=-1):
        for d in range(4):
            pyro.sample(f"z{d}", dist.Bernoulli(logits=phi[:, d]))


# ---- model 2: two layers of 3 units, a Normal site before and one after -------------------------

PHI1 = torch.tensor([0.5, -0.8, 1.1], dtype=torch.float64)
PHI2 = torch.tensor([-0.3, 0.6, 0.2], dtype=torch.float64)
A = torch.tensor([[1.5, -1.0, 0.5], [-2.0, 0.8, 1.2], [0.7, 1.6, -1.4]], dtype=torch.float64)


def two_layer_guide(n, normals=True):
    phi1, phi2 = per_element("phi1", PHI1, n), per_element("phi2", PHI2, n)
    if normals:  # u's scale is learned: the pathwise gradient of its -log q (the entropy term) is not zero
        m = per_element("m", torch.tensor([0.3, -0.2, -0.4], dtype=torch.float64), n)
    with pyro.plate("data", n, dim=-1):
        y = pyro.sample("y", dist.Normal(m[:, 0], 1.0)) if normals else 0.0
        z1 = [pyro.sample(f"a{d}", dist.Bernoulli(logits=phi1[:, d] + 0.5 * y)) for d in range(3)]
        z2 = [
            pyro.sample(f"b{k}", dist.Bernoulli(logits=phi2[:, k] + sum(A[d, k] * z1[d] for d in range(3))))
            for k in range(3)
        ]
        if normals:
            pyro.sample("u", dist.Normal(m[:, 1] + z2[0] - z2[2], m[:, 2].exp()))


def two_layer_model(n, normals=True):
    theta = per_element("theta", torch.tensor([0.4, -0.3, 0.1, 0.7, -0.6, 0.2], dtype=torch.float64), n)
    with pyro.plate("data", n, dim=-1):
        y = pyro.sample("y", dist.Normal(0.0, 1.0)) if normals else 0.0
        z1 = [pyro.sample(f"a{d}", dist.Bernoulli(logits=theta[:, d])) for d in range(3)]
        z2 = [pyro.sample(f"b{k}", dist.Bernoulli(logits=theta[:, 3 + k] + z1[k] - z1[(k + 1) % 3])) for k in range(3)]
        u = pyro.sample("u", dist.Normal(0.5 * (z2[0] + z2[1]), 1.0)) if normals else 0.0
        s = z1[0] - 2 * z1[1] * z2[2] + z2[0] + 0.7 * z2[1] * z1[2] + 0.5 * y - 0.3 * u
        pyro.sample("x", dist.Bernoulli(logits=decode(s)).to_event(1), obs=X.expand(n, 4))


CASES = {
    "one layer": (one_layer_model, one_layer_guide, False),
    "two layers": (lambda n: two_layer_model(n, False), lambda n: two_layer_guide(n, False), False),
    "two layers, Normal before and after": (two_layer_model, two_layer_guide, True),
}


def gradients(elbo, model, guide, n):
    """The per-element gradients ``(n, P)`` of the loss, every parameter's rows side by side."""
    pyro.clear_param_store()
    loss = elbo.differentiable_loss(model, guide, n)
    names = sorted(pyro.get_param_store().keys())
    params = [pyro.param(name).unconstrained() for name in names]
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(n, -1) for g in grads], dim=1)


def reference(model, guide, n):
    return gradients(TraceEnum_ELBO(max_plate_nesting=1), config_enumerate(model), config_enumerate(guide), n)


def z_scores(draws, ref, noisy_reference):
    var = draws.var(0) / len(draws) + (ref.var(0) / len(ref) if noisy_reference else 0.0)
    return (draws.mean(0) - ref.mean(0)) / var.clamp_min(1e-30).sqrt()


def brute_force_gradient(model, guide, sites):
    """d(-ELBO) by summing over every joint state of ``sites`` in plain torch (one element)."""
    pyro.clear_param_store()
    guide(1), model(1)  # create the parameters
    names = sorted(pyro.get_param_store().keys())
    params = [pyro.param(name).unconstrained() for name in names]
    elbo = 0.0
    for state in itertools.product([0.0, 1.0], repeat=len(sites)):
        values = {s: torch.tensor([v], dtype=torch.float64) for s, v in zip(sites, state)}
        g = poutine.trace(poutine.condition(guide, data=values)).get_trace(1)
        m = poutine.trace(poutine.condition(model, data=values)).get_trace(1)
        log_q, log_p = g.log_prob_sum(), m.log_prob_sum()
        elbo = elbo + log_q.exp() * (log_p - log_q)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(-elbo, params)])


@pytest.mark.parametrize("case", ["one layer", "two layers"])
def test_the_reference_is_exact(case):
    """TraceEnum with one scalar site per unit equals brute-force enumeration in plain torch."""
    model, guide, _ = CASES[case]
    sites = (
        [f"z{d}" for d in range(4)]
        if case == "one layer"
        else [f"a{d}" for d in range(3)] + [f"b{k}" for k in range(3)]
    )
    ref = reference(model, guide, 1)[0]
    torch.testing.assert_close(ref, brute_force_gradient(model, guide, sites), rtol=1e-9, atol=1e-12)


def test_the_reference_trap_to_event_is_not_enumerated():
    """The trap the reference avoids: a .to_event(1) Bernoulli site is not enumerated, so TraceEnum's
    gradient of such a guide is a Monte Carlo one (it varies with the seed)."""

    def guide(n):
        phi = pyro.param("phi", PHI.clone())
        pyro.sample("z", dist.Bernoulli(logits=phi).to_event(1))

    def model(n):
        z = pyro.sample("z", dist.Bernoulli(logits=THETA).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decode((z * W).sum(-1))).to_event(1), obs=X)

    draws = set()
    for seed in range(5):
        pyro.set_rng_seed(seed)
        with pytest.warns(Warning):
            draws.add(round(reference(model, guide, 1).sum().item(), 9))
    assert len(draws) > 1


def draws_for(case, estimator, n=20000, num_samples=None, vectorize_branches=False):
    model, guide, _ = CASES[case]
    est = ESTIMATORS[estimator] if isinstance(estimator, str) else estimator
    budget = num_samples or est.valid_budget(2)
    elbo = ap.ELBO(est, budget, max_plate_nesting=1, vectorize_branches=vectorize_branches)
    return gradients(elbo, model, guide, n)


@pytest.mark.slow
@pytest.mark.parametrize("vectorize_branches", [False, True], ids=["branches-looped", "branches-vectorized"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("estimator", UNBIASED)
def test_unbiased_against_traceenum(case, estimator, vectorize_branches):
    model, guide, noisy = CASES[case]
    ref = reference(model, guide, 20000 if noisy else 1)
    z = z_scores(draws_for(case, estimator, vectorize_branches=vectorize_branches), ref, noisy)
    assert z.abs().max() < 5, f"{estimator} on {case}: max |z| = {z.abs().max():.2f}\n{z}"


@pytest.mark.parametrize("estimator", [e for e in UNBIASED if 4 in ESTIMATORS[e].budget.allowed(4)])
def test_unbiased_at_a_larger_budget(estimator):
    ref = reference(*CASES["two layers"][:2], 1)
    z = z_scores(draws_for("two layers", estimator, num_samples=4, vectorize_branches=True), ref, False)
    assert z.abs().max() < 5, f"{estimator}, 4 evaluations: max |z| = {z.abs().max():.2f}"


class ARMTimes(ARM):
    """ARM with its gradient scaled by 1.1: wrong, and the tests must say so."""

    name = "arm_times_1_1"

    def combine(self, fb, b, logits, noise):
        grad, weights = super().combine(fb, b, logits, noise)
        return Combined(1.1 * grad, weights)


def _all_but(trace, name):
    """Wrong as what a branch replays: the later guide sites held at the ancestral sample instead of re-run."""
    out = poutine.Trace()
    for other, site in trace.nodes.items():
        if site["type"] == "sample" and other != name:
            out.add_node(other, **site)
    return out


def test_a_wrong_estimator_is_caught():
    ref = reference(*CASES["one layer"][:2], 1)
    z = z_scores(draws_for("one layer", ARMTimes()), ref, False)
    assert z.abs().max() > 10


def test_not_rerunning_the_later_sites_is_caught(monkeypatch):
    model, guide, _ = CASES["two layers"]
    ref = reference(model, guide, 1)
    monkeypatch.setattr(ap, "sites_before", _all_but)
    wrong = gradients(ap.ELBO("disarm", 2, max_plate_nesting=1), model, guide, 20000)
    assert z_scores(wrong, ref, False).abs().max() > 10


def test_lower_variance_than_trace_elbo():
    model, guide, _ = CASES["two layers"]
    ours = gradients(ap.ELBO("disarm", 2, max_plate_nesting=1), model, guide, 5000)
    theirs = gradients(Trace_ELBO(max_plate_nesting=1), model, guide, 5000)
    assert ours.var(0).sum() < theirs.var(0).sum() / 2


# ---- conventions ---------------------------------------------------------------------------------


def test_loss_differentiable_loss_and_loss_and_grads_agree_at_one_seed():
    """Pyro's contract for an ELBO: the three give the same -ELBO at the same seed (the mean over the ancestral
    run and every branch), with poutine.scale, a subsampled plate and several particles."""
    data = torch.tensor([[1.0, 0.0, 1.0, 1.0]] * 10, dtype=torch.float64)

    def model():
        theta = pyro.param("theta", THETA.clone())
        with pyro.plate("data", 10, subsample_size=4) as idx, poutine.scale(scale=3.0):
            z = pyro.sample("z", dist.Bernoulli(logits=theta).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decode((z * W).sum(-1))).to_event(1), obs=data[idx])

    def guide():
        phi = pyro.param("phi", PHI.clone())
        with pyro.plate("data", 10, subsample_size=4), poutine.scale(scale=3.0):
            pyro.sample("z", dist.Bernoulli(logits=phi).to_event(1))

    for particles in (1, 3):
        elbo = ap.ELBO("disarm", num_particles=particles)
        pyro.set_rng_seed(5)
        loss = elbo.loss(model, guide)
        pyro.set_rng_seed(5)
        differentiable = elbo.differentiable_loss(model, guide)
        pyro.set_rng_seed(5)
        with_grads = elbo.loss_and_grads(model, guide)
        assert loss == pytest.approx(differentiable.item(), rel=1e-12) and loss == pytest.approx(with_grads, rel=1e-12)
        pyro.set_rng_seed(5)
        ancestral = Trace_ELBO(num_particles=particles).loss(model, guide)
        assert loss != pytest.approx(ancestral, rel=1e-6)  # the branches' runs are in it too
    assert math.isfinite(ap.ELBO("disarm", vectorize_branches=True).loss_and_grads(model, guide))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, vectorize_branches", [("two layers", False), ("two layers, Normal before and after", True)]
)
def test_the_value_with_the_gradient_is_unbiased(case, vectorize_branches):
    """``loss_and_grads`` returns the mean -ELBO over the ancestral run and every branch: unbiased."""
    model, guide, noisy = CASES[case]
    n, calls = 50, 150
    exact = TraceEnum_ELBO(max_plate_nesting=1, num_particles=200 if noisy else 1, vectorize_particles=noisy)
    truth = exact.loss(config_enumerate(model), config_enumerate(guide), n)
    elbo = ap.ELBO("disarm", max_plate_nesting=1, vectorize_branches=vectorize_branches)
    values = torch.tensor([elbo.loss_and_grads(model, guide, n) for _ in range(calls)])
    z = (values.mean() - truth) / (values.std() / calls**0.5)
    assert abs(z) < 5, (values.mean(), truth, z)
    assert values.std() < torch.tensor([Trace_ELBO().loss(model, guide, n) for _ in range(calls)]).std()  # one run


def test_probs_and_to_event_sites_and_vectorized_particles_are_unbiased():
    """A .to_event(1) site given by probs, particles vectorised: the mean gradient is the exact one."""

    def guide():
        phi = pyro.param("phi", PHI.clone())
        pyro.sample("z", dist.Bernoulli(probs=torch.sigmoid(phi)).to_event(1))

    def model():
        z = pyro.sample("z", dist.Bernoulli(logits=THETA).to_event(1))
        s = (z * W).sum(-1) + 1.5 * z[..., 0] * z[..., 1]
        pyro.sample("x", dist.Bernoulli(logits=decode(s)).to_event(1), obs=X)

    pyro.clear_param_store()
    poutine.trace(guide).get_trace()
    names = ["phi"]
    params = [pyro.param(n).unconstrained() for n in names]
    exact = 0.0
    for state in itertools.product([0.0, 1.0], repeat=4):
        values = {"z": torch.tensor(state, dtype=torch.float64)}
        g = poutine.trace(poutine.condition(guide, data=values)).get_trace()
        m = poutine.trace(poutine.condition(model, data=values)).get_trace()
        exact = exact + g.log_prob_sum().exp() * (g.log_prob_sum() - m.log_prob_sum())
    exact = torch.autograd.grad(exact, params)[0]
    elbo = ap.ELBO("disarm", num_particles=4000, vectorize_particles=True, max_plate_nesting=0)
    # each particle's estimate, from the per-particle surrogate of one vectorised call, is checked by
    # its mean: the particles' average is one gradient, so repeat the call to get a spread
    draws = torch.stack([torch.autograd.grad(elbo.differentiable_loss(model, guide), params)[0] for _ in range(20)])
    z = (draws.mean(0) - exact) / (draws.std(0) / len(draws) ** 0.5)
    assert z.abs().max() < 5, z


@pytest.mark.slow
def test_svi_trains_and_a_shared_parameter_gets_the_plates_sum():
    """SVI accepts it; the gradient of a parameter shared by a plate's elements is the sum of theirs."""
    model, guide = CASES["one layer"][:2]

    def shared_guide(n):
        phi = pyro.param("phi", PHI.clone())
        with pyro.plate("data", n, dim=-1):
            for d in range(4):
                pyro.sample(f"z{d}", dist.Bernoulli(logits=phi[d]))

    elbo = ap.ELBO("disarm", max_plate_nesting=1)
    pyro.set_rng_seed(1)
    per_row = gradients(elbo, model, guide, 7)[:, :4]  # the phi columns (sorted names: phi, theta)
    pyro.set_rng_seed(1)
    pyro.clear_param_store()
    elbo.loss_and_grads(model, shared_guide, 7)
    torch.testing.assert_close(pyro.param("phi").unconstrained().grad, per_row.sum(0))
    # the per-element columns above are phi's: check the names' order assumption
    assert sorted(pyro.get_param_store().keys())[0] == "phi"

    pyro.clear_param_store()
    svi = SVI(model, shared_guide, pyro.optim.Adam({"lr": 0.05}), loss=ap.ELBO("disarm", max_plate_nesting=1))
    losses = [svi.step(50) for _ in range(150)]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20


# ---- bad input -----------------------------------------------------------------------------------


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="even"):
        ap.ELBO("disarm", 3)
    with pytest.raises(ValueError, match="gumbel.*discrete points only"):
        ap.ELBO("gumbel")
    with pytest.raises(ValueError, match="rebar"):
        ap.ELBO("rebar")
    with pytest.raises(ValueError, match="double_cv.*df/db"):
        ap.ELBO("double_cv", 2)
    with pytest.raises(ValueError, match="Unknown estimator|unknown estimator"):
        ap.ELBO("armm")
    with pytest.raises(ValueError, match="other_sites"):
        ap.ELBO(other_sites="ignore")

    def normal_guide():
        pyro.sample("y", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    def normal_model():
        y = pyro.sample("y", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(y, 1.0), obs=torch.tensor(0.5))

    with pytest.raises(ValueError, match="no Bernoulli or categorical sample site.*Trace_ELBO"):
        ap.ELBO().loss(normal_model, normal_guide)

    def poisson_guide():
        pyro.sample("c", dist.Poisson(torch.tensor(2.0)))
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.tensor(0.0))))

    def poisson_model():
        c = pyro.sample("c", dist.Poisson(torch.tensor(2.0)))
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(c + z, 1.0), obs=torch.tensor(1.0))

    with pytest.raises(ValueError, match="site 'c' \\(Poisson\\).*other_sites='score'"):
        ap.ELBO().loss(poisson_model, poisson_guide)
    assert isinstance(ap.ELBO(other_sites="score").loss_and_grads(poisson_model, poisson_guide), float)

    def extra_guide():
        pyro.sample("c", dist.Poisson(torch.tensor(2.0)))
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.tensor(0.0))))
        pyro.sample("w", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="guide sites not in the model: \\['w'\\]"):
        ap.ELBO(other_sites="score").loss(poisson_model, extra_guide)

    def missing_guide():
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.tensor(0.0))))

    with pytest.raises(ValueError, match="latent sites of the model not in the guide: \\['c'\\]"):
        ap.ELBO().loss(poisson_model, missing_guide)


def test_is_a_pyro_elbo():
    assert isinstance(ap.ELBO(), pyro.infer.ELBO)
    assert "disarm" in repr(ap.ELBO())
    assert {"arm", "disarm", "reinforce_loo"} <= set(UNBIASED)


# ---- the example ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--elbo", "armgrad"], ["--elbo", "tracegraph", "--baseline", "learned"]])
def test_the_pyro_vae_example_runs(tmp_path, flags):
    from test_data import write_mnist

    write_mnist(tmp_path / "data", n_train=120, n_test=30)
    example = Path(__file__).parent.parent / "examples" / "pyro_vae.py"
    command = [
        sys.executable,
        str(example),
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "8",
        "--save",
        str(tmp_path / "vae.pt"),
        *flags,
    ]
    env = {**os.environ, "ARMGRAD_DATA": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["step 2", "step 4"]
    result = json.loads(lines[-1])
    assert result["steps"] == 4 and math.isfinite(result["test_elbo"]) and result["test_elbo"] < 0
    saved = torch.load(tmp_path / "vae.pt")
    assert saved["vae"]["encoder.weight"].shape == (200, 784) and saved["steps"] == 4


# ---- what Pyro's own tests found (issue 24): no silent wrong gradient, one line for each refusal -----------


@pytest.mark.parametrize("enumerate", ["sequential", "parallel"])
def test_a_guide_configured_for_enumeration_gets_pyros_warning(enumerate):
    def model():
        z = pyro.sample("z", dist.Bernoulli(logits=torch.tensor(0.3)))
        pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))

    def guide():
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.tensor(0.0))), infer={"enumerate": enumerate})

    with pyro.validation_enabled(True), pytest.warns(UserWarning, match="you need to use TraceEnum_ELBO instead"):
        ap.ELBO("disarm").loss_and_grads(model, guide)


def test_branches_that_do_not_broadcast_get_one_line_naming_the_way_out():
    def model():
        z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(3)).to_event(1))
        assert z.shape == (3,), "the model asserts its shapes"
        pyro.sample("x", dist.Normal(z.sum(), 1.0), obs=torch.tensor(1.0))

    def guide():
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.zeros(3))).to_event(1))

    ap.ELBO("disarm", max_plate_nesting=0).loss_and_grads(model, guide)  # one branch after another: fine
    with pytest.raises(
        ValueError, match=r"vectorize_branches=True\): the 2 branches of site 'z'.*vectorize_branches=False"
    ):
        ap.ELBO("disarm", max_plate_nesting=0, vectorize_branches=True).loss_and_grads(model, guide)


def spin_problem():
    """A +-1 spin ``s`` (a Bernoulli moved to {-1, +1}) and a Bernoulli ``z`` in the guide; the exact gradient of
    the ELBO w.r.t. the spin's logit by enumerating the four states."""
    x = torch.tensor(2.5, dtype=torch.float64)

    def spin(logit):
        return dist.TransformedDistribution(dist.Bernoulli(logits=logit), [dist.transforms.AffineTransform(-1.0, 2.0)])

    def model():
        s = pyro.sample("s", spin(torch.tensor(0.4, dtype=torch.float64)))
        z = pyro.sample("z", dist.Bernoulli(logits=torch.tensor(-0.2, dtype=torch.float64)))
        pyro.sample("x", dist.Normal(s + z, 1.0), obs=x)

    def guide():
        pyro.sample("s", spin(pyro.param("psi", torch.tensor(0.5, dtype=torch.float64))))
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("phi", torch.tensor(0.1, dtype=torch.float64))))

    psi = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    q_s, q_z = torch.sigmoid(psi), torch.sigmoid(torch.tensor(0.1, dtype=torch.float64))
    p_s, p_z = (
        torch.sigmoid(torch.tensor(0.4, dtype=torch.float64)),
        torch.sigmoid(torch.tensor(-0.2, dtype=torch.float64)),
    )
    elbo = 0.0
    for s, z in itertools.product([-1.0, 1.0], [0.0, 1.0]):
        qs, qz = (q_s if s > 0 else 1 - q_s), (q_z if z > 0 else 1 - q_z)
        ps, pz = (p_s if s > 0 else 1 - p_s), (p_z if z > 0 else 1 - p_z)
        log_p = ps.log() + pz.log() + dist.Normal(s + z, 1.0).log_prob(x)
        elbo = elbo + qs * qz * (log_p - qs.log() - qz.log())
    (exact,) = torch.autograd.grad(elbo, psi)
    return model, guide, -exact


def test_a_transformed_bernoulli_is_not_taken_for_a_bernoulli_site():
    """A +-1 spin was once given the Bernoulli branches 0/1 (a silently wrong gradient with validation off):
    it is refused as another kind of site, and with other_sites="score" gets the score term, unbiased."""
    model, guide, exact = spin_problem()
    with pyro.validation_enabled(False):
        with pytest.raises(ValueError, match="site 's' .* is neither reparameterised nor Bernoulli"):
            ap.ELBO("disarm").loss_and_grads(model, guide)
        elbo = ap.ELBO("disarm", other_sites="score")
        draws = []
        for _ in range(4000):
            pyro.clear_param_store()
            elbo.loss_and_grads(model, guide)
            draws.append(pyro.param("psi").grad.item())
    draws = torch.tensor(draws, dtype=torch.float64)
    z = (draws.mean() - exact) / (draws.std() / len(draws) ** 0.5)
    assert abs(z) < 5, (draws.mean(), exact)
    assert abs(exact) > 0.5 and abs(draws.mean() - exact) < 0.1 * abs(exact)


# ---- categorical sites (issue 24, section 3): the categorical estimators with the same recipe --------------

C_PHI0 = torch.tensor([0.4, -0.6, 0.9], dtype=torch.float64)
C_PHI1 = torch.tensor([-0.2, 0.7, 0.1, -1.0], dtype=torch.float64)
C_W0 = torch.tensor([1.2, -0.8, 0.3], dtype=torch.float64)
C_W1 = torch.tensor([[0.5, -1.1, 0.9, 0.2], [1.4, 0.3, -0.6, -0.9], [-0.7, 0.8, 0.4, 1.3]], dtype=torch.float64)


def categorical_guide(n, one_hot=False, normals=False):
    phi0, phi1 = per_element("cphi0", C_PHI0, n), per_element("cphi1", C_PHI1, n)
    if normals:
        m = per_element("cm", torch.tensor([0.3, -0.2], dtype=torch.float64), n)
    with pyro.plate("data", n, dim=-1):
        y = pyro.sample("y", dist.Normal(m[:, 0], 1.0)) if normals else 0.0
        logits0 = phi0 + 0.5 * torch.as_tensor(y).unsqueeze(-1) * C_W0
        if one_hot:
            c0 = pyro.sample("c0", dist.OneHotCategorical(logits=logits0)).argmax(-1)
        else:
            c0 = pyro.sample("c0", dist.Categorical(logits=logits0))
        c1 = pyro.sample("c1", dist.Categorical(logits=phi1 + C_W1[c0]))  # the second layer reads the first
        if normals:
            pyro.sample("u", dist.Normal(m[:, 1] + C_W1[0][c1], 1.0))


def categorical_model(n, one_hot=False, normals=False):
    with pyro.plate("data", n, dim=-1):
        y = pyro.sample("y", dist.Normal(0.0, 1.0)) if normals else 0.0
        prior0 = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
        if one_hot:
            c0 = pyro.sample("c0", dist.OneHotCategorical(logits=prior0)).argmax(-1)
        else:
            c0 = pyro.sample("c0", dist.Categorical(logits=prior0))
        c1 = pyro.sample("c1", dist.Categorical(logits=C_W1[(c0 + 1) % 3]))
        u = pyro.sample("u", dist.Normal(0.5 * C_W0[c0], 1.0)) if normals else 0.0
        s = C_W0[c0] * C_W1[2][c1] + (c0 == c1).double() - 0.4 * c1 + 0.5 * y - 0.3 * u
        pyro.sample("x", dist.Bernoulli(logits=decode(s)).to_event(1), obs=X.expand(n, 4))


CATEGORICAL_CASES = {
    "categorical, two layers": (categorical_model, categorical_guide, False),
    "one-hot then categorical": (
        lambda n: categorical_model(n, one_hot=True),
        lambda n: categorical_guide(n, one_hot=True),
        False,
    ),
    "categorical, Normal before and after": (
        lambda n: categorical_model(n, normals=True),
        lambda n: categorical_guide(n, normals=True),
        True,
    ),
}


def categorical_draws(case, estimator, n, vectorize_branches=False):
    from armgrad import categorical

    model, guide, _ = CATEGORICAL_CASES[case]
    spec = categorical.ESTIMATORS[estimator]
    # the smallest budget of at least 2 in the rule of both sites (3 and 4 categories: ARSM's 4 and 7 give 28)
    budget = next(b for b in itertools.count(2) if all(b == spec.valid_budget(b, (1, c)) for c in (3, 4)))
    elbo = ap.ELBO(estimator, budget, max_plate_nesting=1, vectorize_branches=vectorize_branches)
    return gradients(elbo, model, guide, n)


def categorical_reference(case):
    model, guide, noisy = CATEGORICAL_CASES[case]
    return reference(model, guide, 20000 if noisy else 1), noisy


@pytest.mark.parametrize("case", list(CATEGORICAL_CASES))
def test_categorical_sites_get_categorical_disarm_unbiased_against_traceenum(case):
    ref, noisy = categorical_reference(case)
    z = z_scores(categorical_draws(case, "disarm", 6000, vectorize_branches=noisy), ref, noisy)
    assert z.abs().max() < 5, f"disarm on {case}: max |z| = {z.abs().max():.2f}\n{z}"


@pytest.mark.slow
@pytest.mark.parametrize("vectorize_branches", [False, True], ids=["branches-looped", "branches-vectorized"])
@pytest.mark.parametrize("case", list(CATEGORICAL_CASES))
@pytest.mark.parametrize("estimator", ap.binary_point_estimators(ap.CATEGORICAL))
def test_every_categorical_estimator_is_unbiased_against_traceenum(case, estimator, vectorize_branches):
    ref, noisy = categorical_reference(case)
    z = z_scores(categorical_draws(case, estimator, 20000, vectorize_branches), ref, noisy)
    assert z.abs().max() < 5, f"{estimator} on {case}: max |z| = {z.abs().max():.2f}\n{z}"


def test_a_wrong_categorical_estimator_is_caught():
    class Scaled(type(__import__("armgrad").categorical.ESTIMATORS["disarm"])):
        name = "scaled_disarm"

        def combine(self, fb, b, logits, noise, **options):
            return Combined(super().combine(fb, b, logits, noise, **options).grad * 1.1)

    ref, _ = categorical_reference("categorical, two layers")
    model, guide, _ = CATEGORICAL_CASES["categorical, two layers"]
    z = z_scores(gradients(ap.ELBO(Scaled(), 2, max_plate_nesting=1), model, guide, 6000), ref, False)
    assert z.abs().max() > 5


def test_a_site_chooses_its_estimator_in_its_infer_dict():
    def guide():
        phi = pyro.param("phi", torch.zeros(3, dtype=torch.float64))
        pyro.sample("c", dist.Categorical(logits=phi), infer={"armgrad": {"estimator": "arsm", "num_samples": 4}})
        pyro.sample("z", dist.Bernoulli(logits=phi[0]))

    def model():
        c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3, dtype=torch.float64)))
        z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64)))
        pyro.sample("x", dist.Normal(c + z, 1.0), obs=torch.tensor(1.0, dtype=torch.float64))

    elbo = ap.ELBO("disarm")
    trace = poutine.trace(guide).get_trace()
    est, budget = elbo.site_estimator(trace.nodes["c"])
    assert (est.name, est.family, budget) == ("arsm", ap.CATEGORICAL, 4)
    est, budget = elbo.site_estimator(trace.nodes["z"])
    assert (est.name, est.family, budget) == ("disarm", ap.BERNOULLI, 2)
    assert math.isfinite(elbo.loss_and_grads(model, guide))
    with pytest.raises(ValueError, match="at site 'c'.*multiple of 4"):  # C(C-1)/2 + 1 = 4 at C = 3
        ap.ELBO("disarm").loss_and_grads(
            model,
            lambda: (
                pyro.sample(
                    "c",
                    dist.Categorical(logits=torch.zeros(3, dtype=torch.float64)),
                    infer={"armgrad": {"estimator": "arsm", "num_samples": 6}},
                ),
                pyro.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64))),
            ),
        )

    def plain_guide():
        pyro.sample("c", dist.Categorical(logits=torch.zeros(3, dtype=torch.float64)))
        pyro.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64)))

    with pytest.raises(ValueError, match="at site 'c'.*has no categorical form"):
        ap.ELBO("arms").loss_and_grads(model, plain_guide)


@pytest.mark.slow
def test_the_gaussian_mixture_example_runs():
    """examples/pyro_gmm.py: categorical assignments trained with armgrad.pyro.ELBO, the variance table printed."""
    example = Path(__file__).parent.parent / "examples" / "pyro_gmm.py"
    result = subprocess.run(
        [sys.executable, str(example), "--steps", "5", "--draws", "4"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trained_with"] == "armgrad.pyro.ELBO(disarm)" and math.isfinite(summary["exact_negative_elbo"])
    assert set(summary["assignment_gradient_variance"]) == {
        "armgrad.pyro.ELBO(disarm)",
        "armgrad.pyro.ELBO(reinforce_loo)",
        "TraceGraph_ELBO(num_particles=3)",
    }


def nested_model(n):
    theta = torch.tensor([0.3, -0.6, 0.9], dtype=torch.float64)
    w = torch.tensor([1.0, -0.7, 0.5], dtype=torch.float64)
    with pyro.plate("outer", n, dim=-2), pyro.plate("inner", 3, dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=theta))  # (n, 3), an element per (outer, inner)
        pyro.sample("x", dist.Bernoulli(logits=decode(w * z + 0.3)).to_event(1), obs=X.expand(n, 3, 4))


def nested_guide(n):
    phi = per_element("nphi", torch.tensor([0.5, -0.2, 0.8], dtype=torch.float64), n)  # (n, 3)
    with pyro.plate("outer", n, dim=-2), pyro.plate("inner", 3, dim=-1):
        pyro.sample("z", dist.Bernoulli(logits=phi))


@pytest.mark.parametrize("vectorize_branches", [False, True], ids=["branches-looped", "branches-vectorized"])
def test_nested_plates_get_an_unbiased_gradient(vectorize_branches):
    """A Bernoulli site in two nested plates, the observation reading every element of the inner plate (Pyro's
    plate-in-plate shapes): each (outer, inner) element gets its own estimate, against TraceEnum_ELBO."""
    ref = gradients(
        TraceEnum_ELBO(max_plate_nesting=2), config_enumerate(nested_model), config_enumerate(nested_guide), 1
    )
    elbo = ap.ELBO("disarm", 2, max_plate_nesting=2, vectorize_branches=vectorize_branches)
    draws = gradients(elbo, nested_model, nested_guide, 8000)
    z = z_scores(draws, ref, False)
    assert z.abs().max() < 5, z


# the shape of Pyro's capture-recapture example: a chain of binary states over time, each reading the last,
# in the guide too (not mean-field), observed through a Normal at every step
HMM_STEPS = 4


def hmm_model(n):
    y = torch.tensor([0.2, 1.1, -0.4, 0.9], dtype=torch.float64)
    with pyro.plate("data", n, dim=-1):
        z = torch.zeros(n, dtype=torch.float64)
        for t in range(HMM_STEPS):
            z = pyro.sample(f"alive_{t}", dist.Bernoulli(logits=-0.3 + 1.5 * z))
            pyro.sample(f"y_{t}", dist.Normal(z, 0.8), obs=y[t].expand(n))


def hmm_guide(n):
    phi = per_element("hphi", torch.tensor([0.4, -0.5, 0.2, 0.7], dtype=torch.float64), n)
    c = per_element("hc", torch.tensor([0.8], dtype=torch.float64), n)[:, 0]  # how much the last state counts
    with pyro.plate("data", n, dim=-1):
        z = torch.zeros(n, dtype=torch.float64)
        for t in range(HMM_STEPS):
            z = pyro.sample(f"alive_{t}", dist.Bernoulli(logits=phi[:, t] + c * z))


@pytest.mark.parametrize("estimator", ["disarm", "reinforce_loo"])
def test_a_chain_of_binary_states_over_time_is_unbiased(estimator):
    """Four sequential Bernoulli sites, each reading the one before in the model and in the guide."""
    ref = reference(hmm_model, hmm_guide, 1)
    draws = gradients(ap.ELBO(estimator, 2, max_plate_nesting=1), hmm_model, hmm_guide, 8000)
    z = z_scores(draws, ref, False)
    assert z.abs().max() < 5, z


# ---- the model shapes of Pyro's tests/infer/test_valid_models.py, written for armgrad -----------------------


def _iplate(model_or_guide):
    def run():
        p = pyro.param("p", torch.tensor(0.3)) if model_or_guide == "guide" else torch.tensor(0.5)
        for i in pyro.plate("plate", 4, 2):  # sequential, subsampled
            pyro.sample(f"x_{i}", dist.Bernoulli(logits=p))
        if model_or_guide == "model":
            pyro.factor("f", torch.tensor(-0.5))  # a factor in the model (an observed site of its own)

    return run


def _three_plates(model_or_guide):
    def run():
        p = pyro.param("p", torch.tensor(0.3)) if model_or_guide == "guide" else torch.tensor(0.5)
        inner = pyro.plate("plate2", 10, 5)
        for i in pyro.plate("plate0", 2):
            pyro.sample(f"x_{i}", dist.Bernoulli(logits=p))
            if i == 0:
                for j in pyro.plate("plate1", 2):
                    with inner as ind:
                        pyro.sample(f"y_{j}", dist.Bernoulli(logits=p).expand_by([len(ind)]))
            else:
                with inner as ind:
                    pyro.sample("z", dist.Bernoulli(logits=p).expand_by([len(ind)]))

    return run


def _nonnested(model_or_guide):
    def run():
        p = pyro.param("p", torch.tensor(0.3)) if model_or_guide == "guide" else torch.tensor(0.5)
        with pyro.plate("plate_0", 10, 5) as ind1:
            pyro.sample("x0", dist.Bernoulli(logits=p).expand_by([len(ind1)]))
        with pyro.plate("plate_1", 11, 6) as ind2:
            pyro.sample("x1", dist.Categorical(logits=torch.stack([p, -p, 0 * p])).expand_by([len(ind2)]))

    return run


@pytest.mark.parametrize(
    "shape", [_iplate, _three_plates, _nonnested], ids=["iplate-factor", "three-plates", "nonnested"]
)
@pytest.mark.parametrize("vectorize_branches", [False, True], ids=["looped", "vectorized"])
def test_the_valid_model_shapes_of_pyros_tests_run_and_agree(shape, vectorize_branches):
    """Pyro's assert_ok, with armgrad's ELBO: loss, loss_and_grads and differentiable_loss give one value at one
    seed, finite, and the guide's parameter gets a gradient."""
    model, guide = shape("model"), shape("guide")
    elbo = ap.ELBO("disarm", max_plate_nesting=2, vectorize_branches=vectorize_branches)
    values = []
    for call in ("loss", "loss_and_grads", "differentiable_loss"):
        pyro.clear_param_store()
        pyro.set_rng_seed(7)
        value = getattr(elbo, call)(model, guide)
        values.append(float(value.detach()) if isinstance(value, torch.Tensor) else value)
        if call == "loss_and_grads":
            assert pyro.param("p").grad is not None and torch.isfinite(pyro.param("p").grad)
    assert all(math.isfinite(v) for v in values)
    assert values[0] == pytest.approx(values[1], rel=1e-6) and values[1] == pytest.approx(values[2], rel=1e-6)
