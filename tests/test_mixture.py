"""experiments/mixture.py: a RunMixture gives each run of a batch what its own estimator gives it alone, on
the noise the run draws alone (the batches end to end: test_study.py)."""

from __future__ import annotations

import pytest
import torch

from armgrad import ESTIMATORS, categorical
from armgrad._random import RunGenerators
from armgrad.experiments.mixture import RunMixture


@pytest.mark.parametrize(
    "table,names,event",
    [
        (ESTIMATORS, ["disarm", "reinforce_loo", "disarm"], (5,)),
        (categorical.ESTIMATORS, ["disarm", "reinforce_loo", "carms"], (4, 3)),
    ],
    ids=["bernoulli", "categorical"],
)
def test_each_run_gets_its_estimator_on_its_own_noise(table, names, event):
    torch.manual_seed(0)
    runs, batch = len(names), 2
    logits = torch.randn(runs, batch, *event, dtype=torch.float64)
    weight = torch.randn(*event, dtype=torch.float64)

    def f(b):  # (S, ..., *event) -> (S, ...)
        return torch.tanh((b * weight).flatten(-len(event)).sum(-1))

    mixture = RunMixture([table[n] for n in names])
    axis = -(len(event) + 2)
    generators = RunGenerators([torch.Generator().manual_seed(10 + r) for r in range(runs)], axis)
    noise = mixture.draw_noise(2, logits, generators)
    b = mixture.sample(logits, noise)
    grad = mixture.combine(f(b), b, logits, noise).grad
    for r, name in enumerate(names):
        est = table[name]
        u = est.draw_noise(2, logits[r], torch.Generator().manual_seed(10 + r))
        alone = est.sample(logits[r], u)
        assert torch.equal(b.select(axis, r), alone), name  # the run's samples: the ones it draws alone
        torch.testing.assert_close(grad[r], est.combine(f(alone), alone, logits[r], u).grad)


def test_run_generators_refuse_a_draw_without_the_run_axis():
    generators = RunGenerators([torch.Generator(), torch.Generator()], axis=-4)
    with pytest.raises(ValueError, match="expected the run axis"):
        generators.uniform((2, 3, 2, 4, 3), torch.float32, "cpu")  # runs on -3, not -4
