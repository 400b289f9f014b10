"""The production source: PromQL over Prometheus's HTTP API (``/api/v1/query``,
``/api/v1/query_range``).

Each page question is a few concurrent instant or range queries (one per
aggregation), reading the recorded series of ``recording-rules.yaml`` unless
``recording_rules=False``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pydantic_core

from dashboard import queries
from dashboard.model import (
    GPU_MEASURES,
    GpuRow,
    HistoryPoint,
    SliceSample,
    UsageRow,
    gpu_order,
)
from dashboard.sources import Departments, SourceError, SourceUnavailable
from governance import contract

MIB = 1024 * 1024
FLEET_MEASURE = {
    "util": "compute_used",
    "fb_used": "memory_used",
    "memory_limit": "memory_limit",
    "compute_limit": "compute_limit",
    "slices": "slices",
}
"""The figure (:data:`GPU_MEASURES`) each whole-fleet query of
:func:`dashboard.queries.gpu_fleet_parts` reads."""
Sample = tuple[dict[str, str], float]
GPU_SLICES_RULE = next(r for r in queries.GPU_RULES if r.key == "slices")


class PrometheusSource:
    """Reads the console's figures from Prometheus."""

    def __init__(
        self,
        url: str,
        *,
        scrape_interval_s: float = 30.0,
        recording_rules: bool = True,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.scrape_interval_s = scrape_interval_s
        self.recording_rules = recording_rules
        self._client = client or httpx.Client(timeout=timeout_s)

    def describe(self) -> str:
        return f"Prometheus at {self.url}"

    def degraded(self) -> list[str]:
        return []  # Prometheus answers whole or raises SourceError

    def close(self) -> None:
        self._client.close()

    # -- HTTP ------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        try:
            reply = self._client.get(f"{self.url}{path}", params=dict(params))
        except httpx.TransportError as exc:
            raise SourceUnavailable(
                f"cannot reach {self.describe()}: {exc}", source=self.describe()
            ) from exc
        try:
            # pydantic_core's Rust parser: the whole-fleet GPU page decodes 5 replies
            # of 3,000 samples each, several times faster than the json module.
            body = pydantic_core.from_json(reply.content)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else reply.text[:200]
            raise SourceError(
                f"{self.describe()} answered HTTP {reply.status_code}: {detail}",
                source=self.describe(),
            )
        return body["data"]

    def instant(self, query: str) -> list[Sample]:
        data = self._get("/api/v1/query", {"query": query})
        return [(dict(r["metric"]), float(r["value"][1])) for r in data.get("result", [])]

    def range(
        self, query: str, start: datetime, end: datetime, step_s: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        data = self._get(
            "/api/v1/query_range",
            {
                "query": query,
                "start": f"{start.timestamp():.3f}",
                "end": f"{end.timestamp():.3f}",
                "step": f"{max(step_s, 1.0):.0f}s",
            },
        )
        return [
            (dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
            for r in data.get("result", [])
        ]

    def instant_results(
        self, parts: Iterable[tuple[str, str]]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Several instant queries at once: (key, Prometheus's result list) each."""
        items = list(parts)

        def one(item: tuple[str, str]) -> tuple[str, list[dict[str, Any]]]:
            key, query = item
            return key, list(self._get("/api/v1/query", {"query": query}).get("result", []))

        with ThreadPoolExecutor(max_workers=min(8, len(items) or 1)) as pool:
            return list(pool.map(one, items))

    def instant_parts(self, parts: Iterable[tuple[str, str]]) -> list[Sample]:
        """Several instant queries at once, each result tagged ``gpupool_q=key``.

        Concurrent requests rather than one ``or`` of all parts: Prometheus evaluates
        them in parallel, and a union of large vectors is slower than its parts."""
        items = list(parts)

        def one(item: tuple[str, str]) -> list[Sample]:
            key, query = item
            return [({**labels, "gpupool_q": key}, v) for labels, v in self.instant(query)]

        with ThreadPoolExecutor(max_workers=min(8, len(items) or 1)) as pool:
            return [s for chunk in pool.map(one, items) for s in chunk]

    def range_parts(
        self, parts: Iterable[tuple[str, str]], start: datetime, end: datetime, step_s: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        items = list(parts)

        def one(item: tuple[str, str]) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
            key, query = item
            return [
                ({**lab, "gpupool_q": key}, v) for lab, v in self.range(query, start, end, step_s)
            ]

        with ThreadPoolExecutor(max_workers=min(8, len(items) or 1)) as pool:
            return [s for chunk in pool.map(one, items) for s in chunk]

    # -- questions -------------------------------------------------------------------

    def usage(self, departments: Departments, *, per_queue: bool = True) -> list[UsageRow]:
        if departments is not None and not departments:
            return []
        matcher = queries.department_matcher(departments)
        parts = [
            (r.key, queries.rule_query(r, matcher, recorded=self.recording_rules))
            for r in queries.QUEUE_RULES
        ]
        if not per_queue:  # let Prometheus sum, and send 1/N of the series
            parts = [(key, f"sum by (department) ({expr})") for key, expr in parts]
        acc: dict[tuple[str, str, str], dict[str, float]] = {}
        for labels, value in self.instant_parts(parts):
            key = (labels.get("department", ""), labels.get("queue", ""), labels.get("sku", ""))
            acc.setdefault(key, {})[labels["gpupool_q"]] = value
        return [
            UsageRow(
                department=d,
                queue=q,
                sku=s,
                slices=int(v.get("slices", 0)),
                memory_limit_bytes=v.get("memory_limit", 0.0),
                memory_used_bytes=v.get("memory_used", 0.0),
                compute_limit_ratio=v.get("compute_limit", 0.0),
                compute_used_ratio=v.get("compute_used", 0.0),
                idle_slices=int(v.get("idle_slices", 0)),
                idle_memory_bytes=v.get("idle_memory", 0.0),
                idle_compute_ratio=v.get("idle_compute", 0.0),
            )
            for (d, q, s), v in sorted(acc.items())
            if _allowed(d, departments)
        ]

    def gpus(
        self,
        departments: Departments,
        *,
        measures: Collection[str] | None = None,
        uuids: Collection[str] | None = None,
    ) -> list[GpuRow]:
        if departments is not None and not departments:
            return []
        if uuids is not None and not uuids:
            return []
        wanted = set(GPU_MEASURES if measures is None else measures)
        only = queries.uuid_matcher(uuids) if uuids is not None else ""
        if departments is None:
            return self._fleet_gpus(wanted, only)
        # A GPU holds a department's slice when it has a slice count: always read it,
        # so that the rows are the same GPUs whatever else is asked.
        wanted.add("slices")
        matcher = ", ".join(m for m in (queries.department_matcher(departments), only) if m)
        parts = [
            (
                r.key,
                "sum by (UUID, Hostname) ("
                + queries.rule_query(r, matcher, recorded=self.recording_rules)
                + ")",
            )
            for r in queries.GPU_RULES
            if r.key in wanted
        ]
        # The cards' index and model, for the GPUs that hold one of these slices only.
        held = queries.rule_query(GPU_SLICES_RULE, matcher, recorded=self.recording_rules)
        parts.append(("ident", queries.gpu_identity_query(only, held)))
        acc: dict[tuple[str, str], dict[str, float]] = {}
        ident: dict[tuple[str, str], tuple[str, str]] = {}
        for labels, value in self.instant_parts(parts):
            key = (labels.get("Hostname", ""), labels.get("UUID", ""))
            if labels["gpupool_q"] == "ident":
                ident[key] = (labels.get("gpu", ""), labels.get("modelName", ""))
                continue
            acc.setdefault(key, {})[labels["gpupool_q"]] = value
        rows = [
            GpuRow(
                hostname=host,
                gpu=ident.get((host, uuid), ("", ""))[0],
                uuid=uuid,
                model=ident.get((host, uuid), ("", ""))[1],
                memory_limit_bytes=v.get("memory_limit", 0.0),
                compute_limit_ratio=v.get("compute_limit", 0.0),
                memory_used_bytes=v.get("memory_used", 0.0),
                compute_used_ratio=v.get("compute_used", 0.0),
                slices=int(v.get("slices", 0)),
            )
            for (host, uuid), v in acc.items()
            if uuid and "slices" in v
        ]
        rows.sort(key=gpu_order)
        return rows

    def _fleet_gpus(self, wanted: set[str], only: str) -> list[GpuRow]:
        # The whole-fleet GPU page reads (number of GPUs) samples per figure: read them
        # with as little Python per sample as possible (one comprehension per reply, no
        # label copies, no per-sample branches). The utilisation query is always read:
        # its labels name the GPUs (index, model) whatever else is asked.
        parts: dict[str, dict[tuple[str, str], float]] = {}
        ident: dict[tuple[str, str], tuple[str, str]] = {}
        asked = [
            (what, query)
            for what, query in queries.gpu_fleet_parts(only)
            if what == "util" or FLEET_MEASURE[what] in wanted
        ]
        for what, results in self.instant_results(asked):
            parts[what] = {
                (r["metric"].get("Hostname", ""), r["metric"].get("UUID", "")): float(r["value"][1])
                for r in results
            }
            if what == "util":
                ident = {
                    (m.get("Hostname", ""), m.get("UUID", "")): (
                        m.get("gpu", ""),
                        m.get("modelName", ""),
                    )
                    for m in (r["metric"] for r in results)
                }
        keys = sorted(set().union(*parts.values()))
        util = parts.get("util", {})
        fb_used = parts.get("fb_used", {})
        memory_limit = parts.get("memory_limit", {})
        compute_limit = parts.get("compute_limit", {})
        slices = parts.get("slices", {})
        rows = [
            GpuRow(
                hostname=key[0],
                gpu=ident.get(key, ("", ""))[0],
                uuid=key[1],
                model=ident.get(key, ("", ""))[1],
                memory_limit_bytes=memory_limit.get(key, 0.0),
                compute_limit_ratio=compute_limit.get(key, 0.0),
                memory_used_bytes=fb_used.get(key, 0.0) * MIB,
                compute_used_ratio=util.get(key, 0.0) / 100.0,
                slices=int(slices.get(key, 0)),
                util_pct=util.get(key),
            )
            for key in keys
            if key[1]
        ]
        rows.sort(key=gpu_order)
        return rows

    def fleet_utilisation(self) -> tuple[int, float | None]:
        per_gpu = f"max by (UUID, Hostname) ({contract.DCGM_FI_DEV_GPU_UTIL})"
        found = dict(
            (labels["gpupool_q"], value)
            for labels, value in self.instant_parts(
                [("n", f"count({per_gpu})"), ("avg", f"avg({per_gpu})")]
            )
        )
        n = int(found.get("n", 0))
        return n, (found["avg"] if n and "avg" in found else None)

    def waste(self, departments: Departments, limit: int) -> list[SliceSample]:
        if departments is not None and not departments:
            return []
        matcher = queries.department_matcher(departments)
        top = self.instant(queries.waste_query(matcher, limit, recorded=self.recording_rules))
        if not top:
            return []
        pods = "|".join(sorted({queries.regex_escape(lab.get("pod", "")) for lab, _ in top}))
        wanted = {_slice_key(lab) for lab, _ in top}
        samples = self._slices(queries.slices_query(matcher, f'pod=~"{pods}"'), departments)
        found = [s for s in samples if _sample_key(s) in wanted]
        found.sort(key=lambda s: (-s.wasted_memory_bytes, -s.wasted_compute_ratio, s.namespace))
        return found[:limit]

    def slices_on(self, uuid: str, departments: Departments) -> list[SliceSample]:
        if departments is not None and not departments:
            return []
        matcher = queries.department_matcher(departments)
        uuid_matcher = f'UUID="{queries.string_escape(uuid)}"'
        return self._slices(queries.slices_query(matcher, uuid_matcher), departments)

    def _slices(self, query: str, departments: Departments) -> list[SliceSample]:
        acc: dict[tuple[str, ...], dict[str, Any]] = {}
        for labels, value in self.instant(query):
            if not _allowed(labels.get("department", ""), departments):
                continue
            key = _slice_key(labels)
            entry = acc.setdefault(key, {"labels": labels})
            entry[labels.get("__name__", "")] = value
        out = []
        for entry in acc.values():
            lab = entry["labels"]
            out.append(
                SliceSample(
                    namespace=lab.get("namespace", ""),
                    pod=lab.get("pod", ""),
                    container=lab.get("container", ""),
                    department=lab.get("department", ""),
                    queue=lab.get("queue", ""),
                    sku=lab.get("sku", ""),
                    uuid=lab.get("UUID", ""),
                    hostname=lab.get("Hostname", ""),
                    memory_used_bytes=entry.get(queries.SLICE_METRICS[0], 0.0),
                    memory_limit_bytes=entry.get(queries.SLICE_METRICS[1]),
                    compute_used_ratio=entry.get(queries.SLICE_METRICS[2], 0.0),
                    compute_limit_ratio=entry.get(queries.SLICE_METRICS[3]),
                    processes=entry.get(queries.SLICE_METRICS[4], 0.0),
                )
            )
        out.sort(key=lambda s: (s.hostname, s.uuid, s.namespace, s.pod, s.container))
        return out

    def history(
        self, departments: Departments, start: datetime, end: datetime, step_s: float
    ) -> list[HistoryPoint]:
        if departments is not None and not departments:
            return []
        matcher = queries.department_matcher(departments)
        parts = queries.history_parts(matcher, recorded=self.recording_rules)
        acc: dict[float, dict[str, float]] = {}
        for labels, values in self.range_parts(parts, start, end, step_s):
            for t, v in values:
                acc.setdefault(t, {})[labels["gpupool_q"]] = v
        return [
            HistoryPoint(
                at=datetime.fromtimestamp(t, UTC),
                memory_limit_bytes=v.get("memory_limit", 0.0),
                memory_used_bytes=v.get("memory_used", 0.0),
                compute_limit_ratio=v.get("compute_limit", 0.0),
                compute_used_ratio=v.get("compute_used", 0.0),
            )
            for t, v in sorted(acc.items())
        ]


def _allowed(department: str, departments: Departments) -> bool:
    # Belt and braces: the matcher already scoped the query.
    return departments is None or department in departments


def _slice_key(labels: Mapping[str, str]) -> tuple[str, ...]:
    return (
        labels.get("namespace", ""),
        labels.get("pod", ""),
        labels.get("container", ""),
        labels.get("UUID", ""),
    )


def _sample_key(s: SliceSample) -> tuple[str, ...]:
    return (s.namespace, s.pod, s.container, s.uuid)
