"""Variational auto-encoders with one or several stochastic binary or categorical layers (model definitions only).

The DisARM protocol (Dong, Mnih & Tucker, 2020; docs/design.md section 5):

- ``linear``: 784 -> 200 binary units, decoder 200 -> 784, both linear;
- ``nonlinear``: 784 -> 200 -> 200 -> 200 binary units with LeakyReLU(0.3) (slope configurable),
  decoder mirrored;
- ``linear2`` / ``linear3`` / ``linear4``: 2, 3 or 4 stacked linear stochastic layers of 200.

Tricks of the protocol: the encoder sees ``x - train_mean``; every layer fed by binary units sees
``2b - 1``; the output bias of the decoder starts at ``logit(train_mean clipped to [0.001, 0.999])``;
the prior over the top layer is factorised Bernoulli with learned logits. Weights start Glorot-uniform
with zero biases, as in the TensorFlow reference code.

With ``categories=C`` each stochastic layer is ``D`` categorical variables of ``C`` categories
(one-hot, ``D = units``), the protocol of the coupled-estimator and CARMS papers (docs/design.md
section 5): the encoder's output is ``D C`` logits, the layer fed by the one-hot vectors sees
``2 z - 1`` flattened to ``D C`` values, and the prior has learned logits ``(D, C)``.

Shapes: ``x`` is ``(*batch, 784)``; configurations of the stochastic layers are lists of ``T`` tensors
``(S, *batch, D)`` (binary) or ``(S, *batch, D, C)`` (one-hot) with ``S`` samples per example, and
per-example quantities come out ``(S, *batch)``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..families import BERNOULLI, CATEGORICAL, autograd_of, bernoulli_log_prob, categorical_log_prob

MODELS = ("linear", "nonlinear", "linear2", "linear3", "linear4")


class _LinearBernoulli(torch.autograd.Function):
    """``log Bernoulli(x; sigmoid(h W^T + c))`` summed over the last dim, one node (see :func:`output_log_prob`)."""

    @staticmethod
    def forward(ctx, h, weight, bias, x):
        logits = F.linear(h, weight, bias)
        ctx.save_for_backward(h, weight, bias, x)
        ctx.logits = logits  # for the first derivative only: a second one recomputes it with its graph
        return (x * logits).sub_(F.softplus(logits)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        h, weight, bias, x = ctx.saved_tensors
        if torch.is_grad_enabled():  # under create_graph (REBAR's, RELAX's controls): autograd of the same terms
            composite = lambda h, w, c, x: bernoulli_log_prob(F.linear(h, w, c), x)  # noqa: E731
            return autograd_of(composite, (h, weight, bias, x), ctx.needs_input_grad, grad)
        grad = grad.unsqueeze(-1)
        dl = torch.sigmoid(ctx.logits).sub_(x).mul_(grad.neg())  # d/dl: grad (x - sigmoid(l))
        rows, inputs = dl.reshape(-1, dl.shape[-1]), h.reshape(-1, h.shape[-1])
        grad_h = dl.matmul(weight) if ctx.needs_input_grad[0] else None
        grad_weight = rows.t().mm(inputs) if ctx.needs_input_grad[1] else None
        grad_bias = rows.sum(0) if ctx.needs_input_grad[2] else None
        grad_x = (grad * ctx.logits).sum_to_size(x.shape) if ctx.needs_input_grad[3] else None
        return grad_h, grad_weight, grad_bias, grad_x


def output_log_prob(layer: nn.Module, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log Bernoulli(x; sigmoid(layer(h)))`` summed over the last dim, ``layer`` the decoder's output layer.

    For an ``nn.Linear`` the product and the likelihood are one autograd node whose backward is written
    out (``dl = g (x - sigmoid(l))``, then ``dW = dl^T h``, ``dc = sum dl``, ``dh = dl W``): a training
    step's decoder costs the two products and a handful of element-wise operators, not the forty-odd
    operator calls of the composite. Other layers (runs side by side) take the composite path."""
    if isinstance(layer, nn.Linear):
        return _LinearBernoulli.apply(h, layer.weight, layer.bias, x)
    return bernoulli_log_prob(layer(h), x)


def _glorot(layer: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(sizes: list[int], slope: float) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(_glorot(nn.Linear(n_in, n_out)))
        if i < len(sizes) - 2:
            modules.append(nn.LeakyReLU(slope))
    return nn.Sequential(*modules)


class DiscreteVAE(nn.Module):
    """``q(b_1 | x) q(b_2 | b_1) ... q(b_T | b_{T-1})`` and ``p(b_T) p(b_{T-1} | b_T) ... p(x | b_1)``.

    ``units`` binary units per layer, or with ``categories=C`` ``units`` categorical variables of ``C``
    categories (``self.family`` says which; ``self.event_shape`` is ``(D,)`` or ``(D, C)``).
    """

    def __init__(
        self,
        model: str,
        train_mean: torch.Tensor,
        units: int = 200,
        hidden: int = 200,
        slope: float = 0.3,
        pixels: int = 784,
        categories: int | None = None,
    ):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
        if categories is not None and categories < 2:
            raise ValueError(f"categories must be at least 2 (or None for binary units), got {categories}")
        self.model = model
        self.num_layers = int(model[-1]) if model[-1].isdigit() else 1
        self.family = BERNOULLI if categories is None else CATEGORICAL
        self.event_shape = (units,) if categories is None else (units, categories)
        width = units * (categories or 1)  # the logits of one layer, flat
        deep = model == "nonlinear"
        self.register_buffer("train_mean", train_mean.detach().clone().float())
        first = [pixels, hidden, hidden, width] if deep else [pixels, width]
        self.encoder = nn.ModuleList(
            [_mlp(first, slope)] + [_mlp([width, width], slope) for _ in range(self.num_layers - 1)]
        )
        # decoder[0] is p(x | b_1); decoder[t] is p(b_t | b_{t+1})
        self.decoder = nn.ModuleList(
            [_mlp(first[::-1], slope)] + [_mlp([width, width], slope) for _ in range(self.num_layers - 1)]
        )
        with torch.no_grad():
            output = cast(nn.Linear, cast(nn.Sequential, self.decoder[0])[-1])
            output.bias.copy_(torch.logit(cast(torch.Tensor, self.train_mean).clamp(0.001, 0.999)))
        self.prior_logits = nn.Parameter(torch.zeros(self.event_shape))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """A layer's flat output as the family's logits: ``(..., D)`` or ``(..., D, C)``."""
        return h if self.family is BERNOULLI else h.unflatten(-1, self.event_shape)

    def _input(self, b: torch.Tensor) -> torch.Tensor:
        """What a layer fed by the samples ``b`` sees: ``2 b - 1``, flattened to ``D C`` for one-hot ``b``."""
        return 2 * b - 1 if self.family is BERNOULLI else 2 * b.flatten(-2) - 1

    def log_prob(self, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``log q(value)`` or ``log p(value)`` of one stochastic layer with these logits, ``(S, *batch)``."""
        if self.family is BERNOULLI:
            return bernoulli_log_prob(logits, value)
        return categorical_log_prob(logits, value)

    def encoder_layers(self) -> list:
        """The chain's layers for :func:`armgrad.network.chain_estimate`: ``x -> phi_1``, ``b_t -> phi_{t+1}``."""
        first, *upper = self.encoder  # (slicing a ModuleList builds a new module: a cost on every step)
        if self.family is BERNOULLI:
            return [lambda x: first(x - self.train_mean)] + [lambda b, net=net: net(2 * b - 1) for net in upper]
        return [lambda x: self._logits(first(x - self.train_mean))] + [
            lambda b, net=net: self._logits(net(self._input(b))) for net in upper
        ]

    def log_joint(self, x: torch.Tensor, samples: list) -> torch.Tensor:
        """``log p(x, b_1, ..., b_T)``, shape ``(S, *batch)``."""
        *hidden, output = cast(nn.Sequential, self.decoder[0])
        h = self._input(samples[0])
        for layer in hidden:
            h = layer(h)
        total = output_log_prob(output, h, x)
        for t in range(1, self.num_layers):
            if self.family is BERNOULLI:  # p(b_{t-1} | b_t): one linear layer
                (layer,) = cast(nn.Sequential, self.decoder[t])
                total = total + output_log_prob(layer, self._input(samples[t]), samples[t - 1])
            else:
                total = total + categorical_log_prob(
                    self._logits(self.decoder[t](self._input(samples[t]))), samples[t - 1]
                )
        if self.family is BERNOULLI:
            return total + bernoulli_log_prob(self.prior_logits, samples[-1])  # (D,) broadcast
        return total + categorical_log_prob(self.prior_logits, samples[-1])  # (D, C) broadcast: one log_softmax

    def negative_elbo(self, x: torch.Tensor, samples: list, logits: list) -> torch.Tensor:
        """``f = -(log p(x, b) - log q(b | x))`` per configuration, ``(S, *batch)``.

        ``logits`` are the encoder's, detached by the caller: the encoder learns only through the
        estimator (``E[d log q] = 0``, so dropping the explicit term keeps the gradient unbiased).
        """
        log_q = self.log_prob(logits[0], samples[0])
        for phi, b in zip(logits[1:], samples[1:]):
            log_q = log_q + self.log_prob(phi, b)
        return log_q - self.log_joint(x, samples)

    def sample_posterior_with_logits(self, x: torch.Tensor, num_samples: int, generator=None):
        """``num_samples`` ancestral draws from ``q``: ``(samples, logits)``, lists of ``(K, *batch, *event)``."""
        samples, logits, h = [], [], x
        for t, layer in enumerate(self.encoder_layers()):
            phi = layer(h)
            if t == 0:  # the first layer's logits once per example, shared by the K draws
                phi = phi.expand(num_samples, *phi.shape)
            u = torch.rand(phi.shape, generator=generator, dtype=phi.dtype, device=phi.device)
            h = self.family.sample(phi, u)
            samples.append(h)
            logits.append(phi)
        return samples, logits

    def sample_posterior(self, x: torch.Tensor, num_samples: int, generator=None):
        """``num_samples`` draws from ``q``: ``(samples, log_q)``, ``(K, *batch, *event)`` and ``(K, *batch)``."""
        samples, logits = self.sample_posterior_with_logits(x, num_samples, generator)
        return samples, sum(self.log_prob(phi, b) for phi, b in zip(logits, samples))
