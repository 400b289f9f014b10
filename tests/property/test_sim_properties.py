"""Properties of the simulator on random tiny fleets and traces (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import fill, fragmentation, policies, replay
from simulator.fleet import Fleet, Kinds
from simulator.policies.base import Setup
from simulator.policies.fgd import candidate_moves
from simulator.scheduler import Scheduler
from simulator.trace import Node, Pod

pytestmark = pytest.mark.property

MODELS = ("T4", "A10")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nodes_strategy = st.lists(
    st.builds(
        lambda gpus, cores, memory, model: (gpus, cores, memory, model),
        st.integers(1, 4),
        st.integers(2, 32),
        st.integers(4, 64),
        st.sampled_from(MODELS),
    ),
    min_size=1,
    max_size=5,
)
pods_strategy = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 1, 1, 2]),
        st.sampled_from([100, 250, 300, 470, 500, 700, 810, 1000]),
        st.integers(1, 8),
        st.integers(1, 16),
        st.sampled_from([(), ("T4",), ("A10",), ("T4", "A10")]),
        st.integers(0, 20),
        st.integers(1, 15),
    ),
    min_size=1,
    max_size=25,
)


RawNodes = list[tuple[int, int, int, str]]
RawPods = list[tuple[int, int, int, int, tuple[str, ...], int, int]]


def make_nodes(raw: RawNodes) -> list[Node]:
    return [
        Node(name=f"n{i}", cpu_milli=c * 1000, memory_mib=m * 1024, gpus=g, model=model)
        for i, (g, c, m, model) in enumerate(raw)
    ]


def make_pods(raw: RawPods) -> list[Pod]:
    return [
        Pod(
            name=f"p{i}",
            cpu_milli=cores * 1000,
            memory_mib=memory * 1024,
            num_gpu=gpus,
            gpu_milli=(milli if gpus == 1 else 1000) if gpus else 0,
            gpu_models=models if gpus else (),
            arrival_s=float(arrival),
            duration_s=float(duration),
        )
        for i, (gpus, milli, cores, memory, models, arrival, duration) in enumerate(raw)
    ]


def naive_fits(fleet: Fleet, pod: Pod, node: int) -> bool:
    """The fit rule written out for one pod and one node."""
    spec = fleet.nodes[node]
    if pod.num_gpu and pod.gpu_models and spec.model not in pod.gpu_models:
        return False
    free = [int(g) for g in fleet.gpus_of(node)]
    return (
        fleet.cpu_free[node] >= pod.cpu_milli
        and fleet.memory_free[node] >= pod.memory_mib
        and sum(1 for g in free if g >= pod.gpu_milli) >= pod.num_gpu
    )


@SETTINGS
@given(nodes_strategy, pods_strategy, st.sampled_from(list(policies.REGISTRY)), st.integers(0, 9))
def test_placement_never_overcommits_and_refuses_only_what_fits_nowhere(
    raw_nodes: RawNodes,
    raw_pods: RawPods,
    policy: str,
    seed: int,
) -> None:
    nodes, pods = make_nodes(raw_nodes), make_pods(raw_pods)
    fleet = Fleet(nodes)
    kinds = Kinds.of(pods, fleet.models)
    setup = Setup(kinds=kinds, models=fleet.models, workload=tuple(pods))
    scheduler = Scheduler(fleet, kinds, policies.create(policy, setup), np.random.default_rng(seed))
    placed = 0
    for pod in pods:
        fits_somewhere = any(naive_fits(fleet, pod, n) for n in range(len(fleet)))
        placement = scheduler.place(kinds.index(pod))
        assert (placement is not None) == fits_somewhere
        if placement is not None:
            placed += pod.gpu_milli_total
            assert not pod.gpu_models or nodes[placement.node].model in pod.gpu_models
        real = fleet.gpu_free[fleet.gpu_free >= 0]
        assert ((real >= 0) & (real <= 1000)).all()
        assert (fleet.cpu_free >= 0).all() and (fleet.memory_free >= 0).all()
        assert fleet.allocated_gpu_milli == placed <= fleet.capacity_gpu_milli
        assert 0.0 <= fleet.allocation <= 1.0


@SETTINGS
@given(nodes_strategy, pods_strategy, st.sampled_from(list(policies.REGISTRY)), st.integers(0, 99))
def test_same_seed_same_result(
    raw_nodes: RawNodes,
    raw_pods: RawPods,
    policy: str,
    seed: int,
) -> None:
    nodes, pods = make_nodes(raw_nodes), make_pods(raw_pods)
    if not any(p.num_gpu for p in pods):
        pods.append(make_pods([(1, 500, 1, 1, (), 0, 1)])[0])
    first = fill.run(pods, nodes, policy, seed=seed, seeds=2)
    again = fill.run(pods, nodes, policy, seed=seed, seeds=2)
    assert first.allocation_by_arrived == again.allocation_by_arrived
    assert [r.failed_pods for r in first.runs] == [r.failed_pods for r in again.runs]
    assert max(first.allocation_by_arrived.values()) <= 100.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes_strategy,
    pods_strategy,
    st.sampled_from(list(policies.REGISTRY)),
    st.sampled_from([0.5, 0.8, 1.0]),
)
def test_slicing_never_needs_more_gpus_than_whole_cards(
    raw_nodes: RawNodes,
    raw_pods: RawPods,
    policy: str,
    acceptance: float,
) -> None:
    nodes, pods = make_nodes(raw_nodes), make_pods(raw_pods)
    saving = replay.saving(pods, nodes, policy, acceptance=acceptance)
    whole = saving.whole_cards.gpus
    if whole is not None:
        assert saving.sliced_gpus is not None and saving.sliced_gpus <= whole
        assert saving.saving is not None and saving.saving >= 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0, 30, 190, 300, 470, 530, 1000]), min_size=1, max_size=8),
    st.integers(0, 40_000),
    st.lists(
        st.tuples(
            st.integers(0, 2), st.sampled_from([100, 300, 470, 810, 1000]), st.integers(1, 16)
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_incremental_fragmentation_matches_the_measure_of_each_new_state(
    free: list[int], cpu_free: int, workload: list[tuple[int, int, int]]
) -> None:
    pods = [
        Pod(
            name=f"p{i}",
            cpu_milli=cores * 1000,
            memory_mib=0,
            num_gpu=gpus,
            gpu_milli=(milli if gpus == 1 else 1000) if gpus else 0,
        )
        for i, (gpus, milli, cores) in enumerate(workload)
    ]
    target = fragmentation.target_of(pods, ("T4",), popularity=1.0)
    kinds = Kinds.of(pods, ("T4",))
    gpu_free = np.array(free)
    fits = np.ones(len(kinds), dtype=np.bool_)
    fits &= (gpu_free[None, :] >= kinds.gpu_milli[:, None]).sum(axis=1) >= kinds.num_gpu
    candidates = candidate_moves(kinds, gpu_free, fits)
    now, after = fragmentation.fragmentation_after(
        target, cpu_free=cpu_free, gpu_free=gpu_free, model=0, moves=candidates.moves
    )
    assert now == pytest.approx(
        fragmentation.node_fragmentation(target, cpu_free=cpu_free, gpu_free=free, model=0)
    )
    for i, kind in enumerate(candidates.kind):
        state = list(free)
        if candidates.gpu[i] >= 0:
            state[candidates.gpu[i]] -= int(kinds.gpu_milli[kind])
        else:
            for g in np.flatnonzero(gpu_free == 1000)[: kinds.num_gpu[kind]]:
                state[g] = 0
        expected = fragmentation.node_fragmentation(
            target, cpu_free=cpu_free - int(kinds.cpu_milli[kind]), gpu_free=state, model=0
        )
        assert after[i] == pytest.approx(expected)
