"""What the console shows, as values: rows that every data source returns.

Both sources (:mod:`dashboard.prometheus` over PromQL, :mod:`dashboard.direct` from
exporter scrapes) answer the questions of :class:`dashboard.sources.Source` with these
frozen dataclasses, so that the pages (:mod:`dashboard.views`) never know where the
numbers came from. The pure aggregation over raw per-slice samples used by the direct
source lives here too, next to the definition of an idle slice that the PromQL of
:mod:`dashboard.queries` mirrors.

Units: memory in bytes, compute as a ratio of one whole GPU (1.0 = a card), as the
exporter writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

IDLE_FRACTION = 0.05
"""A slice is idle when its processes use less than this fraction of the compute it
was granted (dcgm-style SM utilisation over the compute limit). Idle slices that hold
an allocation are the console's "waste"."""


@dataclass(frozen=True, kw_only=True)
class SliceSample:
    """One slice on one GPU: the labels and values of the ``gpupool_slice_*`` series."""

    namespace: str
    pod: str
    container: str
    department: str
    queue: str
    sku: str
    uuid: str
    hostname: str
    memory_used_bytes: float = 0.0
    memory_limit_bytes: float | None = None
    compute_used_ratio: float = 0.0
    compute_limit_ratio: float | None = None
    processes: float = 0.0

    @property
    def idle(self) -> bool:
        """Allocated but unused: only a slice with a compute grant can be idle."""
        if self.compute_limit_ratio is None:
            return False
        return self.compute_used_ratio < IDLE_FRACTION * self.compute_limit_ratio

    @property
    def wasted_memory_bytes(self) -> float:
        return (self.memory_limit_bytes or 0.0) if self.idle else 0.0

    @property
    def wasted_compute_ratio(self) -> float:
        return (self.compute_limit_ratio or 0.0) if self.idle else 0.0


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    """Allocation and use of one (department, queue, SKU), summed over its slices."""

    department: str
    queue: str
    sku: str
    slices: int
    """Slice placements: a slice spanning two GPUs counts twice."""
    memory_limit_bytes: float
    memory_used_bytes: float
    compute_limit_ratio: float
    compute_used_ratio: float
    idle_slices: int
    idle_memory_bytes: float
    idle_compute_ratio: float


@dataclass(frozen=True, kw_only=True)
class GpuRow:
    """One physical GPU. Whole-card DCGM figures (``util_pct``, ``fb_*``) are None when
    the viewer may not see the whole card (a department sees only its own slices)."""

    hostname: str
    gpu: str
    uuid: str
    model: str
    memory_limit_bytes: float
    """Allocated memory: the sum of the memory limits of the slices on this GPU."""
    compute_limit_ratio: float
    memory_used_bytes: float
    compute_used_ratio: float
    slices: int
    util_pct: float | None = None
    fb_total_bytes: float | None = None
    """The card's memory (DCGM used + free): the direct source's scrape has it; the
    Prometheus source does not ask for it (no page shows it), so leaves it None."""


def gpu_index(gpu: str) -> int:
    """The GPU's index on its node as a number (``"10"`` after ``"9"``); unknown last."""
    return int(gpu) if gpu.isdigit() else 1 << 30


def gpu_order(row: GpuRow) -> tuple[str, int, str]:
    """How every source sorts GPUs: by node, then index on the node (then UUID)."""
    return (row.hostname, gpu_index(row.gpu), row.uuid)


GPU_MEASURES = ("slices", "memory_limit", "memory_used", "compute_limit", "compute_used")
"""The figures of a :class:`GpuRow` a source can be asked for one by one (``gpus(...,
measures=...)``): the slices, allocated memory, used memory, allocated compute and
used compute (``util_pct`` too, for whole cards)."""


@dataclass(frozen=True, kw_only=True)
class HistoryPoint:
    """Allocated and used, summed over the viewer's departments, at one instant."""

    at: datetime
    memory_limit_bytes: float
    memory_used_bytes: float
    compute_limit_ratio: float
    compute_used_ratio: float


def usage_rows(slices: Iterable[SliceSample]) -> list[UsageRow]:
    """Sum per-slice samples per (department, queue, SKU), as the PromQL does."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for s in slices:
        key = (s.department, s.queue, s.sku)
        row = acc.setdefault(key, [0.0] * 8)
        if s.memory_limit_bytes is not None:
            row[0] += 1
        row[1] += s.memory_limit_bytes or 0.0
        row[2] += s.memory_used_bytes
        row[3] += s.compute_limit_ratio or 0.0
        row[4] += s.compute_used_ratio
        if s.idle:
            row[5] += 1
            row[6] += s.wasted_memory_bytes
            row[7] += s.wasted_compute_ratio
    return [_usage_row(key, v) for key, v in sorted(acc.items())]


def _usage_row(key: tuple[str, str, str], v: list[float]) -> UsageRow:
    """The row of (department, queue, SKU) from its sums, in :class:`UsageRow`'s order."""
    department, queue, sku = key
    return UsageRow(
        department=department,
        queue=queue,
        sku=sku,
        slices=int(v[0]),
        memory_limit_bytes=v[1],
        memory_used_bytes=v[2],
        compute_limit_ratio=v[3],
        compute_used_ratio=v[4],
        idle_slices=int(v[5]),
        idle_memory_bytes=v[6],
        idle_compute_ratio=v[7],
    )


def per_department(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Rows summed per department (queue and sku "")."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        v = acc.setdefault(r.department, [0.0] * 8)
        for i, x in enumerate(
            (
                r.slices,
                r.memory_limit_bytes,
                r.memory_used_bytes,
                r.compute_limit_ratio,
                r.compute_used_ratio,
                r.idle_slices,
                r.idle_memory_bytes,
                r.idle_compute_ratio,
            )
        ):
            v[i] += x
    return [_usage_row((d, "", ""), v) for d, v in sorted(acc.items())]


def top_waste(slices: Iterable[SliceSample], limit: int) -> list[SliceSample]:
    """The idle slices that hold the most memory (then compute), most wasteful first."""
    idle = [s for s in slices if s.idle]
    idle.sort(key=lambda s: (-s.wasted_memory_bytes, -s.wasted_compute_ratio, s.namespace, s.pod))
    return idle[:limit]
