"""The embedded source: scrape the exporters' ``/metrics`` directly, no Prometheus.

:class:`DirectSource` keeps the newest scrape of every exporter (refreshed at most once
per scrape interval, by :meth:`DirectSource.refresh` or the background
:meth:`DirectSource.start`) and an in-memory history of per-department totals, one
point per scrape, for the "over time" plots. Parsing is pure (:func:`parse_exposition`)
and the aggregation is :mod:`dashboard.model`'s, which the PromQL mirrors.

An exporter that does not answer does not blank the console: its GPUs are missing and
:attr:`Snapshot.errors` says which exporter failed and why; only when every exporter
failed does a question raise :class:`~dashboard.sources.SourceUnavailable`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dashboard import model
from dashboard.model import GpuRow, HistoryPoint, SliceSample, UsageRow
from dashboard.sources import Departments, SourceError, SourceUnavailable
from governance import contract

log = logging.getLogger(__name__)

MIB = 1024 * 1024
HISTORY_SECONDS = 7 * 24 * 3600

_SLICE_FIELDS = {
    contract.METRIC_SLICE_MEMORY_USED_BYTES: "memory_used_bytes",
    contract.METRIC_SLICE_MEMORY_LIMIT_BYTES: "memory_limit_bytes",
    contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO: "compute_used_ratio",
    contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO: "compute_limit_ratio",
    contract.METRIC_SLICE_PROCESSES: "processes",
}
_GPU_FIELDS = {
    contract.DCGM_FI_DEV_GPU_UTIL: "util",
    contract.DCGM_FI_DEV_FB_USED: "fb_used",
    contract.DCGM_FI_DEV_FB_FREE: "fb_free",
    contract.METRIC_GPU_ALLOCATED_MEMORY_BYTES: "memory_limit",
    contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO: "compute_limit",
    contract.METRIC_GPU_ALLOCATED_SLICES: "slices",
}


@dataclass(frozen=True, kw_only=True)
class Exposition:
    """What one scrape said: per-slice samples and per-GPU rows (whole-card view)."""

    slices: tuple[SliceSample, ...]
    gpus: tuple[GpuRow, ...]


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    taken_at: datetime
    slices: tuple[SliceSample, ...]
    gpus: tuple[GpuRow, ...]
    errors: dict[str, str] = field(default_factory=dict)
    """Exporter URL -> why its scrape failed."""


def parse_exposition(text: str) -> Exposition:
    """Slices and GPUs of one exporter's ``/metrics`` text (pure)."""
    slice_values: dict[tuple[str, ...], dict[str, Any]] = {}
    gpu_values: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(_wanted_lines(text)):
        for sample in family.samples:
            name = sample.name
            labels = sample.labels
            if name in _SLICE_FIELDS:
                key = tuple(labels.get(k, "") for k in contract.SLICE_LABELS)
                slice_values.setdefault(key, {})[_SLICE_FIELDS[name]] = float(sample.value)
            elif name in _GPU_FIELDS:
                gkey = (
                    labels.get(contract.DCGM_LABEL_HOSTNAME, ""),
                    labels.get(contract.DCGM_LABEL_UUID, ""),
                )
                entry = gpu_values.setdefault(gkey, {})
                what = _GPU_FIELDS[name]
                if what == "util":
                    # MIG instances report per instance: keep the busiest, as PromQL max.
                    entry["util"] = max(entry.get("util", 0.0), float(sample.value))
                    entry["gpu"] = labels.get(contract.DCGM_LABEL_GPU, "")
                    entry["model"] = labels.get(contract.DCGM_LABEL_MODEL_NAME, "")
                else:
                    entry[what] = entry.get(what, 0.0) + float(sample.value)
    slices = tuple(_slice(key, values) for key, values in sorted(slice_values.items()))
    gpus = tuple(_gpu_row(host, uuid, v) for (host, uuid), v in sorted(gpu_values.items()) if uuid)
    return Exposition(slices=slices, gpus=gpus)


_WANTED = frozenset(_SLICE_FIELDS) | frozenset(_GPU_FIELDS)


def _wanted_lines(text: str) -> str:
    """Only the families the console reads: an exporter also writes clocks,
    temperatures, power, ECC... and parsing costs per sample."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2] in _WANTED:
                kept.append(line)
        elif line.split("{", 1)[0].split(" ", 1)[0] in _WANTED:
            kept.append(line)
    kept.append("")
    return "\n".join(kept)


def _slice(key: tuple[str, ...], v: dict[str, Any]) -> SliceSample:
    namespace, pod, container, department, queue, sku, uuid, hostname = key
    return SliceSample(
        namespace=namespace,
        pod=pod,
        container=container,
        department=department,
        queue=queue,
        sku=sku,
        uuid=uuid,
        hostname=hostname,
        memory_used_bytes=float(v.get("memory_used_bytes", 0.0)),
        memory_limit_bytes=v.get("memory_limit_bytes"),
        compute_used_ratio=float(v.get("compute_used_ratio", 0.0)),
        compute_limit_ratio=v.get("compute_limit_ratio"),
        processes=float(v.get("processes", 0.0)),
    )


def _gpu_row(host: str, uuid: str, v: dict[str, Any]) -> GpuRow:
    fb_used = v.get("fb_used")
    fb_free = v.get("fb_free")
    total = None if fb_used is None else (fb_used + (fb_free or 0.0)) * MIB
    util = v.get("util")
    return GpuRow(
        hostname=host,
        gpu=str(v.get("gpu", "")),
        uuid=uuid,
        model=str(v.get("model", "")),
        memory_limit_bytes=float(v.get("memory_limit", 0.0)),
        compute_limit_ratio=float(v.get("compute_limit", 0.0)),
        memory_used_bytes=float(fb_used or 0.0) * MIB,
        compute_used_ratio=float(util or 0.0) / 100.0,
        slices=int(v.get("slices", 0)),
        util_pct=util,
        fb_total_bytes=total,
    )


def scoped_gpus(slices: Iterable[SliceSample]) -> list[GpuRow]:
    """Per-GPU rows summed over the given slices only (a department's view)."""
    acc: dict[tuple[str, str], list[float]] = {}
    for s in slices:
        if not s.uuid:
            continue
        row = acc.setdefault((s.hostname, s.uuid), [0.0] * 5)
        row[0] += s.memory_limit_bytes or 0.0
        row[1] += s.compute_limit_ratio or 0.0
        row[2] += s.memory_used_bytes
        row[3] += s.compute_used_ratio
        row[4] += 1 if s.memory_limit_bytes is not None else 0
    return [
        GpuRow(
            hostname=host,
            gpu="",
            uuid=uuid,
            model="",
            memory_limit_bytes=v[0],
            compute_limit_ratio=v[1],
            memory_used_bytes=v[2],
            compute_used_ratio=v[3],
            slices=int(v[4]),
        )
        for (host, uuid), v in sorted(acc.items())
    ]


def _identified(row: GpuRow, card: GpuRow | None) -> GpuRow:
    """``row`` (a department's share of a GPU) with the card's index and model."""
    if card is None:
        return row
    return dataclasses.replace(row, gpu=card.gpu, model=card.model)


Fetch = Callable[[str], str]


class DirectSource:
    """Scrapes exporters; answers from the newest scrape and an in-memory history."""

    def __init__(
        self,
        exporters: Sequence[str],
        *,
        scrape_interval_s: float = 15.0,
        timeout_s: float = 5.0,
        fetch: Fetch | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        history_seconds: float = HISTORY_SECONDS,
    ) -> None:
        if not exporters:
            raise ValueError("DirectSource needs at least one exporter URL")
        self.exporters = [_metrics_url(u) for u in exporters]
        self.scrape_interval_s = scrape_interval_s
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._fetch = fetch or self._http_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        maxlen = max(2, int(history_seconds / max(scrape_interval_s, 1.0)))
        self._history: deque[tuple[datetime, dict[str, tuple[float, float, float, float]]]]
        self._history = deque(maxlen=maxlen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        n = len(self.exporters)
        return f"{n} exporter{'s' if n != 1 else ''} scraped directly ({self.exporters[0]}" + (
            ", ...)" if n > 1 else ")"
        )

    # -- scraping --------------------------------------------------------------------

    def _http_fetch(self, url: str) -> str:
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout_s)
        reply = self._client.get(url)
        reply.raise_for_status()
        return reply.text

    def _scrape_one(self, url: str) -> Exposition | str:
        try:
            return parse_exposition(self._fetch(url))
        except httpx.HTTPStatusError as exc:
            return f"HTTP {exc.response.status_code}"
        except httpx.TransportError as exc:
            return f"unreachable: {exc}"
        except ValueError as exc:
            return f"not Prometheus exposition text: {exc}"

    def refresh(self) -> Snapshot:
        """Scrape every exporter now (in parallel) and record a history point."""
        workers = min(16, len(self.exporters))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(self._scrape_one, self.exporters))
        slices: list[SliceSample] = []
        gpus: list[GpuRow] = []
        errors: dict[str, str] = {}
        for url, result in zip(self.exporters, results, strict=True):
            if isinstance(result, str):
                errors[url] = result
            else:
                slices.extend(result.slices)
                gpus.extend(result.gpus)
        gpus.sort(key=model.gpu_order)  # as every source answers
        snap = Snapshot(
            taken_at=self._clock(), slices=tuple(slices), gpus=tuple(gpus), errors=errors
        )
        per_dept: dict[str, tuple[float, float, float, float]] = {}
        for row in model.usage_rows(slices):
            a, b, c, d = per_dept.get(row.department, (0.0, 0.0, 0.0, 0.0))
            per_dept[row.department] = (
                a + row.memory_limit_bytes,
                b + row.memory_used_bytes,
                c + row.compute_limit_ratio,
                d + row.compute_used_ratio,
            )
        with self._lock:
            self._snapshot = snap
            if len(errors) < len(self.exporters):
                self._history.append((snap.taken_at, per_dept))
        return snap

    def snapshot(self) -> Snapshot:
        """The newest scrape; scrapes now if there is none, or if it is older than the
        scrape interval and no background scraper runs (:meth:`start`). Raises
        SourceUnavailable when every exporter failed."""
        with self._lock:
            snap = self._snapshot
        now = self._clock()
        stale = snap is None or (now - snap.taken_at).total_seconds() >= self.scrape_interval_s
        # With the background scraper running, a request never waits for a scrape
        # (parsing a large fleet's text takes seconds): it reads the newest one.
        if snap is None or (stale and self._thread is None):
            snap = self.refresh()
        if snap.errors and len(snap.errors) == len(self.exporters):
            first = next(iter(snap.errors.items()))
            raise SourceUnavailable(
                f"no exporter answered ({first[0]}: {first[1]})", source=self.describe()
            )
        return snap

    def start(self) -> None:
        """Scrape in the background every scrape interval (so history accumulates)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.refresh()
                except Exception:  # a failed round must not end the loop
                    log.exception("direct scrape round failed")
                self._stop.wait(self.scrape_interval_s)

        self._thread = threading.Thread(target=loop, name="gpupool-direct-scrape", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._client is not None:
            self._client.close()

    # -- questions -------------------------------------------------------------------

    def degraded(self) -> list[str]:
        with self._lock:
            snap = self._snapshot
        if snap is None or not snap.errors or len(snap.errors) == len(self.exporters):
            return []  # all well, or all down (SourceUnavailable says so)
        failed = "; ".join(f"{url}: {why}" for url, why in sorted(snap.errors.items()))
        return [
            f"{len(snap.errors)} of {len(self.exporters)} exporters did not answer the last "
            f"scrape; their GPUs are missing from the figures ({failed})."
        ]

    def _slices(self, departments: Departments) -> list[SliceSample]:
        slices = self.snapshot().slices
        if departments is None:
            return list(slices)
        return [s for s in slices if s.department in departments]

    def usage(self, departments: Departments, *, per_queue: bool = True) -> list[UsageRow]:
        rows = model.usage_rows(self._slices(departments))
        return rows if per_queue else model.per_department(rows)

    def gpus(
        self,
        departments: Departments,
        *,
        measures: Collection[str] | None = None,
        uuids: Collection[str] | None = None,
    ) -> list[GpuRow]:
        # Every figure is in memory already: ``measures`` saves nothing here.
        snapshot = self.snapshot()
        if departments is None:
            rows = list(snapshot.gpus)
        else:
            known = {(g.hostname, g.uuid): g for g in snapshot.gpus}
            rows = [
                _identified(g, known.get((g.hostname, g.uuid)))
                for g in scoped_gpus(self._slices(departments))
            ]
            rows.sort(key=model.gpu_order)
        if uuids is not None:
            wanted = set(uuids)
            rows = [g for g in rows if g.uuid in wanted]
        return rows

    def fleet_utilisation(self) -> tuple[int, float | None]:
        utils = [g.util_pct for g in self.snapshot().gpus if g.util_pct is not None]
        return len(utils), (sum(utils) / len(utils) if utils else None)

    def waste(self, departments: Departments, limit: int) -> list[SliceSample]:
        return model.top_waste(self._slices(departments), limit)

    def slices_on(self, uuid: str, departments: Departments) -> list[SliceSample]:
        return [s for s in self._slices(departments) if s.uuid == uuid]

    def history(
        self, departments: Departments, start: datetime, end: datetime, step_s: float
    ) -> list[HistoryPoint]:
        self.snapshot()  # at least one point, and the error state if all are down
        # The scrape this very request triggered is a little newer than ``end``.
        until = end + timedelta(seconds=self.scrape_interval_s)
        with self._lock:
            points = [(t, d) for t, d in self._history if start <= t <= until]
        out: list[HistoryPoint] = []
        last: datetime | None = None
        for at, per_dept in points:
            if last is not None and (at - last).total_seconds() < step_s * 0.999:
                continue  # thin to at most one point per step
            last = at
            totals = [0.0, 0.0, 0.0, 0.0]
            for dept, values in per_dept.items():
                if departments is None or dept in departments:
                    for i in range(4):
                        totals[i] += values[i]
            out.append(
                HistoryPoint(
                    at=at,
                    memory_limit_bytes=totals[0],
                    memory_used_bytes=totals[1],
                    compute_limit_ratio=totals[2],
                    compute_used_ratio=totals[3],
                )
            )
        return out


def _metrics_url(url: str) -> str:
    url = url.rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url if url.endswith("/metrics") else f"{url}/metrics"


__all__ = ["DirectSource", "Exposition", "Snapshot", "SourceError", "parse_exposition"]
