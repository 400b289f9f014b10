"""The simulated backend: a named simulation of one GPU node, for machines without GPUs.

It is not a fake of NVML: it simulates a node (its GPUs, the pods holding gpupool
slices on them, their processes and a few unattributed processes) with plausible,
time-varying, deterministic load, from a small YAML file (see
``exporter/simulated-node.yaml``). The demo, the tests and the benchmark use it; it
plays every edge the NVML path has (GPU backend, PID -> container resolver, pod index,
PodResources), so the same attribution and collector code runs on it.

The file is read again when it changes (:class:`SimulatedNode` with ``source``): ``gpupool
demo`` rewrites it as pods are placed on the node and end. With ``gpupool exporter
--kubernetes`` the pods' metadata (labels, the slices annotation, container ids) comes
from the API server instead of the file, as on a real node: the file then only says
which containers run processes on which GPUs, naming each pod by the ``uid`` the API
server gave it and each container by its ``id`` in the pod's status.

Load model per container: utilisation = ``load`` x ``compute_pct`` x a slow sine (its
own phase) + a little noise; memory climbs to ``load`` x ``memory_mib`` and wobbles.
GPU-level fields follow from the sum (temperature and power rise with utilisation,
energy is the integral of power).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter import fields
from exporter.model import (
    MIB,
    BackendReading,
    ContainerRef,
    GpuIdentity,
    GpuReading,
    PodMeta,
    ProcessUsage,
)
from exporter.podresources import ContainerKey
from governance import contract

log = logging.getLogger(__name__)

DEFAULT_SIMULATION = Path(__file__).resolve().parent.parent / "simulated-node.yaml"


class SimulationError(ValueError):
    """The simulation YAML is not what ``exporter/simulated-node.yaml`` shows."""


@dataclass(frozen=True, kw_only=True)
class SimContainer:
    name: str
    gpus: tuple[int, ...]
    memory_mib: int
    compute_pct: int
    load: float = 0.7
    processes: int = 1
    id: str = ""
    """The container's id as the pod's status reports it (``containerd://`` stripped);
    empty: one derived from the pod's uid and the container's name."""


@dataclass(frozen=True, kw_only=True)
class SimPod:
    namespace: str
    name: str
    department: str
    queue: str
    sku: str
    containers: tuple[SimContainer, ...]
    uid: str = ""
    """The pod's uid; empty: one derived from its namespace and name. A pod watched
    from the API server (``--kubernetes``) is matched by this uid."""

    @property
    def pod_uid(self) -> str:
        return self.uid or str(uuidlib.UUID(_hex(f"{self.namespace}/{self.name}", 32)))

    def container_id(self, container: SimContainer) -> str:
        return container.id or _hex(f"{self.pod_uid}/{container.name}", 64)


@dataclass(frozen=True, kw_only=True)
class SimUnattributed:
    gpu: int
    memory_mib: int
    sm_pct: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Simulation:
    hostname: str = "sim-gpu-node"
    seed: int = 1
    gpu_count: int = 8
    model: str = "NVIDIA H100 80GB HBM3"
    memory_mib: int = 81559
    period_s: float = 300.0
    pods: tuple[SimPod, ...] = ()
    unattributed: tuple[SimUnattributed, ...] = ()

    @classmethod
    def uniform(
        cls,
        *,
        gpus: int,
        slices_per_gpu: int,
        hostname: str = "sim-gpu-node",
        memory_mib: int = 81559,
    ) -> Simulation:
        """``gpus`` GPUs each shared by ``slices_per_gpu`` single-container pods."""
        share = max(memory_mib // slices_per_gpu, 1)
        compute = max(100 // slices_per_gpu, 1)
        pods = tuple(
            SimPod(
                namespace=f"team-{(gpu * slices_per_gpu + n) % 4}",
                name=f"job-{gpu}-{n}",
                department=f"dept-{(gpu * slices_per_gpu + n) % 4}",
                queue="default",
                sku=f"h100-1of{slices_per_gpu}",
                containers=(
                    SimContainer(
                        name="main",
                        gpus=(gpu,),
                        memory_mib=share,
                        compute_pct=compute,
                        load=0.3 + 0.6 * ((n % 5) / 4),
                    ),
                ),
            )
            for gpu in range(gpus)
            for n in range(slices_per_gpu)
        )
        return cls(hostname=hostname, gpu_count=gpus, memory_mib=memory_mib, pods=pods)


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise SimulationError(f"{where}: missing {key!r}")
    value = mapping[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SimulationError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _optional(mapping: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    return _require(mapping, key, kind, where) if key in mapping else default


def parse_simulation(raw: Any, *, source: str = "simulation") -> Simulation:
    """Validate a parsed YAML document; raise SimulationError naming the bad key."""
    if not isinstance(raw, dict):
        raise SimulationError(f"{source}: expected a mapping at the top level")
    gpus = _optional(raw, "gpus", dict, {}, source)
    count = _optional(gpus, "count", int, 8, f"{source}: gpus")
    if count < 1:
        raise SimulationError(f"{source}: gpus.count must be at least 1, got {count}")
    pods: list[SimPod] = []
    for n, pod in enumerate(_optional(raw, "pods", list, [], source)):
        where = f"{source}: pods[{n}]"
        if not isinstance(pod, dict):
            raise SimulationError(f"{where}: expected a mapping")
        containers = []
        for m, container in enumerate(_require(pod, "containers", list, where)):
            cwhere = f"{where}.containers[{m}]"
            if not isinstance(container, dict):
                raise SimulationError(f"{cwhere}: expected a mapping")
            placed = _require(container, "gpus", list, cwhere)
            for gpu in placed:
                if not isinstance(gpu, int) or not 0 <= gpu < count:
                    raise SimulationError(
                        f"{cwhere}: gpu {gpu!r} is not an index below gpus.count={count}"
                    )
            containers.append(
                SimContainer(
                    name=_require(container, "name", str, cwhere),
                    gpus=tuple(placed),
                    memory_mib=_require(container, "memory_mib", int, cwhere),
                    compute_pct=_require(container, "compute_pct", int, cwhere),
                    load=_optional(container, "load", float, 0.7, cwhere),
                    processes=_optional(container, "processes", int, 1, cwhere),
                    id=_optional(container, "id", str, "", cwhere),
                )
            )
        pods.append(
            SimPod(
                namespace=_require(pod, "namespace", str, where),
                name=_require(pod, "name", str, where),
                department=_optional(pod, "department", str, "", where),
                queue=_optional(pod, "queue", str, "", where),
                sku=_optional(pod, "sku", str, "", where),
                containers=tuple(containers),
                uid=_optional(pod, "uid", str, "", where),
            )
        )
    stray = []
    for n, item in enumerate(_optional(raw, "unattributed", list, [], source)):
        where = f"{source}: unattributed[{n}]"
        if not isinstance(item, dict):
            raise SimulationError(f"{where}: expected a mapping")
        gpu = _require(item, "gpu", int, where)
        if not 0 <= gpu < count:
            raise SimulationError(f"{where}: gpu {gpu} is not an index below {count}")
        stray.append(
            SimUnattributed(
                gpu=gpu,
                memory_mib=_require(item, "memory_mib", int, where),
                sm_pct=_optional(item, "sm_pct", float, 0.0, where),
            )
        )
    return Simulation(
        hostname=_optional(raw, "hostname", str, "sim-gpu-node", source),
        seed=_optional(raw, "seed", int, 1, source),
        gpu_count=count,
        model=_optional(gpus, "model", str, "NVIDIA H100 80GB HBM3", f"{source}: gpus"),
        memory_mib=_optional(gpus, "memory_mib", int, 81559, f"{source}: gpus"),
        period_s=_optional(raw, "period_s", float, 300.0, source),
        pods=tuple(pods),
        unattributed=tuple(stray),
    )


def load_simulation(path: Path) -> Simulation:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SimulationError(f"cannot read simulation file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SimulationError(f"{path}: not YAML: {exc}") from exc
    return parse_simulation(raw, source=str(path))


def _hex(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _phase(key: str) -> float:
    """A process's phase in its load cycle, fixed by its identity (so that it survives
    a reload of the file)."""
    return int(_hex(key, 8), 16) / 16**8 * 2 * math.pi


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Proc:
    pid: int
    gpu: int
    pod_uid: str
    container_id: str
    memory_mib: int
    compute_pct: float
    load: float
    phase: float
    share: float


@dataclass
class _State:
    energy_mj: list[float] = field(default_factory=list)
    last: float | None = None


class SimulatedNode:
    """A running simulation: GPU backend, PID resolver, pod source and PodResources.

    With ``source`` (the file ``simulation`` was read from), each :meth:`read` (the
    start of a sampler tick) first reads the file again if it changed, so one tick
    sees one version of it. Its GPUs and hostname are the node's and stay as first
    read; pods and unattributed processes follow the file. A file that does not parse
    is logged and the last good one kept. A process keeps its PID and phase across
    reloads, so a reload does not make the load jump.
    """

    name = "simulated"

    def __init__(
        self,
        simulation: Simulation,
        *,
        clock: Callable[[], float] = time.time,
        source: Path | None = None,
    ) -> None:
        self.simulation = simulation
        self._clock = clock
        self._rng = random.Random(simulation.seed)
        self._source = source
        self._stamp = _stamp(source) if source is not None else None
        self.reloads = 0
        """How many times a changed file was read again."""
        self._identities = tuple(
            GpuIdentity(
                index=i,
                uuid=f"GPU-{uuidlib.UUID(_hex(f'{simulation.hostname}/{i}', 32))}",
                model=simulation.model,
                pci_bus_id=f"00000000:{0x18 + i * 0x10 & 0xFF:02X}:00.0",
                device=f"nvidia{i}",
                driver_version="580.159.04-sim",
            )
            for i in range(simulation.gpu_count)
        )
        self._pids: dict[tuple[str, str, int, int], int] = {}
        self._next_pid = 200_000
        self._state = _State(energy_mj=[0.0] * simulation.gpu_count)
        self._build(simulation)

    def _pid(self, key: tuple[str, str, int, int]) -> int:
        pid = self._pids.get(key)
        if pid is None:
            self._next_pid += 1
            pid = self._pids[key] = self._next_pid
        return pid

    def _build(self, simulation: Simulation) -> None:
        pods: list[PodMeta] = []
        procs: list[_Proc] = []
        refs: dict[int, ContainerRef] = {}
        assignments: dict[ContainerKey, tuple[str, ...]] = {}
        for pod in simulation.pods:
            uid = pod.pod_uid
            ids: dict[str, str] = {}
            grants: dict[str, contract.SliceGrant] = {}
            for container in pod.containers:
                cid = pod.container_id(container)
                ids[cid] = container.name
                grants[container.name] = contract.SliceGrant(
                    count=len(container.gpus),
                    memory_mib=container.memory_mib,
                    compute_pct=container.compute_pct,
                    backend="hami",
                    pool="sim",
                    sku=pod.sku or contract.SKU_CUSTOM,
                )
                assignments[(pod.namespace, pod.name, container.name)] = tuple(
                    self._identities[g].uuid for g in container.gpus
                )
                for gpu in container.gpus:
                    for n in range(max(container.processes, 0)):
                        pid = self._pid((uid, cid, gpu, n))
                        procs.append(
                            _Proc(
                                pid=pid,
                                gpu=gpu,
                                pod_uid=uid,
                                container_id=cid,
                                memory_mib=container.memory_mib,
                                compute_pct=container.compute_pct,
                                load=container.load,
                                phase=_phase(f"{simulation.seed}/{uid}/{cid}/{gpu}/{n}"),
                                share=1.0 / max(container.processes, 1),
                            )
                        )
                        refs[pid] = ContainerRef(
                            pod_uid=uid, container_id=cid, runtime="containerd"
                        )
            labels = {
                contract.LABEL_DEPARTMENT: pod.department,
                contract.LABEL_QUEUE: pod.queue,
                contract.LABEL_SKU: pod.sku,
            }
            pods.append(
                PodMeta(
                    uid=uid,
                    namespace=pod.namespace,
                    name=pod.name,
                    labels={k: v for k, v in labels.items() if v},
                    annotations={contract.ANNOTATION_SLICES: contract.dump_slices(grants)},
                    container_ids=ids,
                    phase="Running",
                )
            )
        stray: list[_Proc] = []
        for n, item in enumerate(simulation.unattributed):
            stray.append(
                _Proc(
                    pid=self._pid(("", "", item.gpu, n)),
                    gpu=item.gpu,
                    pod_uid="",
                    container_id="",
                    memory_mib=item.memory_mib,
                    compute_pct=item.sm_pct,
                    load=1.0,
                    phase=0.0,
                    share=1.0,
                )
            )
        # the live pids only: a long demo must not keep every pid it ever gave
        live = {proc.pid for proc in (*procs, *stray)}
        self._pids = {key: pid for key, pid in self._pids.items() if pid in live}
        self.simulation = simulation
        self._pods, self._procs, self._refs, self._stray = pods, procs, refs, stray
        self._assignments = assignments
        self._by_uid = {pod.uid: pod for pod in pods}

    def _reload(self) -> None:
        """Read the file again if it changed; keep the last good simulation if not."""
        if self._source is None:
            return
        try:
            stamp = _stamp(self._source)
        except OSError as exc:
            log.warning("simulation file %s: %s; keeping the last one read", self._source, exc)
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            simulation = load_simulation(self._source)
        except SimulationError as exc:
            log.warning("%s; keeping the last good simulation", exc)
            return
        old = self.simulation
        node = (old.hostname, old.gpu_count, old.model, old.memory_mib)
        if (
            simulation.hostname,
            simulation.gpu_count,
            simulation.model,
            simulation.memory_mib,
        ) != node:
            log.warning(
                "simulation file %s changed the node (hostname or GPUs); a node keeps "
                "them: restart the exporter to change them. Its pods are read as usual.",
                self._source,
            )
            if any(
                g >= old.gpu_count for p in simulation.pods for c in p.containers for g in c.gpus
            ):
                log.warning("%s: a pod is on a GPU this node lacks; not read", self._source)
                return
            simulation = dataclasses.replace(
                simulation,
                hostname=old.hostname,
                gpu_count=old.gpu_count,
                model=old.model,
                memory_mib=old.memory_mib,
            )
        self._build(simulation)
        self.reloads += 1

    # -- GpuBackend
    def read(self) -> BackendReading:
        self._reload()
        now = self._clock()
        sim = self.simulation
        util = [0.0] * sim.gpu_count
        used_mib = [0.0] * sim.gpu_count
        processes: list[ProcessUsage] = []
        for proc in (*self._procs, *self._stray):
            wave = 0.75 + 0.25 * math.sin(2 * math.pi * now / sim.period_s + proc.phase)
            sm = proc.compute_pct * proc.load * wave * proc.share
            sm = max(0.0, sm + self._rng.uniform(-1.0, 1.0) * (0.02 * proc.compute_pct))
            memory = (
                proc.memory_mib
                * proc.share
                * (proc.load * (0.9 + 0.1 * math.sin(now / 37.0 + proc.phase)))
            )
            util[proc.gpu] += sm
            used_mib[proc.gpu] += memory
            processes.append(
                ProcessUsage(
                    gpu_uuid=self._identities[proc.gpu].uuid,
                    pid=proc.pid,
                    used_memory_bytes=int(memory * MIB),
                    sm_util_pct=round(sm, 1),
                )
            )
        elapsed = 0.0 if self._state.last is None else max(now - self._state.last, 0.0)
        self._state.last = now
        gpus = []
        reserved = 512.0
        for i, identity in enumerate(self._identities):
            busy = min(util[i], 100.0)
            power = 72.0 + 6.2 * busy
            self._state.energy_mj[i] += power * elapsed * 1000.0
            used = min(used_mib[i] + 4.0, sim.memory_mib - reserved)
            values = {
                contract.DCGM_FI_DEV_GPU_UTIL: round(busy),
                contract.DCGM_FI_DEV_MEM_COPY_UTIL: round(busy * 0.45),
                contract.DCGM_FI_DEV_ENC_UTIL: 0.0,
                contract.DCGM_FI_DEV_DEC_UTIL: 0.0,
                contract.DCGM_FI_DEV_FB_USED: float(int(used)),
                contract.DCGM_FI_DEV_FB_FREE: float(int(sim.memory_mib - reserved - used)),
                contract.DCGM_FI_DEV_FB_RESERVED: reserved,
                contract.DCGM_FI_DEV_GPU_TEMP: round(31 + 0.42 * busy),
                contract.DCGM_FI_DEV_MEMORY_TEMP: round(36 + 0.38 * busy),
                contract.DCGM_FI_DEV_POWER_USAGE: round(power, 3),
                contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION: round(self._state.energy_mj[i]),
                contract.DCGM_FI_DEV_SM_CLOCK: 1980.0 if busy > 1 else 345.0,
                contract.DCGM_FI_DEV_MEM_CLOCK: 2619.0,
                contract.DCGM_FI_DEV_PCIE_REPLAY_COUNTER: 0.0,
                contract.DCGM_FI_DEV_XID_ERRORS: 0.0,
                contract.DCGM_FI_DEV_ECC_SBE_VOL_TOTAL: 0.0,
                contract.DCGM_FI_DEV_ECC_DBE_VOL_TOTAL: 0.0,
                contract.DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS: 0.0,
                contract.DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS: 0.0,
                contract.DCGM_FI_DEV_ROW_REMAP_FAILURE: 0.0,
                contract.DCGM_FI_DEV_CLOCK_THROTTLE_REASONS: 0.0 if busy > 1 else 1.0,
                fields.DCGM_FI_PROF_GR_ENGINE_ACTIVE: round(busy / 100.0, 4),
                fields.DCGM_FI_PROF_PIPE_TENSOR_ACTIVE: round(busy / 100.0 * 0.6, 4),
                fields.DCGM_FI_PROF_DRAM_ACTIVE: round(busy / 100.0 * 0.4, 4),
            }
            gpus.append(
                GpuReading(
                    identity=identity, values=values, memory_total_bytes=sim.memory_mib * MIB
                )
            )
        return BackendReading(gpus=tuple(gpus), processes=tuple(processes))

    def close(self) -> None:
        pass

    # -- PID resolver
    def resolve(self, pid: int) -> ContainerRef | str:
        ref = self._refs.get(pid)
        return ref if ref is not None else "not_a_pod"

    # -- PodSource
    def get(self, uid: str) -> PodMeta | None:
        return self._by_uid.get(uid)

    def pods(self) -> list[PodMeta]:
        return list(self._pods)

    # -- PodResourcesSource
    def gpu_assignments(self) -> Mapping[ContainerKey, tuple[str, ...]]:
        return self._assignments

    @property
    def gpu_uuids(self) -> Sequence[str]:
        return [identity.uuid for identity in self._identities]
