"""estimators/categorical_swap.py: AR, ARS, ARSM, ARSM+ and IndeCateR beyond the generated suite of
test_categorical.py (unbiasedness against enumeration at their first two budgets, one call of f)."""

from __future__ import annotations

from test_categorical import draw, make_problem


def test_arsm_plus_never_has_more_variance_than_arsm_here():
    phi, f = make_problem(2, 4, seed=11)
    _, arsm = draw(f, phi, "arsm", 7, draws=5000)
    _, plus = draw(f, phi, "arsm_plus", 7, draws=5000)  # the same noise: the mask only drops terms
    assert plus.var(0).sum() <= arsm.var(0).sum()
