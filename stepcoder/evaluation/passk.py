"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained on Code", eq. 1.

With n samples of which c pass, the probability that at least one of k samples drawn without replacement
passes is

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over problems. Computed as the product 1 - Π_{i=n-c+1}^{n} (1 - k / i) (the paper's numerically stable
form, figure 3), exact for the small n used in practice and free of huge binomials.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``n`` samples, ``c`` of them correct, ``k`` <= ``n``.

    Edge cases follow from the formula: c = 0 → 0.0; n - c < k (every k-subset holds a correct sample) → 1.0;
    in particular k = n gives 1.0 if any sample passed. k = 1 is c / n.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n} (pass@k needs at least k samples)")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems, from ``(n, c)`` per problem. NaN when there are no problems."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return sum(values) / len(values) if values else math.nan
