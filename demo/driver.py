"""The workload driver: plays the plan against the API stand-in, in order, in time.

Each planned pod is created at its time through the API stand-in, which sends it to
the real webhook (:meth:`demo.apiserver.ApiServer.create_pod`); an admitted pod goes
to the cluster (:mod:`demo.cluster`), which places and starts it, and ends it when its
time is up. Events are handled one at a time in the plan's order (an ending before an
arrival at the same time), and after a pod ends the driver waits until the ledger has
released its allocation (the real reconciler does that, from the pod's watch) before it
goes on. So the webhook decides every pod on the same ledger, whatever the machine's
speed: **the same seed gives the same sequence of admissions and denials**. When the
machine falls behind the plan's clock, events are late, not reordered.

``freeze_after_s`` stops the workload (no arrivals, no endings) while everything keeps
serving, so that the figures stand still (for screenshots and for checking that the
console, the ledger and the metrics agree). At the end, :meth:`Driver.drain` deletes
every pod left and waits for the ledger to release them.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO

from demo.apiserver import ApiServer
from demo.apistore import ApiError
from demo.cluster import Cluster, Workload
from demo.workload import PlannedPod
from governance.contract import Reason

log = logging.getLogger("gpupool.demo.driver")

RELEASE_TIMEOUT_S = 30.0
"""How long the driver waits for the reconciler to release an ended pod's allocation."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the API stand-in answered for one planned pod (one JSON line of --record)."""

    seq: int
    at_s: float
    trace_pod: str
    tenant: str
    intent: str
    namespace: str
    pod: str
    """The pod's name (its generateName when it was refused: it never got one)."""
    who: str
    allowed: bool
    reason: str
    message: str


@dataclass
class Stats:
    """What the live summary shows; updated by the driver thread, read by the display."""

    planned: int = 0
    admitted: int = 0
    denied: Counter[str] = field(default_factory=Counter)
    ended: int = 0
    recent_denials: deque[Decision] = field(default_factory=lambda: deque(maxlen=4))
    slices: dict[str, int] = field(default_factory=dict)
    """Slices held by the cluster's pods (running or pending), per department."""
    running: int = 0
    pending: int = 0
    frozen: bool = False


@dataclass(order=True)
class _End:
    at_s: float
    seq: int
    uid: str = field(compare=False)
    succeeds: bool = field(compare=False)


class Driver:
    """Plays ``plan`` on ``api`` and ``cluster``; ``released`` says whether the ledger has
    released an allocation id (it reads the store)."""

    def __init__(
        self,
        *,
        plan: Iterator[PlannedPod],
        api: ApiServer,
        cluster: Cluster,
        released: Callable[[str], bool],
        record: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.api = api
        self.cluster = cluster
        self.released = released
        self.record = record
        self.clock = clock
        self.stats = Stats()
        self._ends: list[_End] = []
        self._lock = threading.Lock()

    def run(self, stop: threading.Event, *, freeze_after_s: float | None = None) -> None:
        """Play the plan until ``stop`` is set (or, with ``freeze_after_s``, until then,
        and then hold still until ``stop``)."""
        start = self.clock()
        upcoming = next(self.plan)
        while not stop.is_set():
            now = self.clock() - start
            if freeze_after_s is not None and now >= freeze_after_s:
                self.stats.frozen = True
                stop.wait()
                break
            due_end = self._ends[0].at_s if self._ends else float("inf")
            due = min(due_end, upcoming.at_s)
            if freeze_after_s is not None and due >= freeze_after_s:
                stop.wait(min(freeze_after_s - now, 0.5))
                continue
            if due > now:
                stop.wait(min(due - now, 0.5))
                continue
            if due_end <= upcoming.at_s:
                self._end(heapq.heappop(self._ends))
            else:
                self._arrive(upcoming)
                upcoming = next(self.plan)
            self._count()

    def _count(self) -> None:
        held: Counter[str] = Counter()
        for work in self.cluster.workloads():
            held[work.department] += work.slices
        self.stats.slices = dict(held)
        self.stats.running = len(self.cluster.running)
        self.stats.pending = len(self.cluster.pending)

    def _arrive(self, planned: PlannedPod) -> None:
        self.stats.planned += 1
        try:
            pod = self.api.create_pod(planned.pod(), user=planned.requester.identity())
        except ApiError as exc:
            self._decide(
                planned,
                planned.generate_name,
                allowed=False,
                reason=exc.reason,
                message=exc.message,
            )
            return
        work = self.cluster.admit(pod, load=planned.load, processes=planned.processes)
        self._decide(planned, work.name, allowed=True, reason=Reason.ADMITTED.value, message="")
        heapq.heappush(
            self._ends,
            _End(
                planned.at_s + planned.duration_s, planned.seq, work.uid, planned.ends_by_succeeding
            ),
        )

    def _decide(
        self, planned: PlannedPod, pod: str, *, allowed: bool, reason: str, message: str
    ) -> None:
        decision = Decision(
            seq=planned.seq,
            at_s=round(planned.at_s, 3),
            trace_pod=planned.source,
            tenant=planned.tenant,
            intent=planned.intent.value,
            namespace=planned.namespace,
            pod=pod,
            who=planned.requester.who,
            allowed=allowed,
            reason=reason,
            message=message,
        )
        with self._lock:
            if allowed:
                self.stats.admitted += 1
            else:
                self.stats.denied[reason] += 1
                self.stats.recent_denials.append(decision)
        if self.record is not None:
            self.record.write(json.dumps(asdict(decision)) + "\n")
            self.record.flush()

    def _end(self, end: _End) -> None:
        work = self.cluster.finish(end.uid, succeeded=end.succeeds)
        if work is None:
            return
        self._wait_released(work)
        self.stats.ended += 1
        self.cluster.retry_pending()

    def _wait_released(self, work: Workload) -> None:
        if not work.allocation_id:
            return
        deadline = self.clock() + RELEASE_TIMEOUT_S
        pause = 0.005
        while not self.released(work.allocation_id):
            if self.clock() > deadline:
                log.warning(
                    "the ledger has not released %s (%s/%s) %g s after the pod ended: is "
                    "the reconciler running? Going on without it",
                    work.allocation_id,
                    work.namespace,
                    work.name,
                    RELEASE_TIMEOUT_S,
                )
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def drain(self, *, timeout_s: float = 20.0) -> int:
        """Delete every pod left (the demo is stopping) and wait, up to ``timeout_s``, for
        the ledger to release them; returns how many were still unreleased."""
        ended = [
            work
            for uid in [w.uid for w in self.cluster.workloads()]
            if (work := self.cluster.finish(uid, succeeded=False)) is not None
        ]
        self._count()
        deadline = self.clock() + timeout_s
        waiting = [w.allocation_id for w in ended if w.allocation_id]
        while waiting and self.clock() < deadline:
            waiting = [a for a in waiting if not self.released(a)]
            if waiting:
                time.sleep(0.1)
        return len(waiting)
