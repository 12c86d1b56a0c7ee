"""estimators/antithetic.py: ARM, DisARM and ARMS against each other on common noise; their unbiasedness is
the registry's suites' (test_generated.py, test_unbiased.py), their contract test_api.py's."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from test_relations import folded

import armgrad
from armgrad import ESTIMATORS
from armgrad.diagnostics import draw_gradients

from conftest import make_logits, make_objective


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_disarm_variance_never_exceeds_arm_on_common_noise(seed):
    r, batch, units = 20000, 6, 4
    f = make_objective(batch, units, seed=30 + seed)
    phi = make_logits(batch, units, seed=40 + seed).expand(r, batch, units)
    gen = torch.Generator().manual_seed(seed)
    u = ESTIMATORS["arm"].draw_noise(2, phi, gen)
    g_arm = armgrad.grad(folded(f, r, (batch,)), phi, "arm", 2, noise=u)
    g_disarm = armgrad.grad(folded(f, r, (batch,)), phi, "disarm", 2, noise=u)
    var_arm, var_disarm = g_arm.var(0), g_disarm.var(0)
    assert (var_disarm <= var_arm * 1.02 + 1e-12).all(), var_disarm / var_arm
    # and clearly smaller in total where the pair often differs (moderate logits)
    moderate = phi[0].abs() < 2
    assert var_disarm[moderate].sum() < 0.97 * var_arm[moderate].sum()


def test_arms_with_two_samples_is_disarm_in_distribution():
    """Two-sample chi-square test on the (finite) set of values each estimator can take."""
    r, units = 40000, 3
    f = make_objective(1, units, seed=50)
    phi = torch.tensor([[0.7, -1.3, 2.0]], dtype=torch.float64)
    draws = {
        name: draw_gradients(f, phi, name, 2, r, generator=torch.Generator().manual_seed(i))
        for i, name in enumerate(["arms", "disarm"])
    }
    keys = {name: [tuple(row) for row in torch.round(d[:, 0] * 1e8).long().tolist()] for name, d in draws.items()}
    support = sorted(set(keys["arms"]) | set(keys["disarm"]))
    assert len(support) > 4
    counters = {name: Counter(k) for name, k in keys.items()}
    counts = {name: torch.tensor([c[s] for s in support], dtype=torch.float64) for name, c in counters.items()}
    a, b = counts["arms"], counts["disarm"]
    stat = float(((a - b) ** 2 / (a + b)).sum())
    dof = len(support) - 1
    pvalue = float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), torch.tensor(stat / 2)))
    assert pvalue > 1e-4, (support, a, b)
    # and ARM's values are not on that support at all (it is continuous in u): the test has power
    arm = draw_gradients(f, phi, "arm", 2, 200, generator=torch.Generator().manual_seed(9))
    arm_keys = {tuple(row) for row in torch.round(arm[:, 0] * 1e8).long().tolist()}
    assert len(arm_keys - set(support)) > 100
