"""The JSONPatch (RFC 6902) that turns an admitted pod into what the data plane understands.

Each operation is an ``add`` of a whole member (labels, annotations, a container's
``resources`` or ``env``, ``schedulerName``, ``nodeSelector``): ``add`` on an existing
member replaces it, so the patch is correct whether or not the member exists, and the
same pod patched twice comes out the same (reinvocation). The operations are written
directly rather than diffed with ``jsonpatch.make_patch``: the webhook knows exactly
what it changes, and diffing a whole pod on every admission costs more than the rest of
the handler. Tests apply the patch with the ``jsonpatch`` library and validate the
result against the Kubernetes schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from admission.demand import GpuNames
from admission.review import Container, Pod
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import (
    ANNOTATION_ALLOCATION_ID,
    ANNOTATION_SLICES,
    LABEL_DEPARTMENT,
    LABEL_QUEUE,
    LABEL_SKU,
    PREFIX,
    SliceGrant,
    dump_slices,
)

Operation = dict[str, Any]


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _resources(container: Container, changes: ContainerChanges, names: GpuNames) -> dict[str, Any]:
    """The container's resources with every GPU name removed and the backend's set."""
    limits = {k: v for k, v in container.limits.items() if not names.is_gpu(k)}
    requests = {k: v for k, v in container.requests.items() if not names.is_gpu(k)}
    for name, value in changes.resources.items():
        limits[name] = value
        requests[name] = value
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _env(container: Container, env: Mapping[str, str]) -> list[Mapping[str, Any]]:
    kept = [e for e in container.env if e.get("name") not in env]
    return [*kept, *({"name": k, "value": v} for k, v in env.items())]


def _ours(key: str, names: GpuNames) -> bool:
    """A key that only gpupool writes: its prefix, or a data plane's GPU annotation."""
    return key.startswith(PREFIX) or key in names.annotations


def stripped(pod: Pod, names: GpuNames) -> list[str]:
    """The labels and annotations :func:`strip_metadata` removes."""
    return sorted(
        {k for k in pod.labels if k.startswith(PREFIX)}
        | {k for k in pod.annotations if _ours(k, names)}
    )


def strip_metadata(pod: Pod, names: GpuNames) -> list[Operation]:
    """Remove every gpupool.io/ label and annotation and every data plane's GPU
    annotation (users never write them: they would take GPUs past the ledger)."""
    ops: list[Operation] = []
    for key in sorted(pod.labels):
        if key.startswith(PREFIX):
            ops.append({"op": "remove", "path": f"/metadata/labels/{_pointer(key)}"})
    for key in sorted(pod.annotations):
        if _ours(key, names):
            ops.append({"op": "remove", "path": f"/metadata/annotations/{_pointer(key)}"})
    return ops


def build(
    pod: Pod,
    *,
    grants: Mapping[str, SliceGrant],
    containers: Mapping[str, ContainerChanges],
    pod_changes: PodChanges,
    department: str,
    queue: str,
    sku: str,
    allocation_id: str | None,
    names: GpuNames,
) -> list[Operation]:
    """The patch for an admitted GPU pod.

    ``containers`` maps each GPU container's name to its backend changes; every other
    container is left alone. gpupool.io/ metadata and data-plane GPU annotations the
    user wrote are replaced.
    """
    ops: list[Operation] = []
    for container in pod.containers:
        changes = containers.get(container.name)
        if changes is None:
            continue
        ops.append(
            {
                "op": "add",
                "path": f"{container.path}/resources",
                "value": _resources(container, changes, names),
            }
        )
        if changes.env:
            ops.append(
                {
                    "op": "add",
                    "path": f"{container.path}/env",
                    "value": _env(container, changes.env),
                }
            )
    labels = {k: v for k, v in pod.labels.items() if not k.startswith(PREFIX)}
    labels.update(pod_changes.labels)
    labels.update({LABEL_DEPARTMENT: department, LABEL_QUEUE: queue, LABEL_SKU: sku})
    annotations = {k: v for k, v in pod.annotations.items() if not _ours(k, names)}
    annotations.update(pod_changes.annotations)
    annotations[ANNOTATION_SLICES] = dump_slices(dict(grants))
    if allocation_id is not None:
        annotations[ANNOTATION_ALLOCATION_ID] = allocation_id
    ops.append({"op": "add", "path": "/metadata/labels", "value": labels})
    ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    if pod_changes.scheduler_name:
        ops.append(
            {"op": "add", "path": "/spec/schedulerName", "value": pod_changes.scheduler_name}
        )
    if pod_changes.node_selector:
        selector = dict(pod.node_selector)
        selector.update(pod_changes.node_selector)
        ops.append({"op": "add", "path": "/spec/nodeSelector", "value": selector})
    return ops
