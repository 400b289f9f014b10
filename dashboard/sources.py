"""The one interface behind which the console reads metrics.

Two implementations:

* :class:`dashboard.prometheus.PrometheusSource`: PromQL over Prometheus's HTTP API
  (production; the heavy aggregations come from ``recording-rules.yaml``).
* :class:`dashboard.direct.DirectSource`: scrapes the exporters' ``/metrics`` itself
  and keeps a short history in memory (the embedded default, no Prometheus needed).

Every question takes ``departments``: the departments the viewer may see, or None for
the whole fleet (a platform admin). A source never returns a series of a department
outside that set; the pages check again (:mod:`dashboard.app`).

Exceptions::

    SourceError            the source cannot answer (Prometheus down, bad reply)
    └── SourceUnavailable  it could not be reached at all
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from dashboard.model import GpuRow, HistoryPoint, SliceSample, UsageRow

Departments = frozenset[str] | None
"""The viewer's departments, or None for every department (the whole fleet)."""


class SourceError(Exception):
    """The metrics source failed to answer; ``source`` names it for the page."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


class SourceUnavailable(SourceError):
    """The source could not be reached (connection refused, timeout, DNS)."""


class Source(Protocol):
    """What the pages ask of a metrics source."""

    scrape_interval_s: float
    """How often the data can change: the console never refreshes faster."""

    def describe(self) -> str:
        """A short name for empty and error states, e.g. ``Prometheus at http://...``."""
        ...

    def degraded(self) -> list[str]:
        """What is partly wrong now (an exporter that did not answer), for a warning
        above the figures; [] when all is well."""
        ...

    def usage(self, departments: Departments, *, per_queue: bool = True) -> list[UsageRow]:
        """Allocated, used and idle per (department, queue, SKU), now; with
        ``per_queue=False`` per department only (queue and sku "")."""
        ...

    def gpus(
        self,
        departments: Departments,
        *,
        measures: Collection[str] | None = None,
        uuids: Collection[str] | None = None,
    ) -> list[GpuRow]:
        """Per physical GPU, now, sorted by node then GPU index
        (:func:`dashboard.model.gpu_order`). With ``departments`` set, only GPUs holding
        one of their slices, with figures summed over those slices only (no whole-card
        data), but with the GPU's index and model (what identifies a card is no
        tenant's secret).

        ``measures`` (names from :data:`dashboard.model.GPU_MEASURES`; None for all)
        says which figures the caller needs; a source may leave the others 0, and
        reads less (the GPU table of a large fleet reads every GPU for the column it
        sorts by, then the rest for the 20 GPUs on the page). ``uuids`` restricts the
        answer to those GPUs."""
        ...

    def fleet_utilisation(self) -> tuple[int, float | None]:
        """(GPUs reporting, their average DCGM_FI_DEV_GPU_UTIL in percent or None):
        the figure a GPU cloud is judged by. Whole fleet only (platform admins)."""
        ...

    def waste(self, departments: Departments, limit: int) -> list[SliceSample]:
        """The idle slices holding the most memory, most wasteful first."""
        ...

    def slices_on(self, uuid: str, departments: Departments) -> list[SliceSample]:
        """The slices placed on the GPU ``uuid`` (only the viewer's)."""
        ...

    def history(
        self, departments: Departments, start: datetime, end: datetime, step_s: float
    ) -> list[HistoryPoint]:
        """Allocated vs used over time, summed over ``departments``."""
        ...
