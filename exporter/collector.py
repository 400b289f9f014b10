"""The Prometheus collector: renders the sampler's latest Snapshot, nothing else.

``collect()`` reads one attribute (the published snapshot) and turns it into metric
families; it makes no NVML, /proc or Kubernetes call, so a scrape costs the same
whether the GPUs answer or hang. The families built for a snapshot are kept until the
next snapshot, so repeated scrapes between two samples only pay for prometheus_client's
text rendering (the "floor" that ``bench/exporter.py`` measures against).

``describe()`` yields the families without samples, so registering the collector
touches no hardware and prometheus_client can check for duplicate names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import fields
from exporter.model import GpuIdentity, Snapshot
from governance import contract

GPU_HEALTHY = "gpupool_exporter_gpu_healthy"
BACKEND_ERRORS = "gpupool_exporter_backend_errors"
ATTRIBUTION_MISSES = "gpupool_exporter_attribution_misses"
SAMPLE_DURATION = "gpupool_exporter_sample_duration_seconds"
SAMPLES = "gpupool_exporter_samples"
SNAPSHOT_AGE = "gpupool_exporter_snapshot_age_seconds"
SCRAPE_DURATION = "gpupool_exporter_scrape_duration_seconds"
UP = "gpupool_exporter_up"

ALLOCATION_LABELS = (
    contract.DCGM_LABEL_GPU,
    contract.DCGM_LABEL_UUID,
    contract.DCGM_LABEL_HOSTNAME,
)
UNATTRIBUTED_MEMORY_LABELS = (contract.DCGM_LABEL_UUID, contract.DCGM_LABEL_HOSTNAME, "reason")
"""Summed per GPU and reason, never per pid: host processes come and go, and a series
per pid would grow without bound."""
POD_LABELS = ("pod", "namespace", "container")
"""dcgm-exporter's Kubernetes mapping: on the DCGM_FI_* series of a GPU (or MIG
instance) that one container holds. A shared GPU gets none (dcgm-exporter would copy
the whole card's figures to each pod): its per-pod answer is the gpupool_slice_*
series."""
UNATTRIBUTED_PROCESS_LABELS = (contract.DCGM_LABEL_UUID, contract.DCGM_LABEL_HOSTNAME, "reason")
HEALTH_LABELS = (*contract.DCGM_LABELS, fields.LABEL_PCI_BUS_ID, fields.LABEL_DRIVER_VERSION)


def gpu_labels(identity: GpuIdentity, hostname: str) -> dict[str, str]:
    """dcgm-exporter's label set for one GPU (or MIG instance)."""
    labels = {
        contract.DCGM_LABEL_GPU: str(identity.index),
        contract.DCGM_LABEL_UUID: identity.uuid,
        fields.LABEL_PCI_BUS_ID: identity.pci_bus_id,
        contract.DCGM_LABEL_DEVICE: identity.device,
        contract.DCGM_LABEL_MODEL_NAME: identity.model,
        contract.DCGM_LABEL_HOSTNAME: hostname,
        fields.LABEL_DRIVER_VERSION: identity.driver_version,
    }
    if identity.is_mig:
        labels[contract.DCGM_LABEL_GPU_I_PROFILE] = identity.mig_profile
        labels[contract.DCGM_LABEL_GPU_I_ID] = str(identity.mig_instance_id)
    return labels


def sole_holders(snapshot: Snapshot) -> dict[str, tuple[str, str, str]]:
    """(pod, namespace, container) of each GPU key that exactly one container holds
    (a slice granted on it, or processes running on it); shared GPUs are absent."""
    found: dict[str, set[tuple[str, str, str]]] = {}
    for item in snapshot.attribution.slices:
        key = item.key
        if key.uuid:
            found.setdefault(key.uuid, set()).add((key.pod, key.namespace, key.container))
    return {uuid: next(iter(held)) for uuid, held in found.items() if len(held) == 1}


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _field_families() -> list[Metric]:
    return [Metric(field.name, field.help, field.exposition_type) for field in fields.FIELDS]


def _slice_families() -> list[GaugeMetricFamily]:
    labels = contract.SLICE_LABELS
    return [
        _gauge(
            contract.METRIC_SLICE_MEMORY_USED_BYTES,
            "GPU memory used by the slice's processes on this GPU (bytes).",
            labels,
        ),
        _gauge(
            contract.METRIC_SLICE_MEMORY_LIMIT_BYTES,
            "GPU memory granted to the slice on this GPU (bytes), from gpupool.io/slices.",
            labels,
        ),
        _gauge(
            contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO,
            "SM utilisation of the slice's processes on this GPU (0-1 of the whole GPU).",
            labels,
        ),
        _gauge(
            contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO,
            "Compute granted to the slice on this GPU (0-1 of the whole GPU).",
            labels,
        ),
        _gauge(
            contract.METRIC_SLICE_PROCESSES,
            "Processes of the slice's container running on this GPU.",
            labels,
        ),
    ]


def _allocation_families() -> list[GaugeMetricFamily]:
    return [
        _gauge(
            contract.METRIC_GPU_ALLOCATED_MEMORY_BYTES,
            "Sum of the memory limits of the slices placed on this GPU (bytes).",
            ALLOCATION_LABELS,
        ),
        _gauge(
            contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO,
            "Sum of the compute limits of the slices placed on this GPU (1 = a whole GPU).",
            ALLOCATION_LABELS,
        ),
        _gauge(
            contract.METRIC_GPU_ALLOCATED_SLICES,
            "Number of granted slices placed on this GPU.",
            ALLOCATION_LABELS,
        ),
    ]


def _unattributed_families() -> list[GaugeMetricFamily]:
    return [
        _gauge(
            contract.METRIC_UNATTRIBUTED_MEMORY_USED_BYTES,
            "GPU memory used by processes that belong to no known pod, per GPU and reason (bytes).",
            UNATTRIBUTED_MEMORY_LABELS,
        ),
        _gauge(
            contract.METRIC_UNATTRIBUTED_PROCESSES,
            "GPU processes that belong to no known pod, by reason.",
            UNATTRIBUTED_PROCESS_LABELS,
        ),
    ]


def _self_families() -> list[Metric]:
    return [
        _gauge(UP, "1 once the sampler has published a first snapshot."),
        _gauge(
            GPU_HEALTHY,
            "0 when a backend call for this GPU failed in the last sample.",
            HEALTH_LABELS,
        ),
        CounterMetricFamily(
            BACKEND_ERRORS,
            "Failed backend (NVML) calls, by call and code.",
            labels=["call", "code"],
        ),
        CounterMetricFamily(
            ATTRIBUTION_MISSES,
            "GPU processes that could not be attributed to a pod, by reason.",
            labels=["reason"],
        ),
        CounterMetricFamily(SAMPLES, "Samples taken by the background sampler."),
        _gauge(SAMPLE_DURATION, "Duration of the last background sample (seconds)."),
        _gauge(SNAPSHOT_AGE, "Age of the snapshot this scrape rendered (seconds)."),
    ]


def build_families(snapshot: Snapshot) -> list[Metric]:
    """Every snapshot-derived family (all but the scrape-time age), samples included."""
    host = snapshot.hostname
    by_name = {family.name: family for family in _field_families()}
    healthy = _gauge(
        GPU_HEALTHY, "0 when a backend call for this GPU failed in the last sample.", HEALTH_LABELS
    )
    index_of: dict[str, str] = {}
    holders = sole_holders(snapshot)
    for gpu in snapshot.gpus:
        labels = gpu_labels(gpu.identity, host)
        health = [labels[key] for key in HEALTH_LABELS]
        holder = holders.get(gpu.identity.key)
        if holder is not None:
            labels = {**labels, **dict(zip(POD_LABELS, holder, strict=True))}
        index_of[gpu.identity.key] = str(gpu.identity.index)
        for name, value in gpu.values.items():
            family = by_name.get(name)
            if family is not None:
                family.add_sample(name, labels, value)
        if not gpu.identity.is_mig:
            healthy.add_metric(health, 1.0 if gpu.healthy else 0.0)

    used, limit, util, climit, procs = _slice_families()
    for item in snapshot.attribution.slices:
        key = item.key
        values = [
            key.namespace,
            key.pod,
            key.container,
            key.department,
            key.queue,
            key.sku,
            key.uuid,
            host,
        ]
        used.add_metric(values, item.memory_used_bytes)
        util.add_metric(values, item.compute_utilization_ratio)
        procs.add_metric(values, item.processes)
        if item.memory_limit_bytes is not None:
            limit.add_metric(values, item.memory_limit_bytes)
        if item.compute_limit_ratio is not None:
            climit.add_metric(values, item.compute_limit_ratio)

    memory, compute, count = _allocation_families()
    for allocation in snapshot.attribution.allocations:
        values = [index_of.get(allocation.uuid, ""), allocation.uuid, host]
        memory.add_metric(values, allocation.memory_bytes)
        compute.add_metric(values, allocation.compute_ratio)
        count.add_metric(values, allocation.slices)

    stray_memory, stray_count = _unattributed_families()
    counts: dict[tuple[str, str], int] = {}
    memory_of: dict[tuple[str, str], int] = {}
    for process in snapshot.attribution.unattributed:
        stray = (process.uuid, process.reason)
        counts[stray] = counts.get(stray, 0) + 1
        memory_of[stray] = memory_of.get(stray, 0) + process.memory_used_bytes
    for (uuid, reason), number in sorted(counts.items()):
        stray_memory.add_metric([uuid, host, reason], memory_of[(uuid, reason)])
        stray_count.add_metric([uuid, host, reason], number)

    errors = CounterMetricFamily(
        BACKEND_ERRORS, "Failed backend (NVML) calls, by call and code.", labels=["call", "code"]
    )
    for (call, code), number in sorted(snapshot.errors_total.items()):
        errors.add_metric([call, code], number)
    misses = CounterMetricFamily(
        ATTRIBUTION_MISSES,
        "GPU processes that could not be attributed to a pod, by reason.",
        labels=["reason"],
    )
    for reason, number in sorted(snapshot.misses_total.items()):
        misses.add_metric([reason], number)
    up = _gauge(UP, "1 once the sampler has published a first snapshot.")
    up.add_metric([], 1.0)
    samples = CounterMetricFamily(
        SAMPLES, "Samples taken by the background sampler.", value=snapshot.samples_total
    )
    duration = _gauge(SAMPLE_DURATION, "Duration of the last background sample (seconds).")
    duration.add_metric([], snapshot.sample_seconds)
    return [
        *(family for family in by_name.values() if family.samples),
        used,
        limit,
        util,
        climit,
        procs,
        memory,
        compute,
        count,
        stray_memory,
        stray_count,
        up,
        healthy,
        errors,
        misses,
        samples,
        duration,
    ]


class SnapshotCollector(Collector):
    """A prometheus_client collector over ``latest()``, the sampler's published snapshot."""

    def __init__(
        self, latest: Callable[[], Snapshot | None], clock: Callable[[], float] = time.time
    ) -> None:
        self._latest = latest
        self._clock = clock
        self._cached: tuple[Snapshot, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        yield from _field_families()
        yield from _slice_families()
        yield from _allocation_families()
        yield from _unattributed_families()
        yield from _self_families()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._latest()
        if snapshot is None:
            up = _gauge(UP, "1 once the sampler has published a first snapshot.")
            up.add_metric([], 0.0)
            yield up
            return
        cached = self._cached
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, build_families(snapshot))
            self._cached = cached
        yield from cached[1]
        age = _gauge(SNAPSHOT_AGE, "Age of the snapshot this scrape rendered (seconds).")
        age.add_metric([], max(self._clock() - snapshot.taken_at, 0.0))
        yield age
