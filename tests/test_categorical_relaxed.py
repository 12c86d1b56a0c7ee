"""estimators/categorical_relaxed.py: the published properties of ST and ReinMax, and ReinMax against the authors'
package. Their bias is shown by the generated suite in test_categorical.py."""

from __future__ import annotations

import pytest
import torch
from test_categorical import BATCH, assert_unbiased, draw, make_problem

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
