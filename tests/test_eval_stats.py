"""Intervals and paired tests of the learning benchmark, against hand-computed values."""

import math

import pytest

from stepcoder.evaluation.stats import compare, discordant, mcnemar_exact, paired_bootstrap_ci, wilson_interval


def test_wilson_interval_hand_computed():
    # 23 of 500 (base SmolLM2's greedy MBPP-test): p = 0.046, z = 1.96
    lo, hi = wilson_interval(23, 500)
    z, n, p = 1.959963984540054, 500, 23 / 500
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert (lo, hi) == pytest.approx((0.0309, 0.0680), abs=5e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_hand_computed():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)  # 2 · (1/2)^5
    assert mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)  # 2 · P[X ≤ 1], X ~ Bin(6, 1/2)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(2, 9) == mcnemar_exact(9, 2)  # symmetric


def test_paired_tests_ignore_problems_both_or_neither_solve():
    a = [True, True, False, False, True]
    b = [True, False, False, True, True]
    assert discordant(a, b) == (1, 1)
    padded = compare(a + [True] * 50 + [False] * 50, b + [True] * 50 + [False] * 50)
    assert (padded["only_a"], padded["only_b"], padded["mcnemar_p"]) == (1, 1, 1.0)
    with pytest.raises(ValueError):
        discordant(a, b[:-1])


def test_paired_bootstrap_ci_brackets_the_difference_and_is_reproducible():
    a = [i % 3 == 0 for i in range(300)]  # 100 / 300
    b = [i % 5 == 0 for i in range(300)]  # 60 / 300
    diff, lo, hi = paired_bootstrap_ci(a, b, resamples=2000, seed=1)
    assert diff == pytest.approx(40 / 300) and lo < diff < hi and lo > 0
    assert paired_bootstrap_ci(a, b, resamples=2000, seed=1) == (diff, lo, hi)
    same = paired_bootstrap_ci(a, a, resamples=500)
    assert same == (0.0, 0.0, 0.0)
