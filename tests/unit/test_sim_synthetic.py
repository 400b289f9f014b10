"""simulator.synthetic: seeded, and shaped like the distributions it documents."""

from __future__ import annotations

from collections import Counter

import pytest

from governance.errors import ConfigError
from simulator import synthetic

pytestmark = pytest.mark.unit


def test_same_seed_same_pods_other_seed_other_pods() -> None:
    assert synthetic.generate(50, seed=1) == synthetic.generate(50, seed=1)
    assert synthetic.generate(50, seed=1) != synthetic.generate(50, seed=2)


def test_default_mix_has_the_trace_shares_and_valid_pods() -> None:
    pods = synthetic.generate(20_000, seed=9)
    shares = Counter(
        "cpu" if p.num_gpu == 0 else "share" if p.shares_gpu else f"{p.num_gpu}gpu" for p in pods
    )
    # documented: 13.4% CPU-only, 37.8% sharing, 48.0% one GPU (binomial sd < 0.4 points)
    assert shares["cpu"] / len(pods) == pytest.approx(0.134, abs=0.012)
    assert shares["share"] / len(pods) == pytest.approx(0.378, abs=0.012)
    assert shares["1gpu"] / len(pods) == pytest.approx(0.480, abs=0.012)
    assert Counter(p.gpu_milli for p in pods if p.shares_gpu).most_common(1)[0][0] == 810
    assert all(100 <= p.cpu_milli <= 96_000 for p in pods)
    arrivals = [p.arrival_s or 0.0 for p in pods]
    assert arrivals == sorted(arrivals)
    # a Poisson process of 10 an hour: 20,000 arrivals take about 2,000 hours
    assert arrivals[-1] / 3600 == pytest.approx(2000, rel=0.05)
    assert {p.department for p in pods} == {"dept-1", "dept-2", "dept-3", "dept-4"}


def test_bad_mixes_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        synthetic.generate(0)
    with pytest.raises(ConfigError, match="not all 0"):
        synthetic.generate(5, mix=synthetic.Mix(classes={synthetic.SHARING: 0.0}))
    with pytest.raises(ConfigError, match="1 to 1000"):
        synthetic.generate(5, mix=synthetic.Mix(shares={1500: 1.0}))
