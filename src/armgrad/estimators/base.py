"""What every estimator shares: the result type, the registry entry, and the one call of ``f``.

An estimator is a function ``fn(f, logits, noise, num_samples, **options) -> Estimate``:

- ``f`` maps stacked binary samples ``b`` of shape ``(S, *batch, D)`` to ``(S, *batch)``;
- ``logits`` has shape ``(*batch, D)`` and may carry an autograd graph;
- ``noise`` holds uniforms in (0, 1) of shape ``Estimator.noise_shape(num_samples, logits.shape)``
  (``None`` for estimators that draw nothing), so that several estimators can be fed the same
  noise (common random numbers);
- it calls ``f`` exactly once and returns ``Estimate(value, grad)``.

``value`` (shape ``(*batch)``) is the Monte Carlo estimate of ``E[f(b)]``, still attached to the
graph of anything ``f`` closes over. ``grad`` (shape ``(*batch, D)``, no graph) is the estimate
of ``d E[f] / d logits`` for score-function estimators; it is ``None`` for pathwise estimators,
whose gradient flows through ``value`` itself.

Estimators that evaluate ``f`` only at binary points and never differentiate it come in two
phases, ``sample(logits, noise, **options) -> b`` and ``combine(f(b), b, logits, noise) -> Estimate``,
and ``fn`` is their composition. The split lets a caller evaluate the samples of many estimates
(for instance every layer of a deep model, :mod:`armgrad.network`) in one fused call of ``f``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from .._checks import check_finite


class Estimate(NamedTuple):
    """``value``: ``(*batch)`` estimate of ``E[f]``; ``grad``: ``(*batch, D)`` or ``None``."""

    value: torch.Tensor
    grad: Optional[torch.Tensor]


def _same_shape_noise(num_samples: int, logits_shape: torch.Size) -> tuple:
    return (num_samples, *logits_shape)


@dataclass(frozen=True)
class Estimator:
    """A registry entry: the estimator function and the facts a caller needs about it.

    Attributes:
        name: the registry key.
        fn: ``fn(f, logits, noise, num_samples, **options) -> Estimate``.
        unbiased: whether ``E[grad] = d E[f] / d logits`` exactly.
        pathwise: the gradient comes through autograd of ``f`` (``Estimate.grad is None``).
        relaxed: ``f`` is evaluated at values in (0, 1), not only at {0, 1}.
        group: the budget is spent in groups of this many evaluations of ``f`` (2 for the
            antithetic pairs of ARM and DisARM, 3 for REBAR/RELAX), so it must be a multiple.
        group_name: what one group is called, for error messages.
        min_samples: the smallest budget the estimator accepts.
        differentiates_f: the estimator itself differentiates ``f`` (through autograd) to form
            its gradient, so ``f`` must be differentiable in ``b``.
        create: for estimators with trainable state (REBAR, RELAX), the class whose instances
            carry that state: ``ESTIMATORS["relax"].create(num_units=D)``.
        sample, combine: the two phases of a binary-point estimator (module docstring); when
            given, ``fn`` is built from them.
        noise_shape: ``(num_samples, logits.shape) -> shape of the uniforms``, or ``None``
            when the estimator draws no noise.
        reference: where the estimator comes from.
        summary: one line for tables.
    """

    name: str
    fn: Optional[Callable[..., Estimate]]
    unbiased: bool
    reference: str
    summary: str
    pathwise: bool = False
    relaxed: bool = False
    group: int = 1
    group_name: str = ""
    min_samples: int = 1
    differentiates_f: bool = False
    create: Optional[Callable[..., object]] = None
    sample: Optional[Callable[..., torch.Tensor]] = None
    combine: Optional[Callable[..., Estimate]] = None

    def __post_init__(self):
        if self.fn is None and self.sample is not None and self.combine is not None:
            object.__setattr__(self, "fn", self._sample_evaluate_combine)

    def _sample_evaluate_combine(self, f, logits, noise, num_samples, **options) -> Estimate:
        phi = logits.detach()
        b = self.sample(phi, noise, **options)
        return self.combine(evaluate(f, b), b, phi, noise)
    noise_shape: Optional[Callable[[int, torch.Size], tuple]] = field(default=_same_shape_noise)
    enumerates: bool = False

    def evaluations(self, num_samples: int, num_units: int | None = None) -> int:
        """Number of ``f`` evaluations per batch element for a budget of ``num_samples``."""
        if self.enumerates:
            if num_units is None:
                raise ValueError(f"{self.name!r} costs 2**D evaluations: pass num_units=D")
            return 2**num_units
        return num_samples

    def draw_noise(self, num_samples: int, logits: torch.Tensor, generator=None):
        """Uniforms in (0, 1) for this estimator, budget and logits, from ``generator``.

        Feed the same tensor to several estimators (``noise=``) for common random numbers:
        AR with budget ``S`` and ARM/DisARM with budget ``2S`` read the same shape.
        """
        if self.noise_shape is None:
            return None
        shape = self.noise_shape(num_samples, logits.shape)
        u = torch.rand(shape, generator=generator, dtype=logits.dtype, device=logits.device)
        return u.clamp_(min=torch.finfo(logits.dtype).tiny)  # rand is [0, 1): keep log/logit finite

    def check_budget(self, num_samples) -> None:
        """Raise a clear error unless ``num_samples`` is a budget this estimator accepts."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(
                f"num_samples must be an int (the number of f evaluations per batch element), "
                f"got {type(num_samples).__name__}"
            )
        if self.enumerates:
            return
        if num_samples < self.min_samples:
            raise ValueError(
                f"num_samples={num_samples} is too small for estimator {self.name!r}: "
                f"it needs at least {self.min_samples} f evaluations per batch element"
            )
        if num_samples % self.group:
            must = "even" if self.group == 2 else f"a multiple of {self.group}"
            raise ValueError(
                f"estimator {self.name!r} spends its budget in {self.group_name}: num_samples must "
                f"be {must}, got {num_samples}"
            )

    def option_names(self) -> tuple:
        """The keyword options this estimator takes (``temperature`` for ``gumbel``, ...)."""
        target = self.sample if self.sample is not None else self.fn
        standard = {"f", "logits", "noise", "u", "num_samples", "self"}
        params = inspect.signature(target).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return ("*",)
        return tuple(p.name for p in params if p.name not in standard and p.kind is not p.VAR_POSITIONAL)

    def check_options(self, options: dict) -> None:
        """Raise a clear error for an option this estimator does not take (a typo would be silent)."""
        if not options:
            return
        allowed = self.option_names()
        unknown = sorted(set(options) - set(allowed)) if "*" not in allowed else []
        if unknown:
            takes = f"its options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise ValueError(f"estimator {self.name!r} has no option {', '.join(map(repr, unknown))}; {takes}")

    def valid_budget(self, num_samples: int) -> int:
        """The smallest budget this estimator accepts that is at least ``num_samples``."""
        budget = max(num_samples, self.min_samples)
        return budget + (-budget) % self.group


def evaluate(f: Callable, b: torch.Tensor) -> torch.Tensor:
    """Call ``f`` once on stacked samples ``b`` of shape ``(S, *batch, D)`` and check its output.

    Returns ``f(b)`` of shape ``(S, *batch)``; raises ``TypeError``/``ValueError`` naming what was
    wrong when ``f`` returns something else or a non-finite value.
    """
    out = f(b)
    expected = tuple(b.shape[:-1])
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"f must return a torch.Tensor of shape {expected} (S, *batch), got {type(out).__name__}"
        )
    if tuple(out.shape) != expected:
        raise ValueError(
            f"f returned shape {tuple(out.shape)}, expected {expected}: f receives samples of shape "
            f"(S, *batch, D) = {tuple(b.shape)} and must return one value per sample and batch "
            f"element, shape (S, *batch)"
        )
    if not out.is_floating_point():
        raise TypeError(f"f must return a floating-point tensor, got dtype {out.dtype}")
    check_finite(out.detach(), "f returned non-finite values (nan or inf)")
    return out


def bernoulli(u: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``1[u < probs]`` as a float tensor of ``probs``' dtype: a Bernoulli(probs) draw from ``u``."""
    return (u < probs).to(probs.dtype)


def require_differentiable(out: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """Raise a clear error when ``f``'s output does not depend differentiably on relaxed ``b``.

    Estimators that differentiate ``f`` (``gumbel``, ``st``, ``rebar``, ``relax``) need ``f`` to
    accept values in (0, 1) and pass gradients: thresholding, indexing with or casting ``b`` to
    integers cuts the graph and would silently give a zero or wrong gradient.
    """
    if b.requires_grad and not out.requires_grad:
        raise ValueError(
            f"estimator {name!r} differentiates f at relaxed samples, but f's output does not depend "
            f"differentiably on b: f must accept float values in (0, 1) and be differentiable in them "
            f"(no thresholding, rounding, indexing or integer casts of b); use an estimator that only "
            f"evaluates f at binary points, such as 'arm' or 'disarm'"
        )


class _WithGradient(torch.autograd.Function):
    """``value``, whose backward also sends ``grad_out * g`` to ``logits`` (see :func:`with_gradient`)."""

    @staticmethod
    def forward(ctx, value, logits, g):
        ctx.save_for_backward(g)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return grad_out, grad_out.unsqueeze(-1) * g, None


def with_gradient(value: torch.Tensor, logits: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``value`` (shape ``(*batch)``) unchanged, with ``g`` (``(*batch, D)``) as the gradient of ``logits``.

    The surrogate ``value + sum_d g_d (phi_d - stop_gradient(phi_d))`` in one autograd node: the
    same value and the same gradients, without its three element-wise passes each way.
    """
    if not logits.requires_grad:
        return value
    return _WithGradient.apply(value, logits, g.detach())
