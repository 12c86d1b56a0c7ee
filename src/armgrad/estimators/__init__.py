"""The estimator registry: the only place that knows the estimator names.

``ESTIMATORS[name]`` is an :class:`~armgrad.estimators.base.Estimator`: the function, whether it
is unbiased, how many evaluations of ``f`` a budget costs, and what noise it consumes.
Estimators that carry trainable state (REBAR, RELAX) are ``nn.Module`` objects made by
``ESTIMATORS[name].create(...)``; pass the object to ``armgrad.estimate`` instead of the name
(any object with an ``as_estimator()`` method returning an :class:`Estimator` works).
"""

from __future__ import annotations

import difflib

from dataclasses import replace

from . import antithetic, exact, relaxed, score
from .base import Estimate, Estimator, evaluate
from .control import ControlVariateEstimator, Rebar, Relax


def _rebar_with_default_controls(f, logits, noise, num_samples):
    """REBAR by name: fixed controls eta = 1, tau = 0.5 (still unbiased; not trained)."""
    rebar = Rebar().requires_grad_(False).to(dtype=logits.dtype, device=logits.device)
    return rebar.estimate_fn(f, logits, noise, num_samples)


def _relax_needs_an_instance(*args, **options):
    raise ValueError(
        "estimator 'relax' carries a learned control network: create it with "
        "armgrad.ESTIMATORS['relax'].create(num_units=D) and pass that object as the estimator"
    )

_PAIR = lambda num_samples, shape: (num_samples // 2, *shape)  # noqa: E731  one u per pair

ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in [
        Estimator("reinforce", None, sample=score.independent_samples, combine=score.reinforce, unbiased=True,
                  reference="Williams, Machine Learning 1992",
                  summary="score function f(b)(b - p)"),
        Estimator("reinforce_loo", None, sample=score.independent_samples, combine=score.reinforce_loo,
                  unbiased=True, min_samples=2,
                  reference="Kool, van Hoof & Welling, ICLR workshop 2019",
                  summary="score function with leave-one-out baseline"),
        Estimator("ar", None, sample=score.independent_samples, combine=antithetic.ar, unbiased=True,
                  reference="Yin & Zhou, ICLR 2019",
                  summary="augment-REINFORCE f(1[u<p])(1 - 2u)"),
        Estimator("arm", None, sample=antithetic.antithetic_pairs, combine=antithetic.arm, unbiased=True, group=2, group_name="antithetic pairs", min_samples=2,
                  noise_shape=_PAIR, reference="Yin & Zhou, ICLR 2019",
                  summary="antithetic pair (f(b1) - f(b2))(u - 1/2)"),
        Estimator("disarm", None, sample=antithetic.antithetic_pairs, combine=antithetic.disarm, unbiased=True, group=2, group_name="antithetic pairs", min_samples=2,
                  noise_shape=_PAIR, reference="Dong, Mnih & Tucker, NeurIPS 2020 (= U2G, Yin et al. 2020)",
                  summary="ARM with u integrated out given the pair"),
        Estimator("arms", None, sample=antithetic.arms_samples, combine=antithetic.arms, unbiased=True,
                  min_samples=2,
                  reference="Dimitriev & Zhou, ICML 2021",
                  summary="n mutually antithetic draws (Dirichlet copula), LOO weights"),
        Estimator("gumbel", relaxed.gumbel, unbiased=False, pathwise=True, relaxed=True,
                  reference="Maddison, Mnih & Teh; Jang, Gu & Poole, ICLR 2017",
                  summary="Concrete relaxation, pathwise (option temperature=0.5)"),
        Estimator("st", relaxed.st, unbiased=False, pathwise=True,
                  reference="Bengio, Leonard & Courville, 2013",
                  summary="straight-through: hard forward, backward as if b = p"),
        replace(Rebar.spec, fn=_rebar_with_default_controls),
        replace(Relax.spec, fn=_relax_needs_an_instance),
        Estimator("exact", None, sample=exact.enumerated_states, combine=exact.exact, unbiased=True,
                  enumerates=True, noise_shape=None,
                  reference="enumeration of all 2^D states",
                  summary="exact gradient by enumeration (small D)"),
    ]
}


def get_estimator(estimator) -> Estimator:
    """Look up ``estimator`` by name (suggesting close names on a typo), or pass an object through."""
    if isinstance(estimator, str):
        try:
            return ESTIMATORS[estimator]
        except KeyError:
            close = difflib.get_close_matches(estimator, ESTIMATORS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown estimator {estimator!r}.{hint} Known: {', '.join(ESTIMATORS)}"
            ) from None
    if isinstance(estimator, Estimator):
        return estimator
    if hasattr(estimator, "as_estimator"):
        return estimator.as_estimator()
    raise TypeError(
        f"estimator must be a name from armgrad.ESTIMATORS or an estimator object, got "
        f"{type(estimator).__name__}"
    )


__all__ = ["ESTIMATORS", "ControlVariateEstimator", "Estimate", "Estimator", "Rebar", "Relax",
           "evaluate", "get_estimator"]
