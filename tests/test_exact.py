"""estimators/exact.py: enumeration, the oracle of every other test, against oracles of its own."""

from __future__ import annotations

import itertools

import torch
from test_generated import BATCH, UNITS, moderate_logits

import armgrad

from conftest import make_logits, make_objective


def test_exact_matches_finite_differences_and_conditional_form():
    f = make_objective(3, 5, seed=3)
    phi = make_logits(3, 5, seed=4).clamp(-3, 3)
    value, grad = armgrad.exact(f, phi)
    eps = 1e-6
    for d in range(5):
        step = torch.zeros_like(phi)
        step[:, d] = eps
        fd = (armgrad.exact(f, phi + step)[0] - armgrad.exact(f, phi - step)[0]) / (2 * eps)
        torch.testing.assert_close(grad[:, d], fd, rtol=1e-6, atol=1e-8)
    # g_d = p_d (1 - p_d) (E[f | b_d = 1] - E[f | b_d = 0]), with b_d pinned by +-inf-like logits
    for d in range(5):
        hi, lo = phi.clone(), phi.clone()
        hi[:, d], lo[:, d] = 40.0, -40.0
        p = torch.sigmoid(phi[:, d])
        expected = p * (1 - p) * (armgrad.exact(f, hi)[0] - armgrad.exact(f, lo)[0])
        torch.testing.assert_close(grad[:, d], expected, rtol=1e-9, atol=1e-12)


def test_exact_is_the_brute_force_enumeration():
    """The oracle of every generated test, against ``itertools`` over the 2^D states, value and gradient."""
    f = make_objective(BATCH, UNITS, seed=8)
    phi = moderate_logits(BATCH, UNITS, seed=9)
    p = torch.sigmoid(phi)
    value, grad = torch.zeros(BATCH, dtype=phi.dtype), torch.zeros_like(phi)
    for bits in itertools.product([0.0, 1.0], repeat=UNITS):
        b = torch.tensor(bits, dtype=phi.dtype).expand(BATCH, UNITS)
        q = torch.where(b == 1, p, 1 - p).prod(-1)
        fb = f(b.unsqueeze(0))[0]
        value += q * fb
        grad += (q * fb).unsqueeze(-1) * (b - p)
    exact_value, exact_grad = armgrad.exact(f, phi)
    torch.testing.assert_close(exact_value, value)
    torch.testing.assert_close(exact_grad, grad)
    torch.testing.assert_close(armgrad.grad(f, phi, "exact", 0), grad)  # the registered estimator, by name
