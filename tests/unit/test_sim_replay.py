"""simulator.replay: queueing, admission, the time-weighted spreads and the fleet-size
search, on tiny traces worked out by hand."""

from __future__ import annotations

import pytest

from governance.errors import ConfigError
from simulator import replay
from simulator.replay import Decision, Usage
from simulator.trace import Pod
from tests.support.sim import make_node, make_pod

pytestmark = pytest.mark.unit


def deny_department_x(pod: Pod, usage: Usage) -> Decision:
    if pod.department == "x":
        return Decision(allowed=False, reason="QueueQuotaExceeded", message="over quota")
    return Decision(allowed=True)


def test_replay_by_hand() -> None:
    pods = [
        make_pod("a", arrival=0, duration=10),
        make_pod("b", arrival=5, duration=10),
        make_pod("c", milli=500, arrival=6, duration=1),
        make_pod("d", arrival=7, duration=1, department="x"),
        make_pod("e", gpus=2, arrival=8, duration=1),
    ]
    result = replay.run(pods, [make_node(gpus=1)], "best-fit", admission=deny_department_x)
    # a runs 0..10; b waits 5..10 and runs 10..20; c cannot share the GPU with b (b takes
    # it whole) and waits 6..20; d is denied; e (2 GPUs) fits no node of one GPU
    assert result.denied == {"QueueQuotaExceeded": 1, "Unschedulable": 1}
    assert (result.admitted, result.started_on_arrival, result.started_after_waiting) == (3, 1, 2)
    assert result.acceptance == pytest.approx(1 / 3)
    assert result.wait_max_s == 14.0 and result.wait_s.p50 == 5.0
    # allocation: 100% from 0 to 20, 50% from 20 to 21 -> mean 2050 / 21
    assert result.allocation_pct.mean == round(2050 / 21, 2)
    assert result.allocation_pct.p50 == 100.0 and result.duration_s == 21.0


def test_admission_sees_usage_per_department_and_queue() -> None:
    seen: list[dict[tuple[str, str], int]] = []

    def record(pod: Pod, usage: Usage) -> Decision:
        seen.append(dict(usage.gpu_milli))
        return Decision(allowed=True)

    pods = [
        make_pod("a", milli=250, arrival=0, duration=10, department="ml", queue="train"),
        make_pod("b", milli=500, arrival=1, duration=10, department="ml", queue="train"),
    ]
    replay.run(pods, [make_node(gpus=1)], "gpupool", admission=record)
    assert seen == [{}, {("ml", "train"): 250}]


def test_pods_without_arrival_cannot_be_replayed() -> None:
    with pytest.raises(ConfigError, match="no arrival time"):
        replay.run([make_pod("a")], [make_node()], "fgd")


def test_peak_demand_counts_what_runs_at_once() -> None:
    pods = [
        make_pod("a", arrival=0, duration=10),
        make_pod("b", milli=500, arrival=5, duration=10),
        make_pod("c", gpus=2, arrival=12),  # runs to the end
    ]
    # 0..5: 1000; 5..10: 1500; 10..12: 500; 12..15: 2500; then 2000
    assert replay.peak_gpu_milli(pods) == 2500


def test_stratified_order_keeps_the_mix_in_every_prefix() -> None:
    nodes = [make_node(f"big{i}", gpus=8) for i in range(2)] + [
        make_node(f"small{i}", gpus=1) for i in range(6)
    ]
    order = [n.name for n in replay.stratified(nodes)]
    assert sorted(order) == sorted(n.name for n in nodes)
    # a quarter of the nodes are big: one of the first four is big
    assert sum(name.startswith("big") for name in order[:4]) == 1


def test_gpus_needed_and_the_saving_of_slicing_by_hand() -> None:
    nodes = [make_node(f"n{i}", gpus=1) for i in range(4)]
    halves = [
        make_pod(p, milli=500, arrival=t, duration=10)
        for p, t in zip("abc", (0, 1, 2), strict=True)
    ]
    # three overlapping half-GPU pods: two share a GPU, the third takes another: 2 GPUs;
    # as whole cards they need 3
    saving = replay.saving(halves, nodes, "best-fit", acceptance=1.0)
    assert (saving.sliced.gpus, saving.whole_cards.gpus) == (2, 3)
    assert saving.saving == pytest.approx(1 / 3)
    # at two thirds acceptance one whole-card pod may wait: 2 GPUs
    needed = replay.gpus_needed(
        [p.as_whole_cards() for p in halves], nodes, "best-fit", acceptance=0.6
    )
    assert needed.gpus == 2


def test_a_fleet_too_small_for_the_acceptance_says_so() -> None:
    pods = [make_pod(p, arrival=0, duration=10) for p in "abc"]
    needed = replay.gpus_needed(pods, [make_node(gpus=1)], "fgd", acceptance=1.0)
    assert needed.gpus is None and needed.result.acceptance == pytest.approx(1 / 3)


def test_a_sliced_placement_worse_than_whole_cards_falls_back_to_whole_cards() -> None:
    # found by the property test: random placement on CPU-bound nodes; sliced, the two
    # sharing pods and the CPU-only pods land so that fewer start on arrival than when
    # each sharing pod takes a card of its own
    nodes = [make_node(f"n{i}", gpus=1, cpu=2000) for i in range(2)]
    pods = [
        make_pod("c1", cpu=1000, gpus=0, arrival=0, duration=1),
        make_pod("c2", cpu=1000, gpus=0, arrival=0, duration=1),
        make_pod("c3", cpu=2000, gpus=0, arrival=0, duration=1),
        make_pod("c4", cpu=1000, gpus=0, arrival=1, duration=1),
        make_pod("s1", cpu=1000, milli=100, arrival=0, duration=1),
        make_pod("s2", cpu=1000, milli=100, arrival=0, duration=1),
    ]
    saving = replay.saving(pods, nodes, "random", acceptance=0.5)
    assert (saving.sliced.gpus, saving.whole_cards.gpus) == (2, 1)
    assert saving.anomaly and saving.sliced_gpus == 1 and saving.saving == 0.0


def test_a_fleet_missing_the_model_a_pod_needs_does_not_serve_it() -> None:
    # the smallest prefix (the T4 node) cannot run the A10 pods: they must count as not
    # served there, not vanish as unschedulable, so the A10 node is needed too
    nodes = [make_node("t4", gpus=1, model="T4"), make_node("a10", gpus=1, model="A10")]
    pods = [make_pod(p, models=("A10",), arrival=i, duration=1) for i, p in enumerate("ab")]
    needed = replay.gpus_needed(pods, nodes, "best-fit", acceptance=1.0)
    assert needed.gpus == 2 and needed.result.denied == {}
    # a pod no node of the whole fleet holds is still refused as unschedulable
    alone = replay.run(pods, nodes[:1], "best-fit")
    assert alone.denied == {"Unschedulable": 2}
