"""The demo's workload: the trace's GPU pods, in order, shaped into examples/org.yaml's
tenants; the same seed gives the same pods."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from demo import workload
from demo.workload import Intent, Kind
from governance import config
from simulator import trace
from simulator.trace import Pod as TracePod

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "org.yaml"
TRACE = trace.shared_trace_dir(ROOT) / trace.DEFAULT_POD_LIST
needs_trace = pytest.mark.skipif(not TRACE.exists(), reason=f"the Alibaba trace is not at {TRACE}")


def trace_pod(
    name: str, at: float, *, gpus: int = 1, milli: int = 1000, lives: float = 600
) -> TracePod:
    return TracePod(
        name=name,
        cpu_milli=8000,
        memory_mib=32768,
        num_gpu=gpus,
        gpu_milli=milli,
        arrival_s=at,
        duration_s=lives,
    )


SMALL = [
    trace_pod("t0", 0),
    trace_pod("cpu", 5, gpus=0, milli=0),
    trace_pod("t1", 10, milli=250),
    trace_pod("t2", 20, gpus=8),
    trace_pod("t3", 1_000_000, milli=460, lives=30),
    trace_pod("t4", 1_000_010, gpus=2),
]


def first(pods: list[TracePod], count: int, **kwargs: float) -> list[workload.PlannedPod]:
    options = {"seed": 1, "speed": 60.0, "fleet_gpus": 40, **kwargs}
    return list(itertools.islice(workload.plan(pods, **options), count))  # type: ignore[arg-type]


def test_the_same_seed_plans_the_same_pods_and_another_seed_others() -> None:
    assert first(SMALL, 60) == first(SMALL, 60)
    assert first(SMALL, 60) != first(SMALL, 60, seed=2)


def test_pods_keep_the_traces_shapes_and_cpu_pods_are_left_out() -> None:
    plan = first(SMALL, 40)
    sources = {p.source for p in plan}
    assert "cpu" not in sources and sources <= {"t0", "t1", "t2", "t3", "t4"}
    for pod in plan:
        shape = next(t for t in SMALL if t.name == pod.source)
        assert pod.gpus == (shape.num_gpu if shape.gpu_milli == 1000 else 1)
        if shape.gpu_milli < 1000:
            assert pod.kind in (Kind.INFERENCE, Kind.NOTEBOOK)
        if shape.num_gpu > 1:
            assert pod.kind is Kind.TRAINING
        assert pod.limits["memory"] == "32768Mi" and pod.limits["cpu"] == "8000m"
        assert workload.MIN_POD_S <= pod.duration_s <= workload.MAX_POD_S


def test_durations_follow_the_speed_within_the_bounds() -> None:
    assert workload.pod_seconds(trace_pod("a", 0, lives=600), 60) == 10
    assert workload.pod_seconds(trace_pod("a", 0, lives=600), 6) == 100
    assert workload.pod_seconds(trace_pod("a", 0, lives=6), 60) == workload.MIN_POD_S
    assert workload.pod_seconds(trace_pod("a", 0, lives=10**7), 60) == workload.MAX_POD_S


def test_the_replay_starts_with_the_pods_already_running_then_keeps_the_traces_gaps() -> None:
    plan = first(SMALL, 200)
    times = [p.at_s for p in plan]
    assert times == sorted(times)
    assert times[0] == 0.0 and times.count(0.0) > 1  # those running at the start, at once


def test_gaps_are_the_traces_with_the_longest_cut_to_the_99th_percentile() -> None:
    pods = [trace_pod(f"t{n}", 10.0 * n + (10**6 if n >= 150 else 0)) for n in range(200)]
    between = workload.gaps(pods)
    assert len(between) == len(pods)
    assert between[:149] == [10.0] * 149
    assert between[149] == 10.0  # the lull of a million seconds, cut
    assert between[-1] == pytest.approx(10.0)  # wrapping around: the mean


def test_the_arrival_rate_asks_for_the_load_on_the_fleet() -> None:
    pods = workload.gpu_pods(SMALL)
    rate = workload.arrival_rate(pods, speed=60, fleet_gpus=40)
    gpu_seconds = sum(p.gpu_milli_total / 1000 * workload.pod_seconds(p, 60) for p in pods) / len(
        pods
    )
    assert rate * gpu_seconds == pytest.approx(workload.LOAD * 40)
    assert workload.arrival_rate(pods, speed=60, fleet_gpus=80) == pytest.approx(2 * rate)


def test_every_tenant_asks_in_its_departments_namespaces_for_skus_its_queue_sells() -> None:
    org = config.build_org(config.load_file(EXAMPLE))
    for tenant in workload.TENANTS:
        queue = org.queues[(tenant.department, tenant.queue)]
        for namespace in tenant.namespaces:
            found = org.department_of(namespace)
            assert found is not None and found.name == tenant.department, tenant.name
        if not tenant.queue_label:
            assert org.departments[tenant.department].default_queue == tenant.queue
        for choice in tenant.skus:
            if choice.form is workload.Form.HAMI:
                assert org.pools[queue.pool].backend == "hami"
                continue
            sku = org.skus[choice.sku]
            assert queue.pool in sku.pools, (tenant.name, choice.sku)
            assert not queue.skus or choice.sku in queue.skus, (tenant.name, choice.sku)
            assert sku.compute_pct == choice.compute_pct
            assert sku.gpus_per_slice == choice.gpus_per_slice
            if choice.form is workload.Form.PLAIN:
                assert queue.default_sku == choice.sku, (tenant.name, choice.sku)


def test_misfits_are_planned_at_their_shares() -> None:
    plan = first(SMALL, 3000)
    share = {intent: sum(p.intent is intent for p in plan) / len(plan) for intent in Intent}
    for intent, expected in workload.MISFIT_SHARE.items():
        assert expected / 2 < share[intent] < expected * 2, (intent, share[intent])
    unowned = {p.namespace for p in plan if p.intent is Intent.UNOWNED}
    assert unowned <= {"sandbox", "default", "training-scratch"}


@needs_trace
def test_the_real_trace_makes_a_busy_demo() -> None:
    pods = trace.read_pods(TRACE)
    plan = first(pods, 2000, fleet_gpus=208)
    span = plan[-1].at_s
    assert 200 < span < 2000  # a few pods a second
    running_at_start = sum(p.at_s == 0 for p in plan)
    assert running_at_start > 50
    assert {p.kind for p in plan} == set(Kind)
    assert {p.tenant for p in plan} == {t.name for t in workload.TENANTS}
