"""Hypothesis: attribution conserves every process and every byte, whatever the pods."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import attribution
from exporter.model import ContainerRef, PodMeta, ProcessUsage
from governance import contract

pytestmark = pytest.mark.property

GPUS = ["GPU-0", "GPU-1", "GPU-2"]
PODS = [
    PodMeta(
        uid=f"uid-{n}",
        namespace="ns",
        name=f"pod-{n}",
        labels={contract.LABEL_DEPARTMENT: f"d{n % 2}"},
        annotations={
            contract.ANNOTATION_SLICES: contract.dump_slices(
                {
                    "main": contract.SliceGrant(
                        count=1,
                        memory_mib=1024 * (n + 1),
                        compute_pct=10,
                        backend="hami",
                        pool="p",
                        sku="s",
                    )
                }
            )
        },
        container_ids={f"cid-{n}": "main"},
        phase="Running",
    )
    for n in range(4)
]

processes = st.lists(
    st.builds(
        ProcessUsage,
        gpu_uuid=st.sampled_from(GPUS),
        pid=st.integers(1, 50),
        used_memory_bytes=st.one_of(st.none(), st.integers(0, 2**36)),
        sm_util_pct=st.one_of(st.none(), st.floats(0, 100)),
    ),
    max_size=30,
    unique_by=lambda p: (p.pid, p.gpu_uuid),
)
# pid -> what its cgroup says: a known container, an unknown pod, or no pod
routes = st.dictionaries(
    st.integers(1, 50),
    st.one_of(
        st.integers(0, 3).map(lambda n: ContainerRef(pod_uid=f"uid-{n}", container_id=f"cid-{n}")),
        st.just(ContainerRef(pod_uid="uid-gone", container_id="x")),
        st.just(ContainerRef(pod_uid="uid-0", container_id="not-in-status")),
        st.just("not_a_pod"),
    ),
)


@settings(max_examples=150, deadline=None)
@given(procs=processes, route=routes, with_podresources=st.booleans())
def test_every_process_and_byte_is_attributed_or_reported(
    procs: list[ProcessUsage], route: dict[int, ContainerRef | str], with_podresources: bool
) -> None:
    assignments = {("ns", f"pod-{n}", "main"): (GPUS[n % 3],) for n in range(4)}
    result = attribution.attribute(
        gpu_uuids=GPUS,
        processes=procs,
        resolve=lambda pid: route.get(pid, "not_a_pod"),
        pods=PODS,
        assignments=assignments if with_podresources else None,
    )
    total = sum(p.used_memory_bytes or 0 for p in procs)
    attributed = sum(s.memory_used_bytes for s in result.slices)
    stray = sum(u.memory_used_bytes for u in result.unattributed)
    assert attributed + stray == total
    assert sum(s.processes for s in result.slices) + len(result.unattributed) == len(procs)
    assert sum(result.misses.values()) == len(result.unattributed)
    # every granted pod has its limit somewhere, exactly once per placed GPU
    limited = {(s.key.pod, s.key.uuid) for s in result.slices if s.memory_limit_bytes}
    assert {pod for pod, _ in limited} == {p.name for p in PODS}
    allocated = sum(a.memory_bytes for a in result.allocations)
    assert allocated == sum(s.memory_limit_bytes or 0 for s in result.slices if s.key.uuid)
    assert all(0.0 <= s.compute_utilization_ratio <= 1.0 for s in result.slices)
