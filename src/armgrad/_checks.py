"""Input validation at the public boundary: clear errors naming the argument, never a NaN later."""

from __future__ import annotations

import math

import torch

from ._random import RunGenerators


def asynchronous(device: torch.device) -> bool:
    """Whether checks on ``device`` run on the device (``torch._assert_async``), never waiting for it.

    True on accelerators, where reading a value back to the host would stall the step; on CPU a
    direct test is cheaper and raises at once.
    """
    return device.type != "cpu"


def check_finite(x: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` if ``x`` holds a nan or an inf.

    On CPU a single sum decides in the common case (a sum of finite values is finite unless it
    overflows, and then the exact element-wise test decides); this is ten times cheaper than
    ``isfinite(x).all()`` on the per-step path. On CUDA the check is asynchronous.
    """
    if not asynchronous(x.device):
        if not math.isfinite(x.sum().item()) and not bool(torch.isfinite(x).all()):
            raise ValueError(message)
    else:
        torch._assert_async(torch.isfinite(x).all(), message)


def check_all(condition: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless every element of the boolean ``condition`` holds.

    On CUDA the check is asynchronous (``torch._assert_async``), so it never forces a
    host-device synchronisation in a training step; the error then surfaces at the next sync.
    """
    if not asynchronous(condition.device):
        if not bool(condition.all()):
            raise ValueError(message)
    else:
        torch._assert_async(condition.all(), message)


def check_logits(logits) -> None:
    """Logits must be a finite floating-point tensor of shape ``(*batch, D)`` with ``D >= 1``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (*batch, D), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor (float32 or float64), got dtype {logits.dtype}")
    if logits.dim() == 0:
        raise ValueError(
            "logits must have an event dimension: expected shape (*batch, D), got a scalar "
            "(use logits.unsqueeze(-1) for a single unit)"
        )
    if logits.shape[-1] == 0:
        raise ValueError(f"logits has no units: shape {tuple(logits.shape)} has D = 0")
    check_finite(logits.detach(), "logits contains non-finite values (nan or inf)")


def check_noise(noise, expected_shape: tuple | None, logits: torch.Tensor, name: str) -> None:
    """Uniform noise passed in for common random numbers: right shape, float, inside (0, 1)."""
    if expected_shape is None:
        raise ValueError(f"estimator {name!r} draws no noise; do not pass noise=")
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
        raise TypeError("noise must be a floating-point torch.Tensor of uniforms in (0, 1)")
    if tuple(noise.shape) != tuple(expected_shape):
        raise ValueError(
            f"noise has shape {tuple(noise.shape)}, but estimator {name!r} with this budget and "
            f"logits shape {tuple(logits.shape)} needs {tuple(expected_shape)} "
            f"(ESTIMATORS[{name!r}].noise_shape(num_samples, logits.shape))"
        )
    if noise.device != logits.device:
        raise ValueError(f"noise is on {noise.device} but logits are on {logits.device}")
    check_all((noise > 0) & (noise < 1), "noise must lie strictly inside (0, 1)")


def check_generator(generator, device: torch.device) -> None:
    """``generator``: ``None`` (torch's global one), a ``torch.Generator`` on the logits' device type, or the
    per-run generators of runs trained side by side."""
    if generator is None or isinstance(generator, RunGenerators):
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(
            f"generator is a {generator.device.type} generator but the logits are on {device}: "
            f"use torch.Generator({device.type!r})"
        )
