"""The names every gpupool component shares: the project's public wire contract.

The webhook writes these labels and annotations on pods, the exporter reads them back
and turns them into Prometheus labels, the console queries the resulting series. A
change here is a breaking change for running clusters and for users' dashboards and
alerts: make it on purpose, with a test (``tests/unit/test_contract.py`` pins them).

This module imports only the standard library (the exporter imports it on GPU nodes
where SQLAlchemy and Casbin are not installed). The prose of the wire format is in
``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------------------
# Pod metadata written by the webhook
# --------------------------------------------------------------------------------------

PREFIX = "gpupool.io/"

LABEL_DEPARTMENT = "gpupool.io/department"
LABEL_QUEUE = "gpupool.io/queue"
LABEL_SKU = "gpupool.io/sku"

ANNOTATION_ALLOCATION_ID = "gpupool.io/allocation-id"
"""The ledger key. Pods created with generateName have no name at admission time."""

ANNOTATION_SLICES = "gpupool.io/slices"
"""JSON: ``{container name: SliceGrant}`` of what each container was granted."""

SKU_CUSTOM = "custom"
"""The ``gpupool.io/sku`` label value of a HAMi-form request that names no SKU."""

# --------------------------------------------------------------------------------------
# Resource names a user writes (and that data planes understand)
# --------------------------------------------------------------------------------------

RESOURCE_NVIDIA_GPU = "nvidia.com/gpu"
RESOURCE_HAMI_GPUMEM = "nvidia.com/gpumem"
"""HAMi: GPU memory per GPU, in MiB."""
RESOURCE_HAMI_GPUMEM_PERCENTAGE = "nvidia.com/gpumem-percentage"
RESOURCE_HAMI_GPUCORES = "nvidia.com/gpucores"
"""HAMi: percent of the GPU's compute per GPU."""
SKU_RESOURCE_PREFIX = PREFIX
"""A SKU's own extended resource: ``gpupool.io/<sku>: N`` asks for N slices of it."""


def sku_resource(sku: str) -> str:
    """The extended resource name by which a container asks for slices of ``sku``."""
    return f"{SKU_RESOURCE_PREFIX}{sku}"


# --------------------------------------------------------------------------------------
# The slices annotation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SliceGrant:
    """What one container was granted, as written in ``gpupool.io/slices``.

    ``memory_mib`` and ``compute_pct`` are per GPU; the container holds ``count`` x
    ``gpus_per_slice`` GPUs of that shape.
    """

    count: int
    memory_mib: int
    compute_pct: int
    backend: str
    pool: str
    sku: str
    gpus_per_slice: int = 1

    @property
    def gpus(self) -> int:
        return self.count * self.gpus_per_slice

    @property
    def total_memory_mib(self) -> int:
        return self.memory_mib * self.gpus

    @property
    def total_compute_pct(self) -> int:
        return self.compute_pct * self.gpus

    def as_dict(self) -> dict[str, int | str]:
        """The fields, as written in the annotation (dataclasses.asdict, without its
        deep copy: this runs for every admitted pod)."""
        return {
            "count": self.count,
            "memory_mib": self.memory_mib,
            "compute_pct": self.compute_pct,
            "backend": self.backend,
            "pool": self.pool,
            "sku": self.sku,
            "gpus_per_slice": self.gpus_per_slice,
        }


_SLICES_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
"""What ``json.dumps(..., separators=(",", ":"), sort_keys=True)`` uses, built once:
``json.dumps`` builds a new encoder on every call that passes options."""


def dump_slices(grants: dict[str, SliceGrant]) -> str:
    """Serialise ``{container: grant}`` for the ``gpupool.io/slices`` annotation."""
    return _SLICES_ENCODER.encode({name: grant.as_dict() for name, grant in sorted(grants.items())})


_GRANT_FIELDS: dict[str, type] = {
    "count": int,
    "memory_mib": int,
    "compute_pct": int,
    "backend": str,
    "pool": str,
    "sku": str,
    "gpus_per_slice": int,
}


class SlicesAnnotationError(ValueError):
    """The ``gpupool.io/slices`` annotation is not what the webhook writes."""


def load_slices(text: str) -> dict[str, SliceGrant]:
    """Parse the ``gpupool.io/slices`` annotation; raise SlicesAnnotationError."""
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise SlicesAnnotationError(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SlicesAnnotationError("expected a JSON object of container -> grant")
    grants: dict[str, SliceGrant] = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise SlicesAnnotationError(f"container {name!r}: expected an object")
        fields: dict[str, Any] = {}
        for key, kind in _GRANT_FIELDS.items():
            if key not in value:
                if key == "gpus_per_slice":
                    continue
                raise SlicesAnnotationError(f"container {name!r}: missing {key!r}")
            item = value[key]
            # exact types: bool is an int subclass, and a float or a numeric string is
            # never what the webhook writes
            if type(item) is not kind:
                raise SlicesAnnotationError(
                    f"container {name!r}: {key!r} must be {kind.__name__}, got {item!r}"
                )
            fields[key] = item
        grants[str(name)] = SliceGrant(**fields)
    return grants


# --------------------------------------------------------------------------------------
# Reason codes: every admission decision carries one (metrics label, tests, messages)
# --------------------------------------------------------------------------------------


class Reason(enum.StrEnum):
    """Machine-readable reason of an admission or quota decision."""

    ADMITTED = "Admitted"
    NOT_GPU = "NotGPU"
    # 403: policy
    FORBIDDEN = "Forbidden"
    QUEUE_QUOTA_EXCEEDED = "QueueQuotaExceeded"
    BORROWING_LIMIT_EXCEEDED = "BorrowingLimitExceeded"
    DEPARTMENT_QUOTA_EXCEEDED = "DepartmentQuotaExceeded"
    SKU_QUOTA_EXCEEDED = "SkuQuotaExceeded"
    POOL_QUOTA_EXCEEDED = "PoolQuotaExceeded"
    POOL_CAPACITY_EXCEEDED = "PoolCapacityExceeded"
    NAMESPACE_NOT_OWNED = "NamespaceNotOwned"
    # 422: invalid request
    INVALID_REQUEST = "InvalidRequest"
    UNKNOWN_SKU = "UnknownSKU"
    UNKNOWN_QUEUE = "UnknownQueue"
    SKU_NOT_OFFERED = "SKUNotOffered"
    QUEUE_OF_OTHER_DEPARTMENT = "QueueOfOtherDepartment"
    IMMUTABLE_GPU_FIELDS = "ImmutableGPUFields"
    # 500-ish: the platform
    STORE_UNAVAILABLE = "StoreUnavailable"
    NO_ORGANISATION = "NoOrganisation"
    INTERNAL_ERROR = "InternalError"
    MALFORMED_REVIEW = "MalformedAdmissionReview"
    # the webhook's HTTP edge, before any decision
    UNAUTHENTICATED = "Unauthenticated"
    """The caller presented no client certificate that the webhook's --client-ca signed."""
    REQUEST_TIMEOUT = "RequestTimeout"
    """The request's body did not arrive within the webhook's read timeout."""
    OVERLOADED = "Overloaded"
    """The webhook holds as many request bodies as its memory bound allows."""

    @property
    def http_code(self) -> int:
        return _HTTP_CODES.get(self, 403)


_HTTP_CODES = {
    Reason.ADMITTED: 200,
    Reason.NOT_GPU: 200,
    Reason.INVALID_REQUEST: 422,
    Reason.UNKNOWN_SKU: 422,
    Reason.UNKNOWN_QUEUE: 422,
    Reason.SKU_NOT_OFFERED: 422,
    Reason.QUEUE_OF_OTHER_DEPARTMENT: 422,
    Reason.IMMUTABLE_GPU_FIELDS: 422,
    Reason.STORE_UNAVAILABLE: 503,
    Reason.NO_ORGANISATION: 503,
    Reason.INTERNAL_ERROR: 500,
    Reason.MALFORMED_REVIEW: 400,
    Reason.UNAUTHENTICATED: 401,
    Reason.REQUEST_TIMEOUT: 408,
    Reason.OVERLOADED: 503,
}

# --------------------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------------------

# dcgm-exporter's field names, exactly as it writes them (etc/default-counters.csv).
DCGM_FI_DEV_SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"
DCGM_FI_DEV_MEM_CLOCK = "DCGM_FI_DEV_MEM_CLOCK"
DCGM_FI_DEV_GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
DCGM_FI_DEV_MEMORY_TEMP = "DCGM_FI_DEV_MEMORY_TEMP"
DCGM_FI_DEV_POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
DCGM_FI_DEV_PCIE_REPLAY_COUNTER = "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"
DCGM_FI_DEV_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_FI_DEV_MEM_COPY_UTIL = "DCGM_FI_DEV_MEM_COPY_UTIL"
DCGM_FI_DEV_ENC_UTIL = "DCGM_FI_DEV_ENC_UTIL"
DCGM_FI_DEV_DEC_UTIL = "DCGM_FI_DEV_DEC_UTIL"
DCGM_FI_DEV_XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
DCGM_FI_DEV_FB_FREE = "DCGM_FI_DEV_FB_FREE"
DCGM_FI_DEV_FB_USED = "DCGM_FI_DEV_FB_USED"
DCGM_FI_DEV_FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
DCGM_FI_DEV_ECC_SBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
DCGM_FI_DEV_ECC_DBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"
DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"
DCGM_FI_DEV_ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS = "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"

# dcgm-exporter's labels
DCGM_LABEL_GPU = "gpu"
DCGM_LABEL_UUID = "UUID"
DCGM_LABEL_DEVICE = "device"
DCGM_LABEL_MODEL_NAME = "modelName"
DCGM_LABEL_HOSTNAME = "Hostname"
DCGM_LABEL_GPU_I_PROFILE = "GPU_I_PROFILE"
DCGM_LABEL_GPU_I_ID = "GPU_I_ID"
DCGM_LABELS = (
    DCGM_LABEL_GPU,
    DCGM_LABEL_UUID,
    DCGM_LABEL_DEVICE,
    DCGM_LABEL_MODEL_NAME,
    DCGM_LABEL_HOSTNAME,
)

# Per-slice series (exporter), labelled with SLICE_LABELS.
METRIC_SLICE_MEMORY_USED_BYTES = "gpupool_slice_memory_used_bytes"
METRIC_SLICE_MEMORY_LIMIT_BYTES = "gpupool_slice_memory_limit_bytes"
METRIC_SLICE_COMPUTE_UTILIZATION_RATIO = "gpupool_slice_compute_utilization_ratio"
METRIC_SLICE_COMPUTE_LIMIT_RATIO = "gpupool_slice_compute_limit_ratio"
METRIC_SLICE_PROCESSES = "gpupool_slice_processes"
SLICE_LABELS = (
    "namespace",
    "pod",
    "container",
    "department",
    "queue",
    "sku",
    DCGM_LABEL_UUID,
    DCGM_LABEL_HOSTNAME,
)

# Per-GPU allocation series (exporter): the sum of slice limits placed on each GPU.
METRIC_GPU_ALLOCATED_MEMORY_BYTES = "gpupool_gpu_allocated_memory_bytes"
METRIC_GPU_ALLOCATED_COMPUTE_RATIO = "gpupool_gpu_allocated_compute_ratio"
METRIC_GPU_ALLOCATED_SLICES = "gpupool_gpu_allocated_slices"

# GPU processes that belong to no known pod.
METRIC_UNATTRIBUTED_MEMORY_USED_BYTES = "gpupool_unattributed_memory_used_bytes"
METRIC_UNATTRIBUTED_PROCESSES = "gpupool_unattributed_processes"

# Admission (webhook)
METRIC_ADMISSION_REQUESTS_TOTAL = "gpupool_admission_requests_total"
"""Counter, labels: operation, decision (allowed|denied), reason."""
METRIC_ADMISSION_DURATION_SECONDS = "gpupool_admission_duration_seconds"
METRIC_ADMISSION_LEDGER_COMMITS_TOTAL = "gpupool_admission_ledger_commits_total"
"""Counter, label writer (loop|thread): ledger transactions of the group commit."""
METRIC_ADMISSION_LEDGER_WRITES_TOTAL = "gpupool_admission_ledger_writes_total"
"""Counter, label writer: reservations and denials those transactions carried (the
ratio of the two rates is the mean group size)."""

# Quota (webhook / governance): labels department, queue ("" for the department
# itself), resource (one of QUOTA_RESOURCES).
METRIC_QUOTA_USED = "gpupool_quota_used"
METRIC_QUOTA_LIMIT = "gpupool_quota_limit"
"""Absent for an unlimited quota (no limit is not 0)."""
QUOTA_RESOURCES = ("slices", "memory_mib", "compute_pct")

DEFAULT_WEBHOOK_PORT = 8443
DEFAULT_EXPORTER_PORT = 9400
DEFAULT_DASHBOARD_PORT = 8050

ENTRY_POINT_GROUP = "gpupool.commands"
"""Python entry-point group through which components add `gpupool` subcommands."""
