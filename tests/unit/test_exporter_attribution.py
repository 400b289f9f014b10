"""Attribution: processes -> containers -> pods -> slices, allocation per GPU, misses."""

from __future__ import annotations

import pytest

from exporter import attribution, cgroups
from exporter.model import MIB, ContainerRef, ProcessUsage
from exporter.pods import pod_from_json
from governance import contract
from tests.support.exporter import grant, make_pod_json

pytestmark = pytest.mark.unit

GPU0 = "GPU-00000000-0000-0000-0000-000000000000"
GPU1 = "GPU-11111111-1111-1111-1111-111111111111"
UID_A = "aaaaaaaa-0000-4000-8000-000000000001"
UID_B = "bbbbbbbb-0000-4000-8000-000000000002"
CID_A = "a" * 64
CID_B = "b" * 64


def _pods():
    return [
        pod_from_json(
            make_pod_json(
                name="trainer",
                uid=UID_A,
                containers={"main": CID_A},
                grants={"main": grant(20480, 25)},
            )
        ),
        pod_from_json(
            make_pod_json(
                name="idle",
                namespace="analytics",
                uid=UID_B,
                containers={"worker": CID_B},
                department="analytics",
                queue="batch",
                sku="h100-2g-40gb",
                grants={"worker": grant(40960, 50, sku="h100-2g-40gb")},
            )
        ),
    ]


REFS = {
    10: ContainerRef(pod_uid=UID_A, container_id=CID_A),
    11: ContainerRef(pod_uid=UID_A, container_id=CID_A),
    20: ContainerRef(pod_uid="cccccccc-0000-4000-8000-000000000003", container_id="c" * 64),
    21: ContainerRef(pod_uid=UID_A, container_id="d" * 64),
}


def resolve(pid: int) -> ContainerRef | str:
    return REFS.get(pid, cgroups.MISS_NOT_A_POD)


def test_processes_of_one_container_add_up_into_its_slice() -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0, GPU1],
        processes=[
            ProcessUsage(gpu_uuid=GPU0, pid=10, used_memory_bytes=3 * 1024 * MIB, sm_util_pct=20),
            ProcessUsage(gpu_uuid=GPU0, pid=11, used_memory_bytes=1024 * MIB, sm_util_pct=5),
        ],
        resolve=resolve,
        pods=_pods(),
        assignments={
            ("research", "trainer", "main"): (GPU0,),
            ("analytics", "idle", "worker"): (GPU1,),
        },
    )
    by_pod = {s.key.pod: s for s in result.slices}
    trainer = by_pod["trainer"]
    assert trainer.key.uuid == GPU0
    assert (trainer.key.department, trainer.key.queue, trainer.key.sku) == (
        "research",
        "training",
        "h100-1g-20gb",
    )
    assert trainer.memory_used_bytes == 4 * 1024 * MIB
    assert trainer.compute_utilization_ratio == pytest.approx(0.25)
    assert trainer.processes == 2
    assert trainer.memory_limit_bytes == 20480 * MIB
    assert trainer.compute_limit_ratio == pytest.approx(0.25)


def test_granted_slice_without_processes_is_reported_idle_and_allocated() -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0, GPU1],
        processes=[],
        resolve=resolve,
        pods=_pods(),
        assignments={("analytics", "idle", "worker"): (GPU1,)},
    )
    idle = next(s for s in result.slices if s.key.pod == "idle")
    assert (idle.key.uuid, idle.memory_used_bytes, idle.processes) == (GPU1, 0, 0)
    alloc = {a.uuid: a for a in result.allocations}
    assert alloc[GPU1].memory_bytes == 40960 * MIB
    assert alloc[GPU1].compute_ratio == pytest.approx(0.5)
    assert alloc[GPU1].slices == 1
    assert alloc[GPU0].slices == 0


def test_without_podresources_a_slice_sits_on_the_gpus_its_processes_use() -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0, GPU1],
        processes=[ProcessUsage(gpu_uuid=GPU1, pid=10, used_memory_bytes=MIB, sm_util_pct=1)],
        resolve=resolve,
        pods=_pods(),
        assignments=None,
    )
    trainer = next(s for s in result.slices if s.key.pod == "trainer")
    assert trainer.key.uuid == GPU1
    idle = next(s for s in result.slices if s.key.pod == "idle")
    assert idle.key.uuid == ""  # placement unknown: no GPU's allocation counts it
    alloc = {a.uuid: a for a in result.allocations}
    assert alloc[GPU1].memory_bytes == 20480 * MIB
    assert "" not in alloc


@pytest.mark.parametrize(
    ("pid", "reason"),
    [
        pytest.param(99, cgroups.MISS_NOT_A_POD, id="host-process"),
        pytest.param(20, cgroups.MISS_UNKNOWN_POD, id="pod-not-in-watch"),
        pytest.param(21, attribution.MISS_UNKNOWN_CONTAINER, id="container-not-in-status"),
    ],
)
def test_process_of_no_known_pod_is_unattributed_never_dropped(pid: int, reason: str) -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0],
        processes=[ProcessUsage(gpu_uuid=GPU0, pid=pid, used_memory_bytes=512 * MIB)],
        resolve=resolve,
        pods=_pods(),
        assignments={},
    )
    assert [(u.pid, u.reason, u.memory_used_bytes) for u in result.unattributed] == [
        (pid, reason, 512 * MIB)
    ]
    assert result.misses == {reason: 1}


def test_memory_not_available_counts_as_zero_but_keeps_the_process() -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0],
        processes=[ProcessUsage(gpu_uuid=GPU0, pid=10, used_memory_bytes=None)],
        resolve=resolve,
        pods=_pods(),
        assignments={},
    )
    trainer = next(s for s in result.slices if s.key.pod == "trainer")
    assert (trainer.memory_used_bytes, trainer.processes) == (0, 1)


def test_finished_pods_and_bad_annotations_allocate_nothing() -> None:
    done = pod_from_json(
        make_pod_json(name="done", uid=UID_A, phase="Succeeded", grants={"main": grant(1024, 10)})
    )
    raw = make_pod_json(name="broken", uid=UID_B)
    raw["metadata"]["annotations"] = {contract.ANNOTATION_SLICES: "{not json"}
    result = attribution.attribute(
        gpu_uuids=[GPU0],
        processes=[],
        resolve=resolve,
        pods=[done, pod_from_json(raw)],
        assignments={},
    )
    assert result.slices == ()
    assert result.allocations[0].slices == 0
    assert result.misses == {attribution.MISS_BAD_ANNOTATION: 1}


def test_compute_ratio_is_capped_at_one_gpu() -> None:
    result = attribution.attribute(
        gpu_uuids=[GPU0],
        processes=[
            ProcessUsage(gpu_uuid=GPU0, pid=10, used_memory_bytes=0, sm_util_pct=80),
            ProcessUsage(gpu_uuid=GPU0, pid=11, used_memory_bytes=0, sm_util_pct=70),
        ],
        resolve=resolve,
        pods=_pods(),
        assignments={},
    )
    trainer = next(s for s in result.slices if s.key.pod == "trainer")
    assert trainer.compute_utilization_ratio == 1.0
