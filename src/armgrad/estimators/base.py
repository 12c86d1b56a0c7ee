"""The estimator type: what every estimator is, says about itself, and shares (docs/design.md section 3).

An estimator is an object of a subclass of :class:`Estimator`. Its metadata are attributes that
callers select on (the registry, the tests, the CLI and the benchmarks never list names by hand):

- ``name``, ``reference``, ``summary``: who it is, where it comes from, one line for tables;
- ``unbiased``: whether ``E[grad] = d E[f] / d logits`` exactly;
- ``evaluates_f_at``: :data:`BINARY` points, :data:`RELAXED` points in (0, 1), both
  (:data:`BINARY_AND_RELAXED`, REBAR and RELAX) or every state (:data:`ENUMERATION`);
- ``budget``: how the budget of ``f`` evaluations is spent (:class:`Budget`: single draws,
  antithetic pairs, triples, any ``n``);
- ``needs_df_db``: the estimator differentiates ``f`` with respect to ``b`` (``f`` must be
  differentiable in its input);
- ``learned``: it carries trainable control parameters (:class:`LearnedControlEstimator`, an
  ``nn.Module``);
- ``options``: the keyword options it takes (``temperature`` for ``gumbel``, ...).

Every estimator implements :meth:`Estimator.estimate` ``(f, logits, noise, num_samples, **options)
-> Estimate``: it calls ``f`` exactly once on stacked samples ``(S, *batch, D)`` and returns the
value (``(*batch)``, the estimate of ``E[f]``, attached to the graph of whatever ``f`` closes over)
and ``grad`` (``(*batch, D)``, no graph), or ``grad = None`` for a pathwise estimator, whose
gradient flows through ``value`` itself. Only a pathwise estimator's value may depend on the logits
through autograd; the others work on ``logits.detach()``.

Estimators that evaluate ``f`` at binary points (:class:`BinaryPointEstimator`) come in phases,
``sample(logits, noise) -> b`` and ``combine(fb, b, logits, noise) -> Combined(grad, weights)``,
where ``weights`` turn the values of ``f`` into the estimate's value: ``None`` for the Monte
Carlo mean (``1/S`` each), ``q(b)`` for enumeration. :func:`value_of` is the one place that
applies them, for :func:`armgrad.estimate`, :func:`armgrad.grad`, the diagnostics and
:func:`armgrad.network.chain_estimate` alike. The split lets a caller evaluate the samples of
many estimates (every layer of a deep model) in one fused call of ``f``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_finite
from .._random import RunGenerators, uniform
from ..families import BERNOULLI, Family

BINARY = "binary"
RELAXED = "relaxed"
BINARY_AND_RELAXED = "binary and relaxed"
ENUMERATION = "enumeration"


class Estimate(NamedTuple):
    """``value``: ``(*batch)`` estimate of ``E[f]``; ``grad``: ``(*batch, D)``, or ``None`` (pathwise)."""

    value: torch.Tensor
    grad: torch.Tensor | None


class Combined(NamedTuple):
    """What :meth:`BinaryPointEstimator.combine` returns: the gradient, and the weights of the value.

    ``weights`` is ``None`` for the plain Monte Carlo mean of the ``S`` values, or a tensor
    ``(S, *batch)`` (``q(b)`` for enumeration); see :func:`value_of`.
    """

    grad: torch.Tensor
    weights: torch.Tensor | None = None


def value_of(fb: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The estimate of ``E[f]`` from ``f``'s values ``fb`` ``(S, *batch)``: ``sum_s w_s f_s``."""
    return fb.mean(0) if weights is None else (weights * fb).sum(0)


@dataclass(frozen=True)
class Budget:
    """How an estimator spends its budget of ``num_samples`` evaluations of ``f`` per batch element.

    ``group`` evaluations make one unit (1: independent draws, 2: antithetic pairs, 3: REBAR's
    triples), called ``unit`` in messages and tables; ``minimum`` is the smallest budget. Where the
    unit's size depends on the event shape (ARSM's ``C(C-1)/2 + 1`` joint swaps, IndeCateR's ``D C``),
    ``group_of(event_shape)`` gives it and ``rule`` names it (``"C(C-1)/2 + 1"``).
    """

    group: int = 1
    unit: str = "draws"
    minimum: int = 1
    group_of: Callable | None = None
    rule: str = ""

    def size(self, event_shape=None) -> int:
        """Evaluations per unit for logits with this event shape."""
        if self.group_of is None:
            return self.group
        if event_shape is None:
            raise ValueError(f"a budget in {self.unit} of {self.rule} evaluations depends on the logits' shape")
        return self.group_of(tuple(event_shape))

    def check(self, num_samples, name: str, event_shape=None) -> None:
        """Raise ``TypeError``/``ValueError`` naming the rule unless ``num_samples`` follows it."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise TypeError(
                f"num_samples must be an int (the number of f evaluations per batch element), "
                f"got {type(num_samples).__name__}"
            )
        group = self.size(event_shape)
        minimum = max(self.minimum, group) if self.rule else self.minimum
        if num_samples < minimum:
            rule = f" ({self.rule} = {group} for these logits)" if self.rule else ""
            raise ValueError(
                f"num_samples={num_samples} is too small for estimator {name!r}: "
                f"it needs at least {minimum} f evaluations per batch element{rule}"
            )
        if num_samples % group:
            must = "even" if group == 2 and not self.rule else f"a multiple of {group}"
            rule = f" ({self.rule} for these logits)" if self.rule else ""
            raise ValueError(
                f"estimator {name!r} spends its budget in {self.unit}: num_samples must be {must}{rule}, "
                f"got {num_samples}"
            )

    def valid(self, num_samples: int, event_shape=None) -> int:
        """The smallest budget this rule accepts that is at least ``num_samples``."""
        group = self.size(event_shape)
        budget = max(num_samples, self.minimum, group)
        return budget + (-budget) % group

    def allowed(self, maximum: int, event_shape=None) -> list[int]:
        """Every budget this rule accepts up to ``maximum``."""
        return list(range(self.valid(1, event_shape), maximum + 1, self.size(event_shape)))

    def describe(self) -> str:
        """The rule for the tables: ``S``, ``S (S/2 antithetic pairs)``, ..."""
        if self.rule:
            return f"S (S/({self.rule}) {self.unit})"
        return f"S (S/{self.group} {self.unit})" if self.group > 1 else "S"


class Estimator(ABC):
    """The base of every estimator; subclasses set the metadata and implement :meth:`estimate`."""

    name: str
    reference: str
    summary: str
    unbiased: bool
    evaluates_f_at: str = BINARY
    budget: Budget = Budget()
    needs_df_db: bool = False
    learned: bool = False
    options: tuple = ()
    family: Family = BERNOULLI

    @abstractmethod
    def estimate(self, f: Callable, logits: torch.Tensor, noise, num_samples: int, **options) -> Estimate:
        """One call of ``f``; ``Estimate(value, grad)`` as the module docstring says."""

    def __repr__(self) -> str:
        return f"<estimator {self.name!r}>"

    @classmethod
    def create(cls, num_units: int | None = None, **controls) -> LearnedControlEstimator:
        """A fresh object with its own trainable controls; only estimators with ``learned`` have any."""
        raise TypeError(f"estimator {cls.__name__} has no trainable controls to create: pass it by name")

    # ---- the budget and the noise -----------------------------------------------------------

    def evaluations(self, num_samples: int, event_shape=None) -> int:
        """Number of ``f`` evaluations per batch element for a budget of ``num_samples``.

        ``event_shape``: ``D`` (or ``(D,)``) for Bernoulli units, ``(D, C)`` for categorical variables;
        only enumeration needs it.
        """
        return num_samples

    def check_budget(self, num_samples, event_shape=None) -> None:
        """Raise a clear error unless ``num_samples`` is a budget this estimator accepts."""
        self.budget.check(num_samples, self.name, event_shape)

    def valid_budget(self, num_samples: int, event_shape=None) -> int:
        """The smallest budget this estimator accepts that is at least ``num_samples``."""
        return self.budget.valid(num_samples, event_shape)

    def noise_shape(self, num_samples: int, logits_shape: torch.Size, **options) -> tuple | None:
        """Shape of the uniforms one estimate consumes, or ``None`` if it draws none (``options``: the
        estimator's call options, for the few whose noise depends on them, such as ``gumbel_rao``'s draws)."""
        return (num_samples, *logits_shape)

    def draw_noise(self, num_samples: int, logits: torch.Tensor, generator=None, **options):
        """Uniforms in (0, 1) for this estimator, budget and logits, from ``generator``.

        Feed the same tensor to several estimators (``noise=``) for common random numbers:
        AR with budget ``S`` and ARM/DisARM with budget ``2S`` read the same shape.
        """
        shape = self.noise_shape(num_samples, logits.shape, **options)
        if shape is None:
            return None
        if isinstance(generator, RunGenerators):  # runs side by side, logits (R, batch, ...): find R in the noise
            generator = generator.along(self._run_axis(num_samples, logits.shape, **options))
        u = uniform(shape, generator, logits.dtype, logits.device)
        return u.clamp_(min=torch.finfo(logits.dtype).tiny)  # rand is [0, 1): keep log/logit finite

    def _run_axis(self, num_samples: int, logits_shape, **options) -> int:
        """Where the logits' first dim (the runs of a batch) lies in this estimator's noise, from the end:
        the noise shape of logits whose first dim has a size no other dim has."""
        probe = 7919  # a prime: no budget, batch or event size of a real call
        shape = self.noise_shape(num_samples, torch.Size((probe, *logits_shape[1:])), **options)
        assert shape is not None and list(shape).count(probe) == 1, (self.name, shape)
        return list(shape).index(probe) - len(shape)

    # ---- options ------------------------------------------------------------------------------

    def option_names(self) -> tuple:
        """The keyword options this estimator takes (``temperature`` for ``gumbel``, ...)."""
        return tuple(self.options)

    def check_options(self, options: dict) -> None:
        """Raise a clear error for an option this estimator does not take (a typo would be silent)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = f"its options: {', '.join(self.options)}" if self.options else "it takes no options"
            raise ValueError(f"estimator {self.name!r} has no option {', '.join(map(repr, unknown))}; {takes}")

    # ---- what a closed form knows ----------------------------------------------------------------

    def one_unit_variance(self, logit: float, f0: float, f1: float) -> float | None:
        """Exact variance of a one-draw estimate for one unit with ``f(0) = f0``, ``f(1) = f1``.

        ``None`` where no closed form is implemented; one draw is one unit of :attr:`budget`.
        """
        return None


class BinaryPointEstimator(Estimator):
    """An estimator that evaluates ``f`` only at binary points and never differentiates it.

    Subclasses implement :meth:`sample` and :meth:`combine`; :meth:`estimate` is their composition
    around the one call of ``f``, and :func:`armgrad.network.chain_estimate` fuses the samples of
    every layer into one call. ``combine`` receives ``f``'s values detached.
    """

    evaluates_f_at = BINARY

    @abstractmethod
    def sample(self, logits: torch.Tensor, noise, **options) -> torch.Tensor:
        """The samples ``(S, *batch, D)`` at which ``f`` is evaluated, from detached ``logits``."""

    @abstractmethod
    def combine(self, fb: torch.Tensor, b: torch.Tensor, logits: torch.Tensor, noise, **options) -> Combined:
        """The gradient estimate ``(*batch, D)`` and the value's weights, from ``fb = f(b)`` ``(S, *batch)``;
        ``options`` are the call's options, as :meth:`sample` received them."""

    def estimate(self, f, logits, noise, num_samples, **options) -> Estimate:
        phi = logits.detach()
        b = self.sample(phi, noise, **options)
        fb = evaluate(f, b, self.family.event_dims)
        grad, weights = self.combine(fb.detach(), b, phi, noise, **options)
        return Estimate(value_of(fb, weights), grad)


class LearnedControlEstimator(Estimator, nn.Module):
    """An estimator with trainable control parameters (REBAR, RELAX), an ``nn.Module``.

    Create one with ``ESTIMATORS[name].create(num_units=D)``; pass the object wherever a name is
    accepted. Each estimate made in training mode stores the gradient of its variance objective
    with respect to :meth:`parameters`; :meth:`backward_variance` accumulates it into their
    ``.grad`` for the caller's optimiser (never into the model's parameters). In eval mode
    (``.eval()``) nothing is stored. Checkpoint it with ``state_dict``.
    """

    learned = True

    def __init__(self):
        nn.Module.__init__(self)
        self._variance = None

    @classmethod
    def create(cls, num_units: int | None = None, **controls) -> LearnedControlEstimator:
        """A fresh estimator with its own controls, for logits with ``num_units`` units."""
        return cls(num_units=num_units, **controls)  # type: ignore[call-arg]  # every subclass takes num_units

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)

    def store_variance_gradient(self, grad: torch.Tensor) -> None:
        """Differentiate the variance objective ``mean |g|^2`` w.r.t. the trainable controls, now.

        Called by :meth:`estimate` on its ``grad`` (still attached to the controls), with the graph
        retained, so the caller may backpropagate the model's loss and call
        :meth:`backward_variance` in either order. The control leaves ``E[g]`` unchanged, so
        minimising ``E|g|^2`` minimises the variance.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if not self.training or not params or not grad.requires_grad:
            self._variance = None
            return
        loss = (grad**2).sum(-1).mean()
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        self._variance = (loss.detach(), list(zip(params, grads)))

    def backward_variance(self, scale: float = 1.0) -> torch.Tensor:
        """Accumulate ``scale * d mean|g|^2 / d controls`` of the last estimate into their ``.grad``
        (``scale``: ``1/S`` for one of ``S`` shards of a batch); return ``mean|g|^2``."""
        if self._variance is None:
            raise RuntimeError(
                f"{type(self).__name__}: no estimate with trainable controls made since the last call; "
                "call armgrad.estimate or armgrad.grad with this object first"
            )
        loss, grads = self._variance
        for param, g in grads:
            if g is not None:
                g = g.detach() if scale == 1 else g.detach() * scale
                param.grad = g if param.grad is None else param.grad + g
        self._variance = None
        return loss


def evaluate(f: Callable, b: torch.Tensor, event_dims: int = 1, finite: bool = True) -> torch.Tensor:
    """Call ``f`` once on stacked samples ``b`` of shape ``(S, *batch, *event)`` and check its output.

    ``event_dims`` trailing dimensions make one sample (1: ``(D,)`` units; 2: ``(D, C)`` one-hot
    variables). Returns ``f(b)`` of shape ``(S, *batch)``; raises ``TypeError``/``ValueError``
    naming what was wrong when ``f`` returns something else or (unless ``finite=False``, for a caller
    that watches its loss itself) a non-finite value.
    """
    out = f(b)
    expected = tuple(b.shape[:-event_dims])
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor of shape {expected} (S, *batch), got {type(out).__name__}")
    if tuple(out.shape) != expected:
        raise ValueError(
            f"f returned shape {tuple(out.shape)}, expected {expected}: f receives samples of shape "
            f"{('(S, *batch, D)', '(S, *batch, D, C)')[event_dims - 1]} = {tuple(b.shape)} and must return one "
            f"value per sample and batch element, shape (S, *batch)"
        )
    if not out.is_floating_point():
        raise TypeError(f"f must return a floating-point tensor, got dtype {out.dtype}")
    if finite:
        check_finite(out.detach(), "f returned non-finite values (nan or inf)")
    return out


def per_sample(x: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``x`` of shape ``(S, *batch)`` viewed as ``(S, *batch, 1, ...)`` to broadcast over ``event_dims`` dims."""
    return x.unsqueeze(-1) if event_dims == 1 else x.view(*x.shape, *([1] * event_dims))


def bernoulli(u: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``1[u < probs]`` as a float tensor of ``probs``' dtype: a Bernoulli(probs) draw from ``u``."""
    return (u < probs).to(probs.dtype)


def require_differentiable(out: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """Raise a clear error when ``f``'s output does not depend differentiably on ``b``.

    Estimators that differentiate ``f`` (``needs_df_db``) need ``f`` to pass gradients to its
    input: thresholding, indexing with or casting ``b`` to integers cuts the graph and would
    silently give a zero or wrong gradient.
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
    def forward(ctx, value, logits, g, event_dims):
        ctx.save_for_backward(g)
        ctx.event_dims = event_dims
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return grad_out, per_sample(grad_out, ctx.event_dims) * g, None, None


def with_gradient(value: torch.Tensor, logits: torch.Tensor, g: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """``value`` (shape ``(*batch)``) unchanged, with ``g`` (``(*batch, *event)``) as the gradient of ``logits``.

    The surrogate ``value + sum_d g_d (phi_d - stop_gradient(phi_d))`` in one autograd node: the
    same value and the same gradients, without its three element-wise passes each way.
    """
    if not logits.requires_grad:
        return value
    return _WithGradient.apply(value, logits, g.detach(), event_dims)
