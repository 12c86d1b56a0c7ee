"""Stochastic binary networks for structured output prediction (model definitions only).

The task of the ARM paper (after Raiko et al., 2015): predict the lower half of a binarised
digit from its upper half through two stochastic binary layers, ``x_upper -> b_1 -> b_2 -> x_lower``.

- ``linear``: 392 -> 200 -> 200 -> 392, each arrow a linear map to Bernoulli logits;
- ``nonlinear``: the same with a deterministic layer of 300 LeakyReLU(0.2) units inside every arrow.

Inputs are ``2x - 1`` and ``2b - 1``. The objective is ``-log p(x_lower | b_2)``; ``b_1`` and ``b_2``
are drawn from the network itself (``q(b_1 | x_upper) q(b_2 | b_1)``), so maximum likelihood of
``p(x_lower | x_upper) = E_q[p(x_lower | b_2)]`` is bounded by the single-sample objective and
estimated without bias-in-the-limit by ``-log (1/M) sum_m p(x_lower | b_2^(m))``.
"""

from __future__ import annotations

from torch import nn

from .vae import _glorot, _mlp, bernoulli_log_prob

SBN_MODELS = ("linear", "nonlinear")


class StochasticBinaryNetwork(nn.Module):
    """``x_upper -> b_1 -> b_2 -> x_lower`` with Bernoulli units; shapes ``(S, *batch, D)``."""

    def __init__(
        self,
        model: str = "linear",
        units: int = 200,
        hidden: int = 300,
        slope: float = 0.2,
        pixels_in: int = 392,
        pixels_out: int = 392,
    ):
        super().__init__()
        if model not in SBN_MODELS:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(SBN_MODELS)}")
        self.model = model

        def arrow(n_in, n_out):
            return _mlp([n_in, hidden, n_out], slope) if model == "nonlinear" else _glorot(nn.Linear(n_in, n_out))

        self.layers = nn.ModuleList([arrow(pixels_in, units), arrow(units, units)])
        self.output = arrow(units, pixels_out)

    def stochastic_layers(self) -> list:
        """The chain's layers for :func:`armgrad.network.chain_estimate`: ``x_upper -> phi_1``, ``b_1 -> phi_2``."""
        return [lambda h, net=net: net(2 * h - 1) for net in self.layers]

    def log_likelihood(self, x_lower, top):
        """``log p(x_lower | b_2)`` for ``b_2`` of shape ``(S, *batch, D)``: ``(S, *batch)``."""
        return bernoulli_log_prob(self.output(2 * top - 1), x_lower)

    def output_probs(self, top):
        return self.output(2 * top - 1).sigmoid()
