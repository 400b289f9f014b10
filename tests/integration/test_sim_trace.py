"""The fill experiment on the real Alibaba trace (../shared/data), against the FGD
paper's published figures, and the trace read natively.

Published at 100% arrived workload (default pod list, 6,212 GPUs, mean of 10 seeds):
random 86.3, best-fit 92.9, FGD 95.2 (the authors' expected_results). One seed here;
the seeds' spread in the published runs is about half a point.
"""

from __future__ import annotations

import pytest

from simulator import fill, trace
from simulator.fleet import Fleet, Kinds
from tests.support.sim import TRACE_NODES, TRACE_PODS, trace_missing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(trace_missing() is not None, reason=trace_missing() or ""),
]

PUBLISHED_AT_100 = {"random": 86.3, "best-fit": 92.9, "fgd": 95.2}
FIDELITY_POINTS = 2.0
TARGET_AT_100 = 95.2
"""gpupool's own policy must reach the best published figure (FGD's)."""


@pytest.fixture(scope="module")
def pods() -> list[trace.Pod]:
    return trace.read_pods(TRACE_PODS)


@pytest.fixture(scope="module")
def nodes() -> list[trace.Node]:
    return trace.read_nodes(TRACE_NODES)


def test_trace_is_read_natively(pods: list[trace.Pod], nodes: list[trace.Node]) -> None:
    fleet = Fleet(nodes)
    assert (len(pods), len(nodes), fleet.total_gpus) == (8152, 1213, 6212)
    assert fleet.models == ("A10", "G2", "G3", "P100", "T4", "V100M16", "V100M32")
    assert len(Kinds.of(pods, fleet.models)) == 151
    assert sum(p.shares_gpu for p in pods) == 3078


@pytest.fixture(scope="module")
def at_100(pods: list[trace.Pod], nodes: list[trace.Node]) -> dict[str, float]:
    """Allocation at 100% arrived per policy, seed 42 (each policy run once)."""
    policies = [*PUBLISHED_AT_100, "gpupool"]
    return {p: fill.run(pods, nodes, p, seed=42).at(100) for p in policies}


@pytest.mark.parametrize(("policy", "published"), sorted(PUBLISHED_AT_100.items()))
def test_published_policies_are_reproduced_within_two_points(
    at_100: dict[str, float], policy: str, published: float
) -> None:
    assert abs(at_100[policy] - published) <= FIDELITY_POINTS, at_100[policy]


def test_gpupool_policy_beats_the_best_published_one(at_100: dict[str, float]) -> None:
    assert at_100["gpupool"] >= TARGET_AT_100
    assert at_100["gpupool"] > at_100["fgd"]
