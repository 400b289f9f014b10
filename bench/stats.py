"""Percentiles for the benches, and how many samples each one rests on.

Every bench computes its percentiles here, the same way (nearest rank: the value below
which q of the samples lie, always one of the samples), and refuses to print a
percentile that its samples cannot carry: a p99 needs at least ``MIN_TAIL`` samples at
or above it (500 samples), a p95 100, a p50 10. A "p95" of two samples is their
maximum, and a run that reports it measures something other than what it claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_TAIL = 5
"""Samples at or beyond a percentile, at the least, for it to be printed."""


def min_samples(q: float, tail: int = MIN_TAIL) -> int:
    """The fewest samples whose ``q`` percentile has ``tail`` samples at or above it."""
    return max(tail, math.ceil(tail / (1.0 - q) - 1e-9))


class TooFewSamples(ValueError):
    """A percentile was asked of fewer samples than it needs."""


def percentile(values: Sequence[float], q: float, *, check: bool = True) -> float:
    """The nearest-rank ``q`` percentile (0 < q < 1) of ``values``."""
    if not values:
        raise TooFewSamples(f"p{q * 100:g} of no samples")
    if check and len(values) < min_samples(q):
        raise TooFewSamples(
            f"p{q * 100:g} of {len(values)} samples: needs at least {min_samples(q)} "
            f"({MIN_TAIL} at or above it)"
        )
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]
