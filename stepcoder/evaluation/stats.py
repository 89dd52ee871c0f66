"""Confidence intervals and paired tests for pass@1 on a fixed problem set (greedy: one 0/1 outcome per problem).

- :func:`wilson_interval`: the Wilson score interval of a proportion (Wilson 1927), well behaved at the small
  pass rates small models have (the normal interval goes below 0 there).
- :func:`mcnemar_exact`: two models on the same problems differ only on the problems one solves and the other
  does not (b and c). Under "no difference", b ~ Binomial(b + c, 1/2); the two-sided exact p-value is
  min(1, 2·P[X ≤ min(b, c)]) (McNemar 1947, exact form as in statsmodels ``mcnemar(exact=True)``).
- :func:`paired_bootstrap_ci`: a percentile CI of the pass@1 difference, resampling problems (the unit that
  varies), with a fixed seed so the benchmark's numbers are reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for ``successes`` of ``n`` (95 % by default). n = 0 → (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes one bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(problems only ``a`` solves, problems only ``b`` solves), over the same problems in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same problems: {len(a)} vs {len(b)}")
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts. No discordant pair → 1.0."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(a: Sequence[bool], b: Sequence[bool], resamples: int = 10_000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): percentile bootstrap over problems of the paired pass@1 difference."""
    if len(a) != len(b) or not a:
        raise ValueError("paired outcomes need the same, non-empty problem list")
    d = [int(x) - int(y) for x, y in zip(a, b)]
    n = len(d)
    rng = random.Random(seed)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int(math.floor(alpha / 2 * resamples))]
    hi = means[min(resamples - 1, int(math.ceil((1 - alpha / 2) * resamples)) - 1)]
    return sum(d) / n, lo, hi


def compare(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> dict:
    """Everything the benchmark reports for "a against b" on the same problems."""
    only_a, only_b = discordant(a, b)
    diff, lo, hi = paired_bootstrap_ci(a, b, seed=seed)
    return {"diff": diff, "diff_ci95": [lo, hi], "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_exact(only_a, only_b)}
