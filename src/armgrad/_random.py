"""Where every uniform draw of the estimators and chains comes from: one ``torch.Generator``, or one
per run for several runs trained side by side (:class:`RunGenerators`)."""

from __future__ import annotations

import torch


class RunGenerators:
    """One generator per run, for tensors whose run axis is ``axis`` (counted from the end).

    Several runs trained together in one process (``armgrad study``) stack their examples as
    ``(R, batch, D)``: every tensor drawn for them ends with those dims, so the run axis is ``-3``
    (``-4`` for categorical variables, whose tensors end with ``(R, batch, D, C)``). The
    slice of run ``r`` is drawn from ``generators[r]`` with the shape the run alone would draw, so a
    run's noise is the same whether it trains alone or with others.
    """

    def __init__(self, generators: list, axis: int = -3):
        self.generators = list(generators)
        self.axis = axis

    def __len__(self) -> int:
        return len(self.generators)

    def along(self, axis: int) -> RunGenerators:
        """The same generators for tensors whose run axis is ``axis`` (an estimator's noise, where it differs)."""
        return self if axis == self.axis else RunGenerators(self.generators, axis)

    def uniform(self, shape, dtype, device) -> torch.Tensor:
        shape = tuple(shape)
        if len(shape) < -self.axis or shape[self.axis] != len(self.generators):
            raise ValueError(
                f"a draw of shape {shape} for {len(self.generators)} runs: expected the run axis "
                f"({self.axis}) to have {len(self.generators)} entries"
            )
        alone = shape[: self.axis] + shape[self.axis + 1 :] if self.axis != -1 else shape[:-1]
        parts = [torch.rand(alone, generator=g, dtype=dtype, device=device) for g in self.generators]
        return torch.stack(parts, dim=len(shape) + self.axis)


def for_runs(generators: list, axis: int = -3):
    """The generator to pass for ``generators`` (one per run, the run axis at ``axis``): :class:`RunGenerators`,
    or the one alone."""
    return RunGenerators(generators, axis) if len(generators) > 1 else generators[0]


def uniform(shape, generator, dtype, device) -> torch.Tensor:
    """``torch.rand(shape)`` from ``generator`` (a ``torch.Generator``, :class:`RunGenerators` or ``None``)."""
    if isinstance(generator, RunGenerators):
        return generator.uniform(shape, dtype, device)
    return torch.rand(shape, generator=generator, dtype=dtype, device=device)
