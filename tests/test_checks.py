"""_checks.py: the input checks at the public boundary (the errors users see through the API: test_api.py)."""

from __future__ import annotations

import pytest
import torch

from armgrad._checks import check_all, check_finite, check_generator, check_logits, check_noise
from armgrad._random import RunGenerators


def test_check_finite_sees_a_nan_or_an_inf_and_an_overflowing_sum_of_finite_values_passes():
    check_finite(torch.tensor([3e38, 3e38]), "unused")  # the sum overflows; every element is finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="bad values"):
            check_finite(torch.tensor([1.0, bad]), "bad values")


def test_check_all_and_check_noise():
    check_all(torch.tensor([True, True]), "unused")
    with pytest.raises(ValueError, match="not all"):
        check_all(torch.tensor([True, False]), "not all")
    logits = torch.zeros(2, 3)
    check_noise(torch.full((4, 2, 3), 0.5), (4, 2, 3), logits, "arm")
    with pytest.raises(ValueError, match=r"needs \(4, 2, 3\)"):
        check_noise(torch.full((2, 2, 3), 0.5), (4, 2, 3), logits, "arm")
    with pytest.raises(ValueError, match="strictly inside"):
        check_noise(torch.zeros(4, 2, 3), (4, 2, 3), logits, "arm")
    with pytest.raises(ValueError, match="draws no noise"):
        check_noise(torch.zeros(4, 2, 3), None, logits, "exact")


@pytest.mark.parametrize(
    "logits,error,match",
    [
        ([0.0, 1.0], TypeError, "must be a torch.Tensor"),
        (torch.zeros(3, dtype=torch.long), TypeError, "floating-point"),
        (torch.tensor(0.0), ValueError, "event dimension"),
        (torch.zeros(2, 0), ValueError, "no units"),
        (torch.tensor([0.0, float("nan")]), ValueError, "non-finite"),
    ],
)
def test_check_logits(logits, error, match):
    with pytest.raises(error, match=match):
        check_logits(logits)


def test_check_generator():
    cpu = torch.device("cpu")
    for fine in (None, torch.Generator(), RunGenerators([torch.Generator(), torch.Generator()])):
        check_generator(fine, cpu)
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        check_generator(3, cpu)
    with pytest.raises(ValueError, match=r"a cpu generator but the logits are on meta: use torch.Generator\('meta'\)"):
        check_generator(torch.Generator(), torch.device("meta"))
