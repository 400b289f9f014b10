"""The webhook's Prometheus metrics, on a registry passed in (no global state).

- ``gpupool_admission_requests_total{operation, decision, reason}``: every answer;
- ``gpupool_admission_duration_seconds{operation}``: time from body read to answer;
- ``gpupool_quota_used`` / ``gpupool_quota_limit{department, queue, resource}``: read
  from the ledger at scrape time by :class:`QuotaCollector` (queue ``""`` is the
  department itself; an unlimited quota has no limit series, because no limit is not 0);
- ``gpupool_admission_ledger_commits_total{writer}`` and
  ``gpupool_admission_ledger_writes_total{writer}``: the group commit's transactions and
  the writes they carried, for the loop (SQLite) and thread writers
  (:class:`WriterCollector`); writes over commits is the mean group size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from governance.contract import (
    METRIC_ADMISSION_DURATION_SECONDS,
    METRIC_ADMISSION_LEDGER_COMMITS_TOTAL,
    METRIC_ADMISSION_LEDGER_WRITES_TOTAL,
    METRIC_ADMISSION_REQUESTS_TOTAL,
    METRIC_QUOTA_LIMIT,
    METRIC_QUOTA_USED,
)
from governance.errors import GpupoolError
from governance.model import Org
from governance.storage import ledger
from governance.storage.store import Store

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The webhook's own series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            METRIC_ADMISSION_REQUESTS_TOTAL.removesuffix("_total"),
            "Admission requests answered, by operation, decision (allowed|denied) and reason code.",
            ("operation", "decision", "reason"),
            registry=registry,
        )
        self.duration = Histogram(
            METRIC_ADMISSION_DURATION_SECONDS,
            "Time to answer an admission request, by operation.",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        # labels() hashes and locks on every call: keep the children (a few dozen).
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, operation: str, decision: str, reason: str, seconds: float) -> None:
        key = (operation, decision, reason)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        histogram = self._histograms.get(operation)
        if histogram is None:
            histogram = self._histograms[operation] = self.duration.labels(operation)
        histogram.observe(seconds)


class WriterCollector(Collector):
    """The group commit's counters, read from the writers at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.counts = counts
        """writer name -> (transactions, writes), e.g. Admitter.writer_counts."""

    def collect(self) -> Iterator[Metric]:
        commits = CounterMetricFamily(
            METRIC_ADMISSION_LEDGER_COMMITS_TOTAL,
            "Ledger transactions of the webhook's group commit, by writer (loop|thread).",
            labels=("writer",),
        )
        writes = CounterMetricFamily(
            METRIC_ADMISSION_LEDGER_WRITES_TOTAL,
            "Reservations and denials carried by those transactions, by writer.",
            labels=("writer",),
        )
        for name, (groups, items) in sorted(self.counts().items()):
            commits.add_metric((name,), float(groups))
            writes.add_metric((name,), float(items))
        yield commits
        yield writes


class QuotaCollector(Collector):
    """Quota used and limit per department/queue/resource, read at scrape time."""

    def __init__(self, store: Store, org: Callable[[], Org]) -> None:
        self.store = store
        self.org = org

    def describe(self) -> Iterator[Metric]:
        # Registering the collector must not touch the store.
        yield GaugeMetricFamily(METRIC_QUOTA_USED, "", labels=("department", "queue", "resource"))
        yield GaugeMetricFamily(METRIC_QUOTA_LIMIT, "", labels=("department", "queue", "resource"))

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            METRIC_QUOTA_USED,
            "Quota in use (reserved or bound allocations), as sold: slices, memory_mib, "
            "compute_pct. queue is empty for the department itself.",
            labels=("department", "queue", "resource"),
        )
        limit = GaugeMetricFamily(
            METRIC_QUOTA_LIMIT,
            "Quota limit (a queue's nominal quota, a department's quota); absent when unlimited.",
            labels=("department", "queue", "resource"),
        )
        try:
            lines = ledger.quota_report(self.store, self.org())
        except GpupoolError:
            # The store is down: /metrics still answers, without quota series.
            lines = []
        for line in lines:
            labels = (line.department, line.queue, line.resource)
            used.add_metric(labels, float(line.used))
            if line.limit is not None:
                limit.add_metric(labels, float(line.limit))
        yield used
        yield limit
