"""The estimator registry: the single source of the estimator names and their metadata.

``ESTIMATORS[name]`` is an :class:`~armgrad.estimators.base.Estimator`. Everything that lists
estimators (the diagnostics' defaults, the toy study, the CLI, the benchmarks, the tests) selects
from here by metadata with :func:`select`, e.g. ``select(unbiased=True, evaluates_f_at=BINARY)``.

Estimators with learned controls (REBAR, RELAX) are
:class:`~armgrad.estimators.base.LearnedControlEstimator` s: the registry holds one object with the
default controls (REBAR's is frozen and usable by name; RELAX's network depends on ``D``, so it
must be created), and ``ESTIMATORS[name].create(num_units=D)`` makes a trainable one to pass
instead of the name.

Adding an estimator: one class (in a family module, or a module of its own) and one line below.
"""

from __future__ import annotations

import difflib

from .antithetic import AR, ARM, ARMS, DisARM
from .base import (BINARY, BINARY_AND_RELAXED, ENUMERATION, RELAXED, BinaryPointEstimator, Budget, Combined,
                   Estimate, Estimator, LearnedControlEstimator, evaluate, value_of)
from .control import ControlVariateEstimator, Rebar, Relax
from .exact import Exact
from .gradient_control import RODEO, DoubleCV
from .relaxed import Gumbel, StraightThrough
from .score import Reinforce, ReinforceLOO


def registry(*estimators: Estimator) -> dict[str, Estimator]:
    """Name -> estimator, in the order given; refuses two estimators of one name."""
    table = {}
    for e in estimators:
        if e.name in table:
            raise ValueError(f"two estimators are named {e.name!r}")
        table[e.name] = e
    return table


ESTIMATORS: dict[str, Estimator] = registry(
    Reinforce(),
    ReinforceLOO(),
    AR(),
    ARM(),
    DisARM(),
    ARMS(),
    Gumbel(),
    StraightThrough(),
    Rebar().requires_grad_(False),
    Relax(),
    DoubleCV().requires_grad_(False),
    RODEO().requires_grad_(False),
    Exact(),
)


def select(registry: dict | None = None, **criteria) -> list[str]:
    """The names of the estimators whose attributes equal ``criteria``, in registry order.

    ``select(unbiased=True, learned=False)``; ``select(evaluates_f_at=BINARY)``. A criterion may
    also be a predicate: ``select(evaluates_f_at=lambda where: where != ENUMERATION)``.
    """
    table = ESTIMATORS if registry is None else registry
    for key in criteria:
        if not all(hasattr(e, key) for e in table.values()):
            raise ValueError(f"estimators have no attribute {key!r} to select on")

    def matches(e, key, wanted):
        value = getattr(e, key)
        return wanted(value) if callable(wanted) else value == wanted

    return [name for name, e in table.items() if all(matches(e, k, v) for k, v in criteria.items())]


def get_estimator(estimator) -> Estimator:
    """Look up ``estimator`` by name (suggesting close names on a typo), or pass an estimator through."""
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
    raise TypeError(
        f"estimator must be a name from armgrad.ESTIMATORS or an estimator object, got "
        f"{type(estimator).__name__}"
    )


__all__ = ["BINARY", "BINARY_AND_RELAXED", "ENUMERATION", "ESTIMATORS", "RELAXED", "BinaryPointEstimator",
           "Budget", "Combined", "ControlVariateEstimator", "Estimate", "Estimator", "LearnedControlEstimator",
           "Rebar", "Relax", "evaluate", "get_estimator", "registry", "select", "value_of"]
