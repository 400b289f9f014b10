"""Kubernetes objects as the API server sends them, built with the ``kubernetes`` client's
models and serialised by its ``ApiClient`` (camelCase, RFC 3339 times, no nulls).

Every object the demo's API stand-in stores or answers with is made here, so that the
real reconciler and exporter read exactly the shapes a cluster gives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubernetes import client

JSON = dict[str, Any]

_API = client.ApiClient()

CONTAINER_RUNTIME = "containerd://"
"""The prefix of a ``containerID`` in a pod's status (the exporter strips it)."""


def serialise(model: Any) -> JSON:
    """A model (or a structure of models) as the API server's JSON."""
    body: JSON = _API.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    return body


def parse(body: Mapping[str, Any], model: str) -> Any:
    """JSON -> the named model (``"V1Lease"``), as the client deserialises an answer."""
    import json

    return _API.deserialize(json.dumps(body), model, "application/json")


def status(code: int, reason: str, message: str) -> JSON:
    """The ``Status`` object of a failed request (or of a watch's ERROR event)."""
    return serialise(
        client.V1Status(
            api_version="v1",
            kind="Status",
            metadata=client.V1ListMeta(),
            status="Failure",
            message=message,
            reason=reason,
            code=code,
        )
    )


_KIND_OF = {
    "pods": ("v1", "Pod", client.V1Pod),
    "leases": ("coordination.k8s.io/v1", "Lease", client.V1Lease),
    "events": ("v1", "Event", client.CoreV1Event),
    "nodes": ("v1", "Node", client.V1Node),
}


def bookmark(kind: str, version: int) -> JSON:
    """A BOOKMARK's object: one of the watched kind that carries only its version."""
    api_version, name, model = _KIND_OF[kind]
    body = serialise(
        model(
            api_version=api_version,
            kind=name,
            metadata=client.V1ObjectMeta(resource_version=str(version)),
        )
    )
    return body


def object_list(kind: str, items: Sequence[JSON], version: int, cont: str | None = None) -> JSON:
    """A ``PodList`` (``LeaseList``, ...) of stored objects at ``version``."""
    api_version, name, _model = _KIND_OF[kind]
    return {
        "apiVersion": api_version,
        "kind": f"{name}List",
        "metadata": serialise(client.V1ListMeta(resource_version=str(version), _continue=cont)),
        "items": list(items),
    }


def node(
    name: str, *, pool: str, model: str, gpus: int, memory_mib: int, created: datetime
) -> JSON:
    """A GPU node of the simulated fleet, labelled with its pool (the webhook's
    nodeSelector) and GPU product, its GPUs in capacity as the device plugin does."""
    capacity = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return serialise(
        client.V1Node(
            api_version="v1",
            kind="Node",
            metadata=client.V1ObjectMeta(
                name=name,
                uid=_uid(f"node/{name}"),
                creation_timestamp=created,
                labels={
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "gpupool.io/pool": pool,
                    "nvidia.com/gpu.product": model.replace(" ", "-"),
                    "nvidia.com/gpu.memory": str(memory_mib),
                },
            ),
            spec=client.V1NodeSpec(),
            status=client.V1NodeStatus(
                capacity=capacity,
                allocatable=capacity,
                conditions=[
                    client.V1NodeCondition(
                        type="Ready",
                        status="True",
                        reason="KubeletReady",
                        message="kubelet is posting ready status (gpupool demo stand-in)",
                        last_heartbeat_time=created,
                        last_transition_time=created,
                    )
                ],
            ),
        )
    )


def _uid(text: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gpupool-demo/{text}"))


def running(
    pod: Mapping[str, Any], *, container_ids: Mapping[str, str], at: datetime, host_ip: str
) -> JSON:
    """The status a kubelet reports once the pod's containers run."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return serialise(
        client.V1PodStatus(
            phase="Running",
            host_ip=host_ip,
            pod_ip=host_ip,
            start_time=at,
            qos_class="Burstable",
            conditions=[
                client.V1PodCondition(type=t, status="True", last_transition_time=at)
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            container_statuses=[
                client.V1ContainerStatus(
                    name=c["name"],
                    container_id=CONTAINER_RUNTIME + container_ids[c["name"]],
                    image=c.get("image", ""),
                    image_id=c.get("image", ""),
                    ready=True,
                    started=True,
                    restart_count=0,
                    state=client.V1ContainerState(
                        running=client.V1ContainerStateRunning(started_at=at)
                    ),
                )
                for c in containers
            ],
        )
    )


def succeeded(pod: Mapping[str, Any], *, at: datetime) -> JSON:
    """The status of a pod whose containers all exited 0 (a finished Job's pod)."""
    current = dict(pod.get("status") or {})
    statuses = []
    for item in current.get("containerStatuses") or []:
        started = ((item.get("state") or {}).get("running") or {}).get("startedAt")
        statuses.append(
            client.V1ContainerStatus(
                name=item["name"],
                container_id=item.get("containerID"),
                image=item.get("image", ""),
                image_id=item.get("imageID", ""),
                ready=False,
                started=False,
                restart_count=0,
                state=client.V1ContainerState(
                    terminated=client.V1ContainerStateTerminated(
                        exit_code=0, reason="Completed", started_at=started, finished_at=at
                    )
                ),
            )
        )
    return serialise(
        client.V1PodStatus(
            phase="Succeeded",
            host_ip=current.get("hostIP"),
            pod_ip=current.get("podIP"),
            start_time=current.get("startTime"),
            qos_class=current.get("qosClass"),
            conditions=[
                client.V1PodCondition(
                    type="Ready", status="False", reason="PodCompleted", last_transition_time=at
                )
            ],
            container_statuses=statuses,
        )
    )


def unschedulable(message: str, *, at: datetime) -> JSON:
    """A pending pod's status when no node has room for it."""
    return serialise(
        client.V1PodStatus(
            phase="Pending",
            conditions=[
                client.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message=message,
                    last_transition_time=at,
                )
            ],
            qos_class="Burstable",
        )
    )


def event(
    *,
    name: str,
    namespace: str,
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    type_: str,
    component: str,
    at: datetime,
) -> JSON:
    """An Event about ``involved`` (a pod, or a Job that could not create one)."""
    meta = involved.get("metadata") or {}
    return serialise(
        client.CoreV1Event(
            api_version="v1",
            kind="Event",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, creation_timestamp=at),
            involved_object=client.V1ObjectReference(
                api_version=involved.get("apiVersion"),
                kind=involved.get("kind"),
                name=meta.get("name") or meta.get("generateName"),
                namespace=namespace,
                uid=meta.get("uid"),
            ),
            reason=reason,
            message=message,
            type=type_,
            source=client.V1EventSource(component=component),
            reporting_component=component,
            first_timestamp=at,
            last_timestamp=at,
            count=1,
        )
    )


def managed_fields(manager: str, at: datetime, obj: Mapping[str, Any]) -> JSON:
    """A ``managedFields`` entry for a create by ``manager``: the top-level fields it set
    (the API server lists every leaf; readers only need the shape)."""
    fields: dict[str, Any] = {}
    for section in ("metadata", "spec"):
        keys = [k for k in (obj.get(section) or {}) if k not in ("namespace", "managedFields")]
        if keys:
            fields[f"f:{section}"] = {f"f:{k}": {} for k in keys}
    return serialise(
        client.V1ManagedFieldsEntry(
            api_version="v1",
            fields_type="FieldsV1",
            fields_v1=fields,
            manager=manager,
            operation="Update",
            time=at,
        )
    )
