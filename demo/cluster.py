"""The simulated fleet's scheduler and kubelets: what a cluster does to a pod after the
API server has admitted it.

The scheduler places an admitted pod on a node of its pool (the pool's node selector,
which the webhook wrote) with the placement policy (:mod:`demo.placement`), binds it,
and records the ``Scheduled`` event; a pod that fits nowhere stays Pending
(``FailedScheduling``) and is tried again whenever capacity frees. The kubelet then
starts it: its status turns Running with a container id per container, and the node's
simulation file (the one its exporter follows, ``gpupool exporter --simulate``) gains
the pod's processes on the GPUs it was given, using its slice at the planned level.
When the pod ends, the kubelet reports it Succeeded (a Job's pod) or it is deleted,
and its processes leave the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from demo import models
from demo.apiserver import ApiServer
from demo.fleet import Node
from demo.placement import Placement, Policy, Scheduler, Want
from governance import contract

JSON = dict[str, Any]

LOAD_PERIOD_S = 120.0
"""Period of the simulated load's slow wave (the exporter's ``period_s``)."""


@dataclass
class Workload:
    """An admitted pod as the cluster tracks it."""

    namespace: str
    name: str
    uid: str
    allocation_id: str
    department: str
    queue: str
    sku: str
    grants: Mapping[str, contract.SliceGrant]
    load: float
    processes: int
    pool: str
    placement: Placement | None = None
    container_ids: dict[str, str] = field(default_factory=dict)

    @property
    def wants(self) -> list[Want]:
        return [
            Want(container=name, gpus=g.gpus, memory_mib=g.memory_mib, compute_pct=g.compute_pct)
            for name, g in sorted(self.grants.items())
        ]

    @property
    def slices(self) -> int:
        return sum(g.count for g in self.grants.values())


def workload_of(pod: Mapping[str, Any], *, load: float, processes: int) -> Workload:
    """What the cluster needs of an admitted pod (its metadata as the webhook wrote it)."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    grants = contract.load_slices(annotations.get(contract.ANNOTATION_SLICES) or "{}")
    pools = {g.pool for g in grants.values()}
    return Workload(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        allocation_id=annotations.get(contract.ANNOTATION_ALLOCATION_ID, ""),
        department=labels.get(contract.LABEL_DEPARTMENT, ""),
        queue=labels.get(contract.LABEL_QUEUE, ""),
        sku=labels.get(contract.LABEL_SKU, ""),
        grants=grants,
        load=load,
        processes=processes,
        pool=next(iter(pools)) if len(pools) == 1 else "",
    )


class Cluster:
    """Scheduler and kubelets over ``fleet``; each node's simulation file in ``directory``."""

    def __init__(
        self,
        api: ApiServer,
        fleet: Sequence[Node],
        directory: Path,
        *,
        policy: Policy = Policy.BINPACK,
        seed: int = 1,
    ) -> None:
        self.api = api
        self.fleet = {node.name: node for node in fleet}
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.scheduler = Scheduler(fleet, policy)
        self.seed = seed
        self.running: dict[str, Workload] = {}
        """By pod uid: pods bound to a node."""
        self.pending: dict[str, Workload] = {}
        """By pod uid, in arrival order: admitted pods no node has room for yet."""
        now = api.now()
        for node in fleet:
            api.add_node(
                models.node(
                    node.name,
                    pool=node.pool,
                    model=node.model,
                    gpus=node.gpus,
                    memory_mib=node.memory_mib,
                    created=now,
                )
            )
            self._write(node.name)

    def simulation_file(self, node: str) -> Path:
        return self.directory / f"{node}.yaml"

    def admit(self, pod: JSON, *, load: float, processes: int) -> Workload:
        """Take an admitted pod: place and start it, or keep it Pending."""
        work = workload_of(pod, load=load, processes=processes)
        if not self._start(work):
            self.pending[work.uid] = work
            message = (
                f"0/{len(self.fleet)} nodes are available: no node of pool {work.pool} has "
                f"{', '.join(_ask(w) for w in work.wants)} free"
            )
            self.api.set_status(
                work.namespace, work.name, models.unschedulable(message, at=self.api.now())
            )
            self.api.record_event(
                self.api.pod(work.namespace, work.name),
                reason="FailedScheduling",
                message=message,
                type_="Warning",
                component="gpupool-demo-scheduler",
            )
        return work

    def _start(self, work: Workload) -> bool:
        placement = self.scheduler.place(work.pool, work.wants) if work.pool else None
        if placement is None:
            return False
        work.placement = placement
        node = self.fleet[placement.node]
        bound = self.api.bind(work.namespace, work.name, node.name)
        gpus = ", ".join(f"{c}: GPU {list(i)}" for c, i in sorted(placement.gpus.items()))
        self.api.record_event(
            bound,
            reason="Scheduled",
            message=f"Successfully assigned {work.namespace}/{work.name} to {node.name} ({gpus})",
            component="gpupool-demo-scheduler",
        )
        work.container_ids = {
            name: hashlib.sha256(f"{work.uid}/{name}".encode()).hexdigest()
            for name in (c["name"] for c in bound["spec"]["containers"])
        }
        self.api.set_status(
            work.namespace,
            work.name,
            models.running(
                bound,
                container_ids=work.container_ids,
                at=self.api.now(),
                host_ip=_host_ip(node.name),
            ),
        )
        self.running[work.uid] = work
        self._write(node.name)
        return True

    def finish(self, uid: str, *, succeeded: bool) -> Workload | None:
        """End a pod: a Job's pod succeeds (the kubelet reports it), then the pod is
        deleted; its GPUs are free again and pending pods are tried."""
        work = self.running.pop(uid, None) or self.pending.pop(uid, None)
        if work is None:
            return None
        if succeeded and work.placement is not None:
            pod = self.api.pod(work.namespace, work.name)
            self.api.set_status(work.namespace, work.name, models.succeeded(pod, at=self.api.now()))
        self.api.delete_pod(work.namespace, work.name)
        if work.placement is not None:
            self.scheduler.release(work.placement, work.wants)
            self._write(work.placement.node)
        return work

    def retry_pending(self) -> list[Workload]:
        """Start the pending pods that now fit, oldest first."""
        started = []
        for uid, work in list(self.pending.items()):
            if self._start(work):
                del self.pending[uid]
                started.append(work)
        return started

    def workloads(self) -> Iterable[Workload]:
        yield from self.running.values()
        yield from self.pending.values()

    # -- the nodes' simulation files ---------------------------------------------------

    def _write(self, node_name: str) -> None:
        node = self.fleet[node_name]
        pods = []
        for work in self.running.values():
            if work.placement is None or work.placement.node != node_name:
                continue
            containers = []
            for name, grant in sorted(work.grants.items()):
                containers.append(
                    {
                        "name": name,
                        "id": work.container_ids[name],
                        "gpus": list(work.placement.gpus[name]),
                        "memory_mib": grant.memory_mib,
                        "compute_pct": grant.compute_pct,
                        "load": round(work.load, 3),
                        "processes": work.processes,
                    }
                )
            pods.append(
                {
                    "namespace": work.namespace,
                    "name": work.name,
                    "uid": work.uid,
                    "department": work.department,
                    "queue": work.queue,
                    "sku": work.sku,
                    "containers": containers,
                }
            )
        document = {
            "hostname": node.name,
            "seed": self.seed,
            "period_s": LOAD_PERIOD_S,
            "gpus": {"count": node.gpus, "model": node.model, "memory_mib": node.memory_mib},
            "pods": pods,
        }
        path = self.simulation_file(node_name)
        staged = path.with_name(f".{path.name}.tmp")
        staged.write_text(
            f"# {node.name}: a simulated node of pool {node.pool}, written by gpupool demo\n"
            + yaml.safe_dump(document, sort_keys=False)
        )
        os.replace(staged, path)  # the exporter never reads half a file


def _ask(want: Want) -> str:
    return f"{want.gpus} GPU(s) of {want.memory_mib} MiB and {want.compute_pct}% compute"


def _host_ip(node: str) -> str:
    digest = hashlib.sha256(node.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] or 1}"
