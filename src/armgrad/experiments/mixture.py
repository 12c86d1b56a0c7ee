"""Different estimators for the runs of one batch (``armgrad study``): :class:`RunMixture`."""

from __future__ import annotations

import torch

from .._random import RunGenerators
from ..estimators.base import BinaryPointEstimator, Combined
from .training import ConfigurationError


class RunMixture(BinaryPointEstimator):
    """Run ``r`` of a batch gets ``estimators[r]``; all evaluate ``f`` at discrete points with the same budget.

    Logits are ``(R, batch, *event)`` (runs on the axis before the batch: -3 for Bernoulli units
    ``(D,)``, -4 for categorical variables ``(D, C)``). Every group of runs sharing an estimator
    draws its noise from its runs' generators, forms its samples and combines its values; the samples
    of all groups are put back in run order, so that ``f`` (the decoder) is called once for every run.
    """

    name, unbiased = "run_mixture", True
    reference = "armgrad: the estimators of the runs trained side by side"
    summary = "each run's own estimator"

    def __init__(self, estimators: list):
        self.estimators = list(estimators)
        self.family = self.estimators[0].family
        self.axis = -(self.family.event_dims + 2)  # the run axis of the logits and samples
        names = [e.name for e in self.estimators]
        self.groups = [
            (est, [r for r, n in enumerate(names) if n == est.name])
            for est in {e.name: e for e in self.estimators}.values()
        ]
        self._on_device: dict = {}  # the groups' run indices on each device, copied there once (no copy per step)

    def _indices(self, device) -> list:
        if device not in self._on_device:
            self._on_device[device] = [torch.tensor(runs, device=device) for _, runs in self.groups]
        return self._on_device[device]

    @staticmethod
    def check(estimators: list, num_samples: int, event_shape=None) -> None:
        for est in estimators:
            if not isinstance(est, BinaryPointEstimator) or est.evaluations(num_samples, event_shape) != num_samples:
                raise ConfigurationError(
                    f"runs with different estimators share a batch when every one evaluates f at discrete points, "
                    f"num_samples times; {est.name!r} does not: train it in a batch of its own"
                )
            est.check_budget(num_samples, event_shape)

    @classmethod
    def for_runs(cls, estimators: list, num_layers: int, family=None) -> list:
        """The estimator of every layer for runs with ``estimators`` (one per run) of latents in ``family``."""
        if len({getattr(e, "name", e) for e in estimators}) == 1:
            return [estimators[0]] * num_layers
        from ..estimators import get_estimator
        from ..families import BERNOULLI

        return [cls([get_estimator(e, family or BERNOULLI) for e in estimators])] * num_layers

    def draw_noise(self, num_samples, logits, generator=None):
        if not isinstance(generator, RunGenerators):
            raise TypeError("a RunMixture draws each run's noise from RunGenerators, one generator per run")
        return [
            est.draw_noise(
                num_samples,
                logits.index_select(self.axis, idx_d),
                RunGenerators([generator.generators[r] for r in runs], generator.axis),
            )
            for (est, runs), idx_d in zip(self.groups, self._indices(logits.device))
        ]

    def sample(self, logits, noise, **options):
        indices, axis = self._indices(logits.device), self.axis
        parts = [est.sample(logits.index_select(axis, idx), u) for (est, _), idx, u in zip(self.groups, indices, noise)]
        out = logits.new_empty((parts[0].shape[0], *logits.shape))
        for idx, part in zip(indices, parts):
            out.index_copy_(axis, idx, part)
        return out

    def combine(self, fb, b, logits, noise, **options) -> Combined:
        grad, axis = torch.empty_like(logits), self.axis
        for (est, _), idx_d, u in zip(self.groups, self._indices(logits.device), noise):
            part = est.combine(
                fb.index_select(-2, idx_d), b.index_select(axis, idx_d), logits.index_select(axis, idx_d), u
            )
            if part.weights is not None:
                raise ValueError(f"{est.name} weights its values: it cannot share a batch of runs")
            grad.index_copy_(axis, idx_d, part.grad)
        return Combined(grad)
