"""estimators/categorical_relaxed.py: each pathwise estimator's published backward pass written out at given noise
(at temperatures other than 1), Gumbel-Rao's conditional Gumbels and its mean, the published properties of ST and
ReinMax, and ReinMax against the authors' package. Their bias is shown by the generated suite in
test_categorical.py."""

from __future__ import annotations

import math

import pytest
import torch
from test_categorical import BATCH, DRAWS, assert_unbiased, draw, make_problem

from armgrad import categorical
from armgrad.diagnostics import bias_z_scores


def test_straight_through_is_exact_for_linear_f():
    phi, _ = make_problem(2, 4, seed=7)
    a = torch.randn(BATCH, 2, 4, dtype=torch.float64)
    f = lambda z: (z * a).sum((-2, -1))  # noqa: E731
    _, exact_grad = categorical.exact(f, phi)
    _, grads = draw(f, phi, "st", 1)
    assert_unbiased(grads, exact_grad, "st on a linear f")


def test_reinmax_is_exact_for_quadratic_f_and_straight_through_is_not():
    phi, _ = make_problem(1, 5, seed=8)
    a = torch.randn(5, 5, dtype=torch.float64)
    f = lambda z: ((z[..., 0, :] @ a) * z[..., 0, :]).sum(-1) + 2 * (z[..., 0, :] @ a).sum(-1) ** 2  # noqa: E731
    _, exact_grad = categorical.exact(f, phi)
    _, grads = draw(f, phi, "reinmax", 1)
    assert_unbiased(grads, exact_grad, "reinmax on a quadratic f")
    _, st = draw(f, phi, "st", 1)
    assert bias_z_scores(st, exact_grad).abs().max() > 10


def test_reinmax_matches_the_authors_package():
    reinmax = pytest.importorskip("reinmax")
    phi, f = make_problem(2, 4, seed=9)
    _, ours = draw(f, phi, "reinmax", 1, draws=20000, temperature=1.3)
    torch.manual_seed(0)
    leaf = phi.expand(20000, *phi.shape).clone().requires_grad_(True)
    sample, _ = reinmax.reinmax(leaf, 1.3)
    f(sample.unsqueeze(0)).sum().backward()
    theirs = leaf.grad
    z = (ours.mean(0) - theirs.mean(0)) / ((ours.var(0) + theirs.var(0)) / 20000).sqrt()
    assert z.abs().max() < 5, f"reinmax differs from the package: max |z| = {z.abs().max():.2f}"


def _jacobian_times(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``J(s) g`` per variable, ``J(s) = diag(s) - s s^T``: the softmax's Jacobian (at temperature 1) applied to g."""
    return s * g - s * (s * g).sum(-1, keepdim=True)


@pytest.mark.parametrize(
    "name,tau",
    [("st", 0.7), ("st", 1.0), ("gumbel", 0.7), ("st_gumbel", 0.7), ("st_gumbel", 2.0), ("reinmax", 1.5)],
)
def test_each_pathwise_gradient_is_its_papers_formula_at_the_given_noise(name, tau):
    """The published backward pass of each biased estimator, written out per draw (not statistically: at the
    noise given) for ``f(y) = (a . y)^2``, whose ``df/dy = 2 (a . y) a``, at a temperature other than 1."""
    spec = categorical.ESTIMATORS[name]
    phi = 1.2 * torch.randn(BATCH, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = torch.randn(BATCH, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    f = lambda y: (y * a).sum((-2, -1)) ** 2  # noqa: E731
    noise = spec.draw_noise(5, phi, torch.Generator().manual_seed(3))
    grad = categorical.grad(f, phi, name, 5, noise=noise, temperature=tau)

    gumbels = -torch.log(-torch.log(noise))  # (S, batch, D, C)
    z = torch.nn.functional.one_hot((phi + gumbels).argmax(-1), 4).to(phi.dtype)
    df = lambda y: 2 * (y * a).sum((-2, -1), keepdim=True) * a  # noqa: E731
    if name == "st":  # forward z, backward through softmax(phi / tau)
        expected = _jacobian_times(torch.softmax(phi / tau, -1), df(z)) / tau
    elif name == "gumbel":  # f at softmax((phi + G) / tau)
        soft = torch.softmax((phi + gumbels) / tau, -1)
        expected = _jacobian_times(soft, df(soft)) / tau
    elif name == "st_gumbel":  # forward z = argmax(phi + G), backward through softmax((phi + G) / tau)
        expected = _jacobian_times(torch.softmax((phi + gumbels) / tau, -1), df(z)) / tau
    else:  # reinmax: 2 J(pi_half) g - J(pi) g / 2 with pi_half = (softmax(phi / tau) + z) / 2, centred
        half = (torch.softmax(phi / tau, -1) + z) / 2
        g = 2 * _jacobian_times(half, df(z)) - _jacobian_times(torch.softmax(phi, -1), df(z)) / 2
        expected = g - g.mean(-1, keepdim=True)
    torch.testing.assert_close(grad, expected.mean(0), rtol=1e-10, atol=1e-12)


def test_gumbel_rao_has_the_mean_gradient_of_st_gumbel_softmax_and_less_variance():
    """Gumbel-Rao averages ST Gumbel-softmax's backward pass over Gumbels drawn conditionally on the category:
    a Rao-Blackwellisation, so the two have one mean gradient (at any temperature), Gumbel-Rao the lower variance.
    Conditional draws from a wrong distribution shift the mean."""
    phi, f = make_problem(2, 4, seed=11)
    _, rao = draw(f, phi, "gumbel_rao", 1, temperature=0.5)  # its default: 10 conditional draws
    _, st = draw(f, phi, "st_gumbel", 1, seed=1, temperature=0.5)
    z = (rao.mean(0) - st.mean(0)) / ((rao.var(0) + st.var(0)) / DRAWS).sqrt()
    assert z.abs().max() < 5, f"gumbel_rao and st_gumbel differ in mean: max |z| = {z.abs().max():.2f}"
    assert (rao.var(0).sum() < 0.5 * st.var(0).sum()).item()


def test_conditional_gumbels_given_their_argmax_are_gumbels():
    """Drawn category first, then the Gumbels given it (Gumbel-Rao's conditional draws): ``phi + G`` must have the
    law of independent ``Gumbel(phi_c)``, i.e. ``exp(-exp(-G_c))`` uniform on (0, 1) for every c, and its argmax
    the drawn category."""
    from armgrad.estimators.categorical_relaxed import conditional_gumbels
    from armgrad.families import CATEGORICAL

    n, g = 200_000, torch.Generator().manual_seed(5)
    phi = torch.tensor([[1.5, -0.5, 0.0, 2.5]], dtype=torch.float64)  # (D = 1, C = 4)
    z = CATEGORICAL.sample(phi, torch.rand(n, 1, 4, generator=g, dtype=torch.float64))
    gumbels = conditional_gumbels(phi, z, torch.rand(1, n, 1, 4, generator=g, dtype=torch.float64))[0]
    assert torch.equal((phi + gumbels).argmax(-1), z.argmax(-1))
    v = torch.exp(-torch.exp(-gumbels)).reshape(n, 4)  # uniform if G is Gumbel(0)
    for moment, mean, variance in ((v, 1 / 2, 1 / 12), (v**2, 1 / 3, 4 / 45)):
        zs = (moment.mean(0) - mean) / math.sqrt(variance / n)
        assert zs.abs().max() < 5, zs
