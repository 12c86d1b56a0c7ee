"""Shared objectives and logits for the statistical tests.

Every objective honours the stacked convention: ``b`` of shape ``(S, *batch, D)`` -> ``(S, *batch)``,
so the diagnostics can fold many independent draws into the sample dimension.
"""

import pytest
import torch

UNBIASED = ["reinforce", "reinforce_loo", "ar", "arm", "disarm", "arms"]


def make_objective(batch: int, units: int, seed: int, dtype=torch.float64):
    """A random objective with interactions between units (not separable, not linear)."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, units, generator=g, dtype=dtype)
    weight = torch.randn(batch, units, generator=g, dtype=dtype)
    coupling = torch.randn(units, units, generator=g, dtype=dtype)

    def f(b):
        quadratic = ((b - target) ** 2 * weight).sum(-1)
        pairwise = ((b @ coupling) * b).sum(-1)
        return quadratic + pairwise + torch.cos(3 * (b * weight).sum(-1))

    return f


def make_logits(batch: int, units: int, seed: int, dtype=torch.float64):
    """Random logits with the extremes |phi| = 8 present in every row."""
    g = torch.Generator().manual_seed(seed)
    phi = 3 * torch.randn(batch, units, generator=g, dtype=dtype)
    phi[:, 0] = 8.0
    phi[:, 1] = -8.0
    return phi


@pytest.fixture
def problem():
    return make_objective(6, 4, seed=1), make_logits(6, 4, seed=2)
