"""The estimator registry: the single source of the estimator names and their metadata.

``ESTIMATORS[name]`` is an :class:`~armgrad.estimators.base.Estimator`. Everything that lists
estimators (the diagnostics' defaults, the toy study, the CLI, the benchmarks, the tests) selects
from here by metadata with :func:`select`, e.g. ``select(unbiased=True, evaluates_f_at=BINARY)``.

Estimators with learned controls (REBAR, RELAX) are
:class:`~armgrad.estimators.base.LearnedControlEstimator` s: the registry holds one object with the
default controls (REBAR's is frozen and usable by name; RELAX's network depends on ``D``, so it
must be created), and ``ESTIMATORS[name].create(num_units=D)`` makes a trainable one to pass
instead of the name.

Categorical estimators live in :data:`CATEGORICAL_ESTIMATORS` (``armgrad.categorical.ESTIMATORS``):
the same estimator type, the family (:mod:`armgrad.families`) an attribute of each. :data:`REGISTRY`
is the one registry underneath, family -> name -> estimator; the generic estimators (REINFORCE,
leave-one-out REINFORCE, enumeration) are one class registered once per family.

Adding an estimator: one class (in a family module, or a module of its own) and one line below.
"""

from __future__ import annotations

import difflib

from ..families import BERNOULLI, CATEGORICAL, FAMILIES, Family
from .antithetic import AR, ARM, ARMS, DisARM
from .base import (
    BINARY,
    BINARY_AND_RELAXED,
    ENUMERATION,
    RELAXED,
    BinaryPointEstimator,
    Budget,
    Combined,
    Estimate,
    Estimator,
    LearnedControlEstimator,
    evaluate,
    value_of,
)
from .categorical_coupled import CARMS, DisARMIW
from .categorical_coupled import DisARM as CategoricalDisARM
from .categorical_relaxed import Gumbel as CategoricalGumbel
from .categorical_relaxed import GumbelRao, ReinMax, STGumbel
from .categorical_relaxed import StraightThrough as CategoricalST
from .categorical_swap import ARS, ARSM, ARSMPlus, CategoricalAR, IndeCateR
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

CATEGORICAL_ESTIMATORS: dict[str, Estimator] = registry(
    Reinforce(CATEGORICAL),
    ReinforceLOO(CATEGORICAL),
    CategoricalAR(),
    ARS(),
    ARSM(),
    ARSMPlus(),
    CategoricalDisARM(),
    DisARMIW(),
    CARMS(),
    IndeCateR(),
    CategoricalST(),
    CategoricalGumbel(),
    STGumbel(),
    GumbelRao(),
    ReinMax(),
    Exact(CATEGORICAL),
)

REGISTRY: dict[Family, dict[str, Estimator]] = {BERNOULLI: ESTIMATORS, CATEGORICAL: CATEGORICAL_ESTIMATORS}


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


_WHERE = {BERNOULLI: "armgrad.ESTIMATORS", CATEGORICAL: "armgrad.categorical.ESTIMATORS"}
_API = {BERNOULLI: "armgrad.estimate", CATEGORICAL: "armgrad.categorical.estimate"}


def get_estimator(estimator, family: Family = BERNOULLI) -> Estimator:
    """Look up ``estimator`` by name in ``family``'s table (suggesting close names on a typo), or pass an
    estimator object of that family through."""
    table = REGISTRY[family]
    if isinstance(estimator, str):
        if estimator in table:
            return table[estimator]
        others = [f for f in REGISTRY if f is not family and estimator in REGISTRY[f]]
        if others:
            raise ValueError(
                f"estimator {estimator!r} has no {family.name} form: it is a {others[0].name} estimator "
                f"({_API[others[0]]}). {family.name.capitalize()} estimators: {', '.join(table)}"
            )
        close = difflib.get_close_matches(estimator, table, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown estimator {estimator!r}.{hint} Known: {', '.join(table)}") from None
    if isinstance(estimator, Estimator):
        if estimator.family is not family:
            raise ValueError(
                f"estimator {estimator.name!r} is a {estimator.family.name} estimator, for logits "
                f"{estimator.family.shape_text}; use {_API[estimator.family]}"
            )
        return estimator
    raise TypeError(
        f"estimator must be a name from {_WHERE[family]} or an estimator object, got {type(estimator).__name__}"
    )


__all__ = [
    "BERNOULLI",
    "CATEGORICAL",
    "CATEGORICAL_ESTIMATORS",
    "FAMILIES",
    "REGISTRY",
    "BINARY",
    "BINARY_AND_RELAXED",
    "ENUMERATION",
    "ESTIMATORS",
    "RELAXED",
    "BinaryPointEstimator",
    "Budget",
    "Combined",
    "ControlVariateEstimator",
    "Estimate",
    "Estimator",
    "LearnedControlEstimator",
    "Rebar",
    "Relax",
    "evaluate",
    "get_estimator",
    "registry",
    "select",
    "value_of",
]
