"""Values the exporter passes between its parts: backend readings, pods, snapshots.

All frozen: the sampler builds a ``Snapshot`` from one backend reading and publishes it
by swapping one reference; the collector renders whatever snapshot it finds, so a
scrape never waits on the sampler and never sees a half-built reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from governance import contract

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class GpuIdentity:
    """Who a GPU (or a MIG instance of one) is, as dcgm-exporter labels it."""

    index: int
    uuid: str
    model: str
    pci_bus_id: str = ""
    device: str = ""
    """``nvidia<minor>``, as dcgm-exporter's ``device`` label."""
    driver_version: str = ""
    mig_profile: str = ""
    """``GPU_I_PROFILE`` (for example ``1g.10gb``); empty for a whole GPU."""
    mig_instance_id: int | None = None
    """``GPU_I_ID``; None for a whole GPU."""
    mig_uuid: str = ""
    """The MIG device's own UUID (``MIG-...``): what PodResources and processes name."""

    @property
    def is_mig(self) -> bool:
        return self.mig_instance_id is not None

    @property
    def key(self) -> str:
        """The UUID by which processes and device plugins name this device."""
        return self.mig_uuid or self.uuid


@dataclass(frozen=True, kw_only=True)
class GpuReading:
    """One GPU's fields from one sample; a field NVML could not give is absent."""

    identity: GpuIdentity
    values: Mapping[str, float]
    healthy: bool = True
    memory_total_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class ProcessUsage:
    """A process running on a GPU, as NVML lists it."""

    gpu_uuid: str
    """``GpuIdentity.key`` of the device the process runs on."""
    pid: int
    used_memory_bytes: int | None
    """None where NVML answers NVML_VALUE_NOT_AVAILABLE (for example under MPS)."""
    sm_util_pct: float | None = None


@dataclass(frozen=True, kw_only=True)
class CallError:
    """One failed backend call (an NVML function and its return code)."""

    call: str
    code: str
    gpu: str = ""


@dataclass(frozen=True, kw_only=True)
class BackendReading:
    gpus: tuple[GpuReading, ...]
    processes: tuple[ProcessUsage, ...] = ()
    errors: tuple[CallError, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ContainerRef:
    """What a process's cgroup says about it: the pod UID and the container id."""

    pod_uid: str
    container_id: str
    runtime: str = ""


@dataclass(frozen=True, kw_only=True)
class PodMeta:
    """The parts of a pod the exporter needs, read from the node-scoped watch."""

    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    container_ids: Mapping[str, str] = field(default_factory=dict)
    """container id (without the ``containerd://`` scheme) -> container name."""
    phase: str = ""

    @property
    def finished(self) -> bool:
        """A pod that ended holds no GPU: its grant no longer counts as allocated."""
        return self.phase in ("Succeeded", "Failed")

    @property
    def department(self) -> str:
        return self.labels.get(contract.LABEL_DEPARTMENT, "")

    @property
    def queue(self) -> str:
        return self.labels.get(contract.LABEL_QUEUE, "")

    @property
    def sku(self) -> str:
        return self.labels.get(contract.LABEL_SKU, "")


@dataclass(frozen=True, kw_only=True)
class SliceKey:
    namespace: str
    pod: str
    container: str
    department: str
    queue: str
    sku: str
    uuid: str


@dataclass(frozen=True, kw_only=True)
class SliceUsage:
    """One container's share of one GPU: its limit (if granted) and what it uses."""

    key: SliceKey
    memory_used_bytes: int
    compute_utilization_ratio: float
    processes: int
    memory_limit_bytes: int | None = None
    compute_limit_ratio: float | None = None


@dataclass(frozen=True, kw_only=True)
class GpuAllocation:
    uuid: str
    memory_bytes: int
    compute_ratio: float
    slices: int


@dataclass(frozen=True, kw_only=True)
class Unattributed:
    """A GPU process that belongs to no known pod (never dropped)."""

    uuid: str
    pid: int
    reason: str
    memory_used_bytes: int


@dataclass(frozen=True, kw_only=True)
class Attribution:
    slices: tuple[SliceUsage, ...] = ()
    allocations: tuple[GpuAllocation, ...] = ()
    unattributed: tuple[Unattributed, ...] = ()
    misses: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything one scrape renders, built by the sampler from one reading."""

    hostname: str
    taken_at: float
    """Unix time when the sample was taken."""
    sample_seconds: float
    gpus: tuple[GpuReading, ...] = ()
    attribution: Attribution = field(default_factory=Attribution)
    errors_total: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Cumulative backend errors by (call, code)."""
    misses_total: Mapping[str, int] = field(default_factory=dict)
    """Cumulative attribution misses by reason."""
    samples_total: int = 0
