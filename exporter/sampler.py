"""The background sampler: reads the backend at an interval and publishes a Snapshot.

The only place that calls NVML (through the backend), /proc, the pod index and the
kubelet's PodResources. Each tick builds one immutable ``Snapshot`` and publishes it by
assigning one attribute, which is atomic in CPython: the collector reads
``Sampler.snapshot`` without a lock and never waits for a tick in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from exporter import attribution
from exporter.backends.base import GpuBackend
from exporter.model import ContainerRef, Snapshot
from exporter.podresources import ContainerKey, PodResourcesError, PodResourcesSource
from exporter.pods import PodSource

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0
"""The sampling floor: NVML's own counters refresh at about this rate, and sampling
faster only burns the node's CPU (dcgm-exporter users report whole cores spent)."""


def _no_pod(pid: int) -> ContainerRef | str:
    return "not_a_pod"


class Sampler:
    """Owns the backend; ``tick()`` takes one sample, ``start()`` runs ticks in a thread."""

    def __init__(
        self,
        *,
        backend: GpuBackend,
        hostname: str,
        interval_s: float = 5.0,
        resolve: Callable[[int], ContainerRef | str] = _no_pod,
        pods: PodSource | None = None,
        podresources: PodResourcesSource | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(
                f"sampling interval {interval_s} s is below the {MIN_INTERVAL_S:g} s floor"
            )
        self._backend = backend
        self._hostname = hostname
        self.interval_s = interval_s
        self._resolve = resolve
        self._pods = pods
        self._podresources = podresources
        self._clock = clock
        self._timer = timer
        self._errors: dict[tuple[str, str], int] = {}
        self._misses: dict[str, int] = {}
        self._samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot: Snapshot | None = None
        """The latest published snapshot; None until the first tick ends."""

    def tick(self) -> Snapshot:
        started = self._timer()
        taken_at = self._clock()
        reading = self._backend.read()
        for error in reading.errors:
            key = (error.call, error.code)
            self._errors[key] = self._errors.get(key, 0) + 1
        assignments: Mapping[ContainerKey, tuple[str, ...]] | None = None
        if self._podresources is not None:
            try:
                assignments = self._podresources.gpu_assignments()
            except PodResourcesError as exc:
                key = ("PodResources.List", type(exc).__name__)
                self._errors[key] = self._errors.get(key, 0) + 1
                log.warning("%s", exc)
        result = attribution.attribute(
            gpu_uuids=[gpu.identity.key for gpu in reading.gpus],
            processes=reading.processes,
            resolve=self._resolve,
            pods=self._pods.pods() if self._pods is not None else (),
            assignments=assignments,
        )
        for reason, count in result.misses.items():
            self._misses[reason] = self._misses.get(reason, 0) + count
        self._samples += 1
        snapshot = Snapshot(
            hostname=self._hostname,
            taken_at=taken_at,
            sample_seconds=self._timer() - started,
            gpus=reading.gpus,
            attribution=result,
            errors_total=dict(self._errors),
            misses_total=dict(self._misses),
            samples_total=self._samples,
        )
        self.snapshot = snapshot
        return snapshot

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._timer()
            try:
                self.tick()
            except Exception:  # a broken tick must not end sampling
                log.exception("sample failed")
                key = ("sample", "exception")
                self._errors[key] = self._errors.get(key, 0) + 1
            self._stop.wait(max(self.interval_s - (self._timer() - started), 0.0))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._backend.close()
