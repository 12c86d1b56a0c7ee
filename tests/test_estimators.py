"""estimators/__init__.py: the registry. Lookup by name and family with clear errors, selection by metadata,
and no two estimators of one name (every estimator's properties: the suites generated from it)."""

from __future__ import annotations

import pytest

from armgrad import ESTIMATORS, categorical
from armgrad.estimators import (
    BERNOULLI,
    CATEGORICAL,
    ENUMERATION,
    REGISTRY,
    get_estimator,
    registry,
    select,
)


def test_lookup_by_name_and_family():
    assert get_estimator("disarm") is ESTIMATORS["disarm"]
    assert get_estimator("disarm", CATEGORICAL) is categorical.ESTIMATORS["disarm"]
    assert get_estimator("disarm").family is BERNOULLI and get_estimator("disarm", CATEGORICAL).family is CATEGORICAL
    assert get_estimator(ESTIMATORS["arm"]) is ESTIMATORS["arm"]  # an object passes through


def test_lookup_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown estimator 'dsiarm'. Did you mean 'disarm'?"):
        get_estimator("dsiarm")
    with pytest.raises(ValueError, match="estimator 'arsm' has no bernoulli form: it is a categorical estimator"):
        get_estimator("arsm")
    with pytest.raises(ValueError, match="estimator 'arms' has no categorical form"):
        get_estimator("arms", CATEGORICAL)
    with pytest.raises(ValueError, match="is a categorical estimator"):
        get_estimator(categorical.ESTIMATORS["carms"])
    with pytest.raises(TypeError, match="estimator must be a name"):
        get_estimator(3)


def test_select_by_metadata_and_predicate():
    unbiased = select(unbiased=True)
    assert "arm" in unbiased and "gumbel" not in unbiased
    assert select(evaluates_f_at=ENUMERATION) == ["exact"]
    assert set(select(categorical.ESTIMATORS, evaluates_f_at=lambda w: w == ENUMERATION)) == {"exact"}
    for family, table in REGISTRY.items():
        assert all(e.family is family for e in table.values())  # each table holds its own family only


def test_two_estimators_of_one_name_are_refused():
    with pytest.raises(ValueError, match="two estimators are named 'arm'"):
        registry(ESTIMATORS["arm"], ESTIMATORS["arm"])
