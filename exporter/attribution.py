"""Per-slice usage: GPU processes -> containers -> pods -> gpupool grants. Pure.

Inputs are values gathered by the sampler's edges (NVML's process list, a PID
resolver over /proc, the pod index, optionally the kubelet's PodResources answer); the
output is what the collector renders:

- one ``SliceUsage`` per (container, GPU): the container's processes' memory and SM
  utilisation on that GPU, and its limit from the ``gpupool.io/slices`` annotation;
  a granted container with no process yet still has its series (idle = waste);
- one ``GpuAllocation`` per GPU: the sum of the limits placed on it;
- one ``Unattributed`` per process that belongs to no known pod, with the reason.

Which GPU a grant sits on comes from PodResources when it names the container, else
from the GPUs its processes run on; where neither says, the slice's UUID label is
empty and it adds to no GPU's allocation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter import cgroups
from exporter.model import (
    MIB,
    Attribution,
    ContainerRef,
    GpuAllocation,
    PodMeta,
    ProcessUsage,
    SliceKey,
    SliceUsage,
    Unattributed,
)
from exporter.podresources import ContainerKey
from governance import contract

MISS_UNKNOWN_CONTAINER = "unknown_container"
"""The pod is known but its status does not (yet) list the process's container id."""
MISS_BAD_ANNOTATION = "bad_slices_annotation"
"""A pod's ``gpupool.io/slices`` annotation is not what the webhook writes."""


@functools.lru_cache(maxsize=4096)
def _grants(text: str) -> tuple[tuple[str, contract.SliceGrant], ...]:
    """Parsed annotations, cached: a pod's grant never changes while it lives, and the
    sampler sees every pod every tick."""
    return tuple(sorted(contract.load_slices(text).items()))


@dataclass
class _Usage:
    memory: int = 0
    util_pct: float = 0.0
    processes: int = 0


def attribute(
    *,
    gpu_uuids: Iterable[str],
    processes: Iterable[ProcessUsage],
    resolve: Callable[[int], ContainerRef | str],
    pods: Iterable[PodMeta],
    assignments: Mapping[ContainerKey, tuple[str, ...]] | None = None,
) -> Attribution:
    """Attribute one reading's processes and the node's grants to slices and GPUs."""
    by_uid = {pod.uid: pod for pod in pods}
    misses: dict[str, int] = {}
    usage: dict[tuple[str, str, str], _Usage] = {}
    unattributed: list[Unattributed] = []

    for process in processes:
        memory = process.used_memory_bytes or 0
        resolved = resolve(process.pid)
        reason = ""
        container = ""
        pod: PodMeta | None = None
        if isinstance(resolved, str):
            reason = resolved
        else:
            pod = by_uid.get(resolved.pod_uid)
            if pod is None:
                reason = cgroups.MISS_UNKNOWN_POD
            else:
                container = pod.container_ids.get(resolved.container_id, "")
                if not container:
                    reason = MISS_UNKNOWN_CONTAINER
        if reason or pod is None:
            misses[reason] = misses.get(reason, 0) + 1
            unattributed.append(
                Unattributed(
                    uuid=process.gpu_uuid, pid=process.pid, reason=reason, memory_used_bytes=memory
                )
            )
            continue
        slot = usage.setdefault((pod.uid, container, process.gpu_uuid), _Usage())
        slot.memory += memory
        slot.util_pct += process.sm_util_pct or 0.0
        slot.processes += 1

    limits: dict[tuple[str, str, str], tuple[int, float, str]] = {}
    for pod in by_uid.values():
        text = pod.annotations.get(contract.ANNOTATION_SLICES)
        if not text or pod.finished:
            continue
        try:
            grants = _grants(text)
        except contract.SlicesAnnotationError:
            misses[MISS_BAD_ANNOTATION] = misses.get(MISS_BAD_ANNOTATION, 0) + 1
            continue
        for container, grant in grants:
            placed: tuple[str, ...] = ()
            if assignments is not None:
                placed = assignments.get((pod.namespace, pod.name, container), ())
            if not placed:
                placed = tuple(
                    sorted(
                        gpu for (uid, name, gpu) in usage if uid == pod.uid and name == container
                    )
                )
            for gpu in placed or ("",):
                limits[(pod.uid, container, gpu)] = (
                    grant.memory_mib * MIB,
                    grant.compute_pct / 100.0,
                    grant.sku,
                )

    slices: list[SliceUsage] = []
    for uid, container, gpu in sorted(set(usage) | set(limits)):
        pod = by_uid[uid]
        used = usage.get((uid, container, gpu), _Usage())
        limit = limits.get((uid, container, gpu))
        slices.append(
            SliceUsage(
                key=SliceKey(
                    namespace=pod.namespace,
                    pod=pod.name,
                    container=container,
                    department=pod.department,
                    queue=pod.queue,
                    sku=pod.sku or (limit[2] if limit else ""),
                    uuid=gpu,
                ),
                memory_used_bytes=used.memory,
                compute_utilization_ratio=min(used.util_pct / 100.0, 1.0),
                processes=used.processes,
                memory_limit_bytes=limit[0] if limit else None,
                compute_limit_ratio=limit[1] if limit else None,
            )
        )

    allocations = {
        gpu: GpuAllocation(uuid=gpu, memory_bytes=0, compute_ratio=0.0, slices=0)
        for gpu in gpu_uuids
    }
    for (_, _, gpu), (memory, compute, _) in limits.items():
        if not gpu:
            continue
        current = allocations.get(
            gpu, GpuAllocation(uuid=gpu, memory_bytes=0, compute_ratio=0.0, slices=0)
        )
        allocations[gpu] = GpuAllocation(
            uuid=gpu,
            memory_bytes=current.memory_bytes + memory,
            compute_ratio=current.compute_ratio + compute,
            slices=current.slices + 1,
        )
    return Attribution(
        slices=tuple(slices),
        allocations=tuple(allocations[gpu] for gpu in sorted(allocations)),
        unattributed=tuple(unattributed),
        misses=misses,
    )
