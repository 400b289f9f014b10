"""Percentiles for the benches, and how many samples each one rests on.

Every bench computes its percentiles here, the same way (nearest rank: the smallest
sample with at least q of the samples at or below it), and refuses a percentile that
its samples cannot carry: at least ``MIN_TAIL`` samples must lie at or above it, so
that it is never the largest sample alone. A p99 needs 100 samples, a p95 20, a median
2; a "p95" of two samples is their maximum, and a run that printed it measured
something other than what it claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_TAIL = 2
"""Samples at or above a percentile, at the least, for it to be given."""


def _rank(q: float, n: int) -> int:
    """The 1-based rank of the nearest-rank ``q`` percentile of ``n`` samples."""
    return max(1, min(n, math.ceil(q * n - 1e-9)))


def min_samples(q: float, tail: int = MIN_TAIL) -> int:
    """The fewest samples whose ``q`` percentile has ``tail`` samples at or above it."""
    n = tail
    while n - _rank(q, n) + 1 < tail:
        n += 1
    return n


class TooFewSamples(ValueError):
    """A percentile was asked of fewer samples than it needs."""


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q < 1) of ``values``; TooFewSamples when
    fewer than ``min_samples(q)`` were taken."""
    if len(values) < min_samples(q):
        raise TooFewSamples(
            f"p{q * 100:g} of {len(values)} samples: needs at least {min_samples(q)} "
            f"({MIN_TAIL} at or above it)"
        )
    return sorted(values)[_rank(q, len(values)) - 1]
