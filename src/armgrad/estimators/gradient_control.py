"""Control variates built from ``df/db`` at the binary samples: Double control variates and RODEO.

Notation as in docs/design.md section 1: ``K >= 2`` independent draws ``b_k = 1[u_k < p]``,
``f_k = f(b_k)``, ``d_k = b_k - p`` (the score), ``grad_k = df/db (b_k)`` from the one call of ``f``
(``f`` must be differentiable in ``b``: a decoder is). Every control is built from the OTHER samples
(``-k``), so it is independent of ``b_k``, which is what keeps the estimators unbiased for any value
of their learned parameters; those are trained, as REBAR's and RELAX's, to minimise ``E|g|^2``.

Double control variates (Titsias & Shi, AISTATS 2022): leave-one-out REINFORCE on
``f_k + c_k``, with the Taylor control ``c_k = alpha gbar_{-k} . d_k`` (``gbar_{-k}`` the mean of the
other samples' ``grad_j``), minus the correction ``E[c_k d_k] = alpha E[grad] p (1 - p)``, estimated by
the mean of all ``grad_k``::

    g = 1/K sum_k ((f_k + c_k) - mean_{j != k} (f_j + c_j)) d_k  -  alpha mean_k(grad_k) p (1 - p)

At ``alpha = -1`` and a linear ``f`` it is exact (zero variance). The authors' code takes K = 2 and
4; this is the same estimator for any K >= 2.

RODEO (Shi, Zhou, Hwang, Titsias & Mackey, NeurIPS 2022): control variates from the discrete Stein
operator of ``q`` over the neighbours of a sample (one bit flipped), ``(A h)(x) = 1/D sum_i
q(not x_i) (h(x^(i)) - h(x))``, which has mean zero under ``q`` for any ``h``. With ``h = (h0, h1)``
a small network of the Taylor increment ``lin(y) = mean_{j != k} grad_j . (y - b_j)`` and of
``fbar_{-k}`` (both from the other samples)::

    g = 1/K sum_k (f_k - mean_{j != k} (f_j + alpha (A h0)(b_j))) d_k + beta (A (h1 . (y - p)))(b_k)

At ``alpha = beta = 0`` both are leave-one-out REINFORCE: the tests move every control away from its
initial value, where a dropped correction or a control built from the sample's own gradient shows.
Cost: K evaluations of ``f`` in one call, one backward pass to ``b``; RODEO adds its network on the
``K D`` neighbours (a few multiply-adds each).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import cast

import torch
from torch import nn

from .base import BINARY, Budget, Estimate, LearnedControlEstimator, bernoulli, evaluate


def _leave_one_out_mean(x: torch.Tensor) -> torch.Tensor:
    """``mean_{j != k} x_j`` for every k, over the first dimension."""
    return (x.sum(0, keepdim=True) - x) / (x.shape[0] - 1)


class GradientControlEstimator(LearnedControlEstimator):
    """Base of the estimators whose controls use ``df/db`` at the samples (module docstring).

    Subclasses implement :meth:`gradient` from ``fb (K, *batch)``, ``b``, ``dfdb (K, *batch, D)`` and
    ``p``, returning the estimate ``(*batch, D)`` attached to their control parameters.
    """

    unbiased = True
    evaluates_f_at = BINARY
    budget = Budget(unit="independent draws", minimum=2)
    needs_df_db = True

    def __init__(self, num_units: int | None = None):
        super().__init__()
        self.created = num_units is not None  # the registry's object (num_units=None) is not for estimating

    def estimate(self, f, logits, noise, num_samples) -> Estimate:
        if not self.created:
            raise ValueError(
                f"estimator {self.name!r} learns its control variates, which start where it equals REINFORCE-LOO: "
                f"create it with armgrad.ESTIMATORS[{self.name!r}].create(num_units=D), pass that object as the "
                f"estimator and step its parameters after backward_variance() (as for 'relax')"
            )
        with torch.enable_grad():
            p = torch.sigmoid(logits.detach())
            b = bernoulli(noise, p).requires_grad_(True)
            fb = evaluate(f, b)
            dfdb = None
            if fb.requires_grad:
                (dfdb,) = torch.autograd.grad(fb.sum(), b, retain_graph=True, allow_unused=True)
            if dfdb is None:
                raise ValueError(
                    f"estimator {self.name!r} builds its control variates from df/db at the samples, but f's "
                    f"output does not depend differentiably on b (no thresholding, rounding, indexing or integer "
                    f"casts of b); use an estimator that only evaluates f, such as 'disarm' or 'reinforce_loo'"
                )
            grad = self.gradient(fb.detach(), b.detach(), dfdb.detach(), p)
            self.store_variance_gradient(grad)
        return Estimate(fb.mean(0), grad.detach())

    @abstractmethod
    def gradient(self, fb, b, dfdb, p) -> torch.Tensor:
        """The estimate ``(*batch, D)``, attached to the control parameters (module docstring)."""


class DoubleCV(GradientControlEstimator):
    name = "double_cv"
    reference = "Titsias & Shi, AISTATS 2022"
    summary = "leave-one-out REINFORCE + Taylor control alpha gbar_{-k}.(b_k - p), learned alpha"

    def __init__(self, num_units: int | None = None, alpha: float = 0.0):
        super().__init__(num_units)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def gradient(self, fb, b, dfdb, p):
        alpha = self.alpha.to(fb.dtype)
        score = b - p
        control = alpha * (_leave_one_out_mean(dfdb) * score).sum(-1)  # c_k, (K, *batch)
        shifted = fb + control
        loo = (shifted - _leave_one_out_mean(shifted)).unsqueeze(-1) * score
        return loo.mean(0) - alpha * dfdb.mean(0) * p * (1 - p)


class RODEO(GradientControlEstimator):
    name = "rodeo"
    reference = "Shi, Zhou, Hwang, Titsias & Mackey, NeurIPS 2022"
    summary = "leave-one-out REINFORCE + discrete Stein control variates over one-bit neighbours"

    def __init__(
        self, num_units: int | None = None, hidden: int = 100, alpha: float = 0.0, beta: float = 0.0, slope: float = 0.3
    ):
        super().__init__(num_units)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.network = nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, 2))

    def _h(self, lin: torch.Tensor, fbar: torch.Tensor) -> torch.Tensor:
        """``(h0, h1)`` at points with Taylor increment ``lin`` and leave-one-out mean ``fbar``: ``(..., 2)``."""
        weight = cast(nn.Linear, self.network[0]).weight
        features = torch.stack([lin, fbar.expand_as(lin)], -1).to(weight.dtype)
        return self.network(features).to(lin.dtype)

    def taylor_terms(self, dfdb, b):
        """``mean_{j != k} grad_j`` ``(K, *batch, D)`` and ``mean_{j != k} grad_j . b_j`` ``(K, *batch)``: the
        Taylor increment ``lin(y) = mean_{j != k} grad_j . (y - b_j)`` from the other samples only."""
        return _leave_one_out_mean(dfdb), _leave_one_out_mean((dfdb * b).sum(-1))

    def gradient(self, fb, b, dfdb, p):
        d = b.shape[-1]
        score = b - p
        flip = 1 - 2 * b  # x^(i) - x, on coordinate i only
        w = p * (1 - b) + (1 - p) * b  # q(not x_i): the Gibbs operator's weight of neighbour i
        gbar, offset = self.taylor_terms(dfdb, b)
        lin_x = (gbar * b).sum(-1) - offset  # (K, *batch)
        lin_nbrs = lin_x.unsqueeze(-1) + gbar * flip  # (K, *batch, D): neighbour i differs in bit i only
        fbar = _leave_one_out_mean(fb).unsqueeze(-1)
        h_x = self._h(lin_x.unsqueeze(-1), fbar)[..., 0, :]  # (K, *batch, 2)
        h_nbrs = self._h(lin_nbrs, fbar)  # (K, *batch, D, 2)
        stein_f = (w * (h_nbrs[..., 0] - h_x[..., :1])).mean(-1)  # (A h0)(b_k), (K, *batch)
        # (A (h1 d))(b_k)_c = 1/D sum_i w_i (h1(x^(i)) (d + flip_i e_i)_c - h1(x) d_c): neighbour i's score
        # differs from d_k in coordinate i only, so the D x D sum folds into two terms
        h1_nbrs, h1_x = h_nbrs[..., 1], h_x[..., 1:]
        stein_g = score * (w * (h1_nbrs - h1_x)).mean(-1, keepdim=True) + w * h1_nbrs * flip / d
        alpha, beta = self.alpha.to(fb.dtype), self.beta.to(fb.dtype)
        baseline = _leave_one_out_mean(fb + alpha * stein_f)
        return ((fb - baseline).unsqueeze(-1) * score + beta * stein_g).mean(0)
