"""estimators/relaxed.py: Gumbel (Concrete) and straight-through; the registry's suites show their bias."""

from __future__ import annotations

import torch

import armgrad
from armgrad.diagnostics import draw_gradients

from conftest import make_logits, make_objective


def test_gumbel_bias_shrinks_as_temperature_falls():
    f = make_objective(4, 3, seed=70)
    phi = make_logits(4, 3, seed=71).clamp(-2, 2)
    _, exact_grad = armgrad.exact(f, phi)
    bias = {}
    for tau in [1.0, 0.3, 0.05]:
        draws = draw_gradients(f, phi, "gumbel", 1, 40000, generator=torch.Generator().manual_seed(1), temperature=tau)
        bias[tau] = float((draws.mean(0) - exact_grad).abs().mean())
    assert bias[0.05] < bias[0.3] < bias[1.0], bias
