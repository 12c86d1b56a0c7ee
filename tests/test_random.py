"""_random.py: every uniform draw, from one generator or one per run (RunGenerators)."""

from __future__ import annotations

import pytest
import torch

from armgrad._random import RunGenerators, uniform


def test_run_generators_draw_each_runs_slice_as_alone():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = uniform((5, 2, 6, 7), RunGenerators(gens), torch.float32, "cpu")
    for r, seed in enumerate((3, 4)):
        assert torch.equal(both[:, r], torch.rand((5, 6, 7), generator=torch.Generator().manual_seed(seed)))
    with pytest.raises(ValueError, match="run axis"):
        uniform((5, 3, 6, 7), RunGenerators(gens), torch.float32, "cpu")


def _every_estimator_that_draws():
    from armgrad.estimators import REGISTRY

    shapes = {1: (2, 3), 2: (2, 3, 4)}
    return [
        (family, name)
        for family, table in REGISTRY.items()
        for name, est in table.items()
        if est.noise_shape(est.valid_budget(2, shapes[family.event_dims][1:]), shapes[family.event_dims]) is not None
    ]


@pytest.mark.parametrize("family,name", _every_estimator_that_draws(), ids=lambda v: getattr(v, "name", v))
def test_every_estimators_noise_for_runs_side_by_side_is_each_runs_noise_alone(family, name):
    """Generated from the registry: whatever the shape of an estimator's noise, the slice of run r drawn with
    RunGenerators is the noise the run draws alone from its own generator."""
    from armgrad.estimators import get_estimator

    est = get_estimator(name, family)
    event = (3,) if family.event_dims == 1 else (3, 4)
    runs = 3
    logits = torch.zeros(runs, 2, *event)
    budget = est.valid_budget(2, event)
    joint = est.draw_noise(budget, logits, RunGenerators([torch.Generator().manual_seed(r) for r in range(runs)]))
    axis = est._run_axis(budget, logits.shape)
    for r in range(runs):
        alone = est.draw_noise(budget, logits[r], torch.Generator().manual_seed(r))
        assert torch.equal(joint.select(axis, r), alone), name
