"""Several models of one architecture side by side: their parameters stacked along a run axis.

:func:`stack` turns R copies of a module (R runs' models, each initialised as it would be alone)
into one module whose linear layers are :class:`StackedLinear` (``weight (R, out, in)``) and whose
other parameters (per-unit vectors such as prior logits) become ``(R, 1, *shape)``. Inputs carry
the run axis before the batch axis, ``(..., R, batch, features)``, so one batched matrix product
serves every run, and the estimators treat ``(R, batch)`` as two batch dims. :func:`unstack_state`
and :func:`stack_states` convert state dicts (of models or optimisers) between the two forms, so a
run's checkpoint is the one it would write alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class StackedLinear(nn.Module):
    """R linear layers: ``(..., R, B, in) -> (..., R, B, out)``, run ``r`` through layer ``r``."""

    def __init__(self, layers: list):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        runs, _, n_in = self.weight.shape
        if h.dim() == 3:
            return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))
        # (L..., R, B, in) -> (R, L... * B, in): one product per run over every leading row
        lead = h.shape[:-3]
        rows = h.movedim(-3, 0).reshape(runs, -1, n_in)
        out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.reshape(runs, *lead, h.shape[-2], -1).movedim(0, -3)

    def extra_repr(self) -> str:
        runs, n_out, n_in = self.weight.shape
        return f"runs={runs}, in_features={n_in}, out_features={n_out}"


def stack(modules: list) -> nn.Module:
    """One module computing every module of ``modules`` (same architecture) on its own slice of the run
    axis; a single module is returned as it is (no run axis)."""
    if len(modules) == 1:
        return modules[0]
    stacked = copy.deepcopy(modules[0])
    _stack_into(stacked, modules)
    return stacked


def _stack_into(target: nn.Module, sources: list) -> None:
    for name, child in list(target.named_children()):
        parts = [getattr(source, name) for source in sources]
        if isinstance(child, nn.Linear):
            setattr(target, name, StackedLinear(parts))
        else:
            _stack_into(child, parts)
    for name in list(target._parameters):
        values = torch.stack([getattr(source, name).detach() for source in sources]).unsqueeze(1)
        target._parameters[name] = nn.Parameter(values)
    for name, buffer in target._buffers.items():
        if buffer is not None and any(not torch.equal(getattr(source, name), buffer) for source in sources):
            raise ValueError(f"buffer {name!r} differs between the runs: it cannot be shared")


def unstack_state(state: dict, run: int, like: dict) -> dict:
    """Run ``run``'s entries of a stacked state dict, shaped as in ``like`` (the alone state dict)."""
    return {key: _unstack(value, run, like[key]) for key, value in state.items()}


def _unstack(value, run, like):
    if isinstance(value, torch.Tensor) and isinstance(like, torch.Tensor) and value.dim() > like.dim():
        return value[run].reshape(like.shape).clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def stack_states(states: list, like: dict) -> dict:
    """The stacked state dict of the runs' ``states``, shaped as in ``like`` (the stacked state dict)."""
    return {key: _stack([s[key] for s in states], like[key]) for key in like}


def _stack(values, like):
    if isinstance(like, torch.Tensor) and like.dim() > values[0].dim():
        return torch.stack(values).reshape(like.shape)
    return values[0]


def unstack_optimizer_state(state: dict, run: int, alone_groups) -> dict:
    """Run ``run``'s part of a stacked optimiser's state dict; ``alone_groups``: the param groups alone."""
    params = [p for group in alone_groups for p in group["params"]]
    per_param = {}
    for index, values in state["state"].items():
        like = {key: (params[index] if key in _PER_ELEMENT else value) for key, value in values.items()}
        per_param[index] = unstack_state(values, run, like)
    return {"state": per_param, "param_groups": state["param_groups"]}


def stack_optimizer_states(states: list, optimizer) -> dict:
    """The state dict of ``optimizer`` (over stacked parameters) from the runs' own optimiser ``states``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param = {}
    for index, values in states[0]["state"].items():
        per_param[index] = {
            key: (
                torch.stack([s["state"][index][key] for s in states]).reshape(params[index].shape)
                if key in _PER_ELEMENT
                else value
            )
            for key, value in values.items()
        }
    return {"state": per_param, "param_groups": states[0]["param_groups"]}


_PER_ELEMENT = ("exp_avg", "exp_avg_sq")  # Adam's state shaped like its parameter (the step count is shared)
