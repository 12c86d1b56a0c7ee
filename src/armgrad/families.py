"""Distribution families: what an estimator needs to know about the discrete variables it serves.

A family owns everything that used to be written inline as "Bernoulli" (docs/design.md section 3):

- ``event_dims``: how many trailing dimensions of the logits make one sample's event, 1 for
  Bernoulli units ``(*batch, D)``, 2 for categorical variables ``(*batch, D, C)``;
- ``sample(logits, u)``: a draw from uniforms ``u`` of the logits' shape (per draw), as a float
  tensor of the logits' dtype: ``1[u < sigmoid(phi)]`` for Bernoulli, the one-hot Gumbel-max
  ``argmax(phi - log(-log u))`` for categorical;
- ``score(x, logits)``: ``d log q(x) / d logits`` (``x - sigmoid(phi)``, ``x - softmax(phi)``);
- ``log_prob(x, logits)``: ``log q(x)`` summed over the event, ``(S, *batch)``;
- ``states(event_shape)``: every state, for enumeration; ``num_states(event_shape)``;
- ``check_logits(logits)``: the input check at the public boundary, with clear errors.

Estimators carry their family (``Estimator.family``); the generic estimators (REINFORCE,
leave-one-out REINFORCE, enumeration) are written once against this interface and registered for
both families.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from ._checks import check_finite
from ._checks import check_logits as check_bernoulli_logits


class Family(ABC):
    """The interface; see the module docstring. Instances are singletons (:data:`BERNOULLI`, :data:`CATEGORICAL`)."""

    name: str
    event_dims: int
    shape_text: str  # the logits' shape, for messages

    def __repr__(self) -> str:
        return f"<family {self.name!r}>"

    # one object per family, whatever copies it: the registry is keyed by these objects
    def __copy__(self) -> Family:
        return self

    def __deepcopy__(self, memo) -> Family:
        return self

    def __reduce__(self):
        return (_family_named, (self.name,))

    def batch_shape(self, logits_shape) -> tuple:
        """The leading dims of a logits shape that are not the event: ``(*batch)``."""
        return tuple(logits_shape[: len(logits_shape) - self.event_dims])

    def event_shape(self, logits_shape) -> tuple:
        """The trailing dims of a logits shape that make one sample: ``(D,)`` or ``(D, C)``."""
        return tuple(logits_shape[len(logits_shape) - self.event_dims :])

    @abstractmethod
    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The probabilities the logits give, of the logits' shape (``sigmoid``, ``softmax`` over ``C``)."""

    @abstractmethod
    def sample(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A draw from uniforms ``u`` of the logits' shape (with leading sample dims), as floats."""

    @abstractmethod
    def score(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``d log q(x) / d logits``, of ``x``'s shape."""

    @abstractmethod
    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` summed over the event: ``x``'s shape without the event dims."""

    @abstractmethod
    def num_states(self, event_shape) -> int:
        """How many states one event has (``2^D``, ``C^D``)."""

    @abstractmethod
    def states(self, event_shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """Every state of one event, stacked on a leading dim of :meth:`num_states`."""

    @abstractmethod
    def check_logits(self, logits) -> None:
        """Raise ``TypeError``/``ValueError`` naming what is wrong with ``logits`` for this family."""


class Bernoulli(Family):
    """Independent Bernoulli units, ``q(b) = prod_d sigmoid(phi_d)^b_d (1 - sigmoid(phi_d))^(1 - b_d)``."""

    name, event_dims, shape_text = "bernoulli", 1, "(*batch, D)"

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``1[u < sigmoid(phi)]`` as floats: ``u`` of shape ``(S, *batch, D)`` (or the logits' shape)."""
        return (u < torch.sigmoid(logits)).to(logits.dtype)

    def score(self, b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return b - torch.sigmoid(logits)

    def log_prob(self, b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(logits, b)

    def num_states(self, event_shape) -> int:
        (units,) = _as_shape(event_shape)
        return 2**units

    def states(self, event_shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """All ``2^D`` binary vectors, shape ``(2^D, D)``, in binary counting order."""
        (units,) = _as_shape(event_shape)
        codes = torch.arange(2**units, device=device).unsqueeze(-1)
        bits = 2 ** torch.arange(units - 1, -1, -1, device=device)
        return ((codes & bits) > 0).to(dtype)

    def check_logits(self, logits) -> None:
        """Logits must be a finite floating-point tensor of shape ``(*batch, D)`` with ``D >= 1``."""
        check_bernoulli_logits(logits)


class Categorical(Family):
    """Independent categorical variables as one-hot vectors, ``q(z) = prod_d softmax(phi_d)[z_d]``.

    Logits ``(*batch, D, C)``: ``D`` variables of ``C >= 2`` categories, softmax over the last dim.
    """

    name, event_dims, shape_text = "categorical", 2, "(*batch, D, C)"

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return softmax(logits)

    def sample(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One-hot ``argmax_c (phi_c - log(-log u_c))`` (Gumbel-max; the exponential race of ARSM).

        ``u`` of shape ``(S, *batch, D, C)``; the winner of ``phi_c - log E_c`` with ``E = -log u`` is
        also ``argmin_c (log pi_c - phi_c)`` for the Dirichlet ``pi = E / sum E`` (ARSM's augmentation).
        """
        return one_hot_argmax(logits - torch.log(-torch.log(u)))

    def score(self, z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return z - softmax(logits)

    def log_prob(self, z: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return categorical_log_prob(logits, z)

    def num_states(self, event_shape) -> int:
        variables, categories = _as_shape(event_shape)
        return categories**variables

    def states(self, event_shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """All ``C^D`` one-hot configurations, ``(C^D, D, C)``, the last variable counting fastest."""
        variables, categories = _as_shape(event_shape)
        codes = torch.arange(categories**variables, device=device).unsqueeze(-1)
        digits = (codes // categories ** torch.arange(variables - 1, -1, -1, device=device)) % categories
        return F.one_hot(digits, categories).to(dtype)

    def check_logits(self, logits) -> None:
        """Finite floating-point logits ``(*batch, D, C)`` with ``D >= 1`` and ``C >= 2``."""
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor of shape (*batch, D, C), got {type(logits).__name__}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor (float32 or float64), got dtype {logits.dtype}")
        if logits.dim() < 2:
            raise ValueError(
                f"categorical logits need shape (*batch, D, C): D variables of C categories, got shape "
                f"{tuple(logits.shape)} (use logits.unsqueeze(-2) for a single variable)"
            )
        if logits.shape[-1] < 2:
            raise ValueError(
                f"categorical logits need C >= 2 categories in the last dimension, got shape {tuple(logits.shape)}"
            )
        if logits.shape[-2] == 0:
            raise ValueError(f"logits has no variables: shape {tuple(logits.shape)} has D = 0")
        check_finite(logits.detach(), "logits contains non-finite values (nan or inf)")


def autograd_of(composite, inputs: tuple, needs: tuple, grad: torch.Tensor) -> tuple:
    """The gradients of ``composite(*inputs)`` with a graph (``create_graph``), for the inputs in ``needs``: the
    backward of a written-out node asked for a second derivative (REBAR's and RELAX's controls)."""
    with torch.enable_grad():
        out = composite(*inputs)
    wanted = [t for t, needed in zip(inputs, needs) if needed]
    found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True))
    return tuple(next(found) if needed else None for needed in needs)


class _BernoulliLogProb(torch.autograd.Function):
    """``sum_d (value_d phi_d - softplus(phi_d))`` in one autograd node (see :func:`bernoulli_log_prob`)."""

    @staticmethod
    def forward(ctx, logits, value):
        ctx.save_for_backward(logits, value)
        return (value * logits).sub_(F.softplus(logits)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = grad_value = None
        if ctx.needs_input_grad[0]:  # d/dphi = value - sigmoid(phi)
            d = value - torch.sigmoid(logits)
            # out of place under create_graph (a second derivative, REBAR's and RELAX's controls)
            d = d * grad if torch.is_grad_enabled() else d.mul_(grad)
            grad_logits = d if d.shape == logits.shape else d.sum_to_size(logits.shape)
        if ctx.needs_input_grad[1]:  # d/dvalue = phi (relaxed samples)
            d = grad * logits
            grad_value = d if d.shape == value.shape else d.sum_to_size(value.shape)
        return grad_logits, grad_value


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``log Bernoulli(value; sigmoid(logits))`` summed over the last dim: ``sum_d value_d phi_d - softplus(phi_d)``.

    ``logits`` and ``value`` broadcast against each other (the prior's ``(D,)`` against samples ``(S, *batch,
    D)``, data ``(batch, P)`` against a decoder's ``(S, batch, P)``); ``value`` may be relaxed, in ``[0, 1]``,
    and differentiable. One autograd node with its backward written out (``value - sigmoid(phi)``, ``phi``):
    four operators forward and three back where ``-binary_cross_entropy_with_logits(...).sum(-1)`` records
    about fifteen and ten. Stable for logits of any size (``softplus`` is)."""
    return _BernoulliLogProb.apply(logits, value)


class _CategoricalLogProb(torch.autograd.Function):
    """``sum_{d,c} value_dc log_softmax(phi_d)_c`` in one autograd node (see :func:`categorical_log_prob`)."""

    @staticmethod
    def forward(ctx, logits, value):
        log_probs = log_softmax(logits)
        ctx.save_for_backward(logits, value)
        ctx.log_probs = log_probs  # for the first derivative only: a second one recomputes it with its graph
        return (value * log_probs).sum((-2, -1))

    @staticmethod
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        if torch.is_grad_enabled():  # under create_graph: autograd of the same terms
            composite = lambda phi, v: (v * log_softmax(phi)).sum((-2, -1))  # noqa: E731
            return autograd_of(composite, (logits, value), ctx.needs_input_grad, grad)
        grad = grad.view(*grad.shape, 1, 1)
        grad_logits = grad_value = None
        if ctx.needs_input_grad[0]:  # d/dphi_dc = value_dc - softmax(phi_d)_c sum_c' value_dc' (one-hot: the score)
            d = value - ctx.log_probs.exp() * value.sum(-1, keepdim=True)
            d = d.mul_(grad)
            grad_logits = d if d.shape == logits.shape else d.sum_to_size(logits.shape)
        if ctx.needs_input_grad[1]:  # d/dvalue = log_softmax(phi) (relaxed samples)
            d = grad * ctx.log_probs
            grad_value = d if d.shape == value.shape else d.sum_to_size(value.shape)
        return grad_logits, grad_value


def categorical_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``log Categorical(value; softmax(logits))`` summed over the variables, for one-hot (or relaxed, on the
    simplex) ``value`` ``(..., D, C)``: ``sum_{d,c} value_dc log_softmax(phi_d)_c``, ``(...)``.

    ``logits`` and ``value`` broadcast against each other (the prior's ``(D, C)`` against samples ``(S, *batch,
    D, C)``). One autograd node with its backward written out, as :func:`bernoulli_log_prob`."""
    return _CategoricalLogProb.apply(logits, value)


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """``softmax`` over the last dimension, written out: on the CPU, for the short rows of categorical
    logits (``C`` of 2 to 64), five times faster than ``torch.softmax``'s kernel (same result to rounding)."""
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dimension, written out as :func:`softmax` is (four times faster than
    ``torch.log_softmax`` on rows of 10 on the CPU, the same to rounding; its backward too)."""
    shifted = logits - logits.amax(-1, keepdim=True)
    return shifted - shifted.exp().sum(-1, keepdim=True).log()


def one_hot(index: torch.Tensor, categories: int, dtype: torch.dtype) -> torch.Tensor:
    """The one-hot vectors ``(*index.shape, categories)`` of ``index`` as floats: ``F.one_hot`` without its range
    check, which reads the indices back to the host (a wait on a GPU) and costs more than the scatter itself."""
    out = torch.zeros((*index.shape, categories), dtype=dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """The one-hot vector of ``argmax`` over the last dim, as floats of ``scores``' dtype."""
    return torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)


def _family_named(name: str) -> Family:
    return FAMILIES[name]


def _as_shape(event_shape) -> tuple:
    return (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)


BERNOULLI = Bernoulli()
CATEGORICAL = Categorical()
FAMILIES = {f.name: f for f in (BERNOULLI, CATEGORICAL)}

__all__ = [
    "BERNOULLI",
    "CATEGORICAL",
    "FAMILIES",
    "Bernoulli",
    "Categorical",
    "Family",
    "bernoulli_log_prob",
    "categorical_log_prob",
    "log_softmax",
    "one_hot",
    "one_hot_argmax",
    "softmax",
]
