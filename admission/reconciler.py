"""The pod reconciler: keeps the allocation ledger in step with the pods that exist.

The webhook *reserves* a ledger entry when it admits a GPU pod and writes the entry's
id on the pod (annotation ``gpupool.io/allocation-id``). The reconciler watches pods
and moves the entry along (see :mod:`governance.storage.ledger`)::

    pod seen (Pending/Running)        reserved|expired -> bound
    pod Succeeded/Failed or deleted   bound -> released  (reserved -> bound -> released)
    no pod within the TTL             reserved -> expired   (periodic, only while the
                                      view of pods is current: see below)
    start-up / re-list after 410      bind the pods listed, release bound entries
                                      whose pod is not in the list

Expiry judges that a pod never appeared, which only a current view of the pods can
tell: with the watch broken, an existing pod's reservation would look abandoned. So the
reconciler keeps :attr:`Reconciler.synced_at`, the last instant up to which it has seen
every pod event (a full list, a watch BOOKMARK, a watch that the server ended after
delivering its events), and expires only entries made :data:`CREATION_GRACE` before
that instant; the expiry itself is one conditional statement
(:func:`governance.storage.ledger.expire`).

The core is a state machine fed with :class:`WatchEvent` values: :func:`decide` is
pure (a pod and its ledger entry in, ledger steps out), :class:`Reconciler` applies the
steps to the ledger and keeps what a watch needs between events (the resourceVersion
to resume from, and per pod the newest version seen, so that replayed, duplicate or
out-of-order events cannot move an entry backwards). The ledger's transitions are
idempotent and a released entry never binds again, so correctness does not rest on
event order; the version bookkeeping only saves work and keeps the metrics honest.

The annotation is never trusted blindly: a pod whose allocation id the ledger does
not hold, or whose namespace differs from the entry's, is logged as suspicious and
changes nothing. A pod that is another pod than the one the entry is bound to (or was
admitted for) is a *duplicate claim*: the entry stays with its pod, and the later one
is counted on an entry of its own while it runs, so that usage counts every pod that
runs (:meth:`Reconciler._duplicate`).

:func:`run_watch` drives one reconciler against a :class:`PodSource` (the Kubernetes
adapter, :mod:`admission.kube`) on the list-then-watch loop that the exporter's pod watch
shares (:func:`governance.watching.list_then_watch`): list, watch from the list's
resourceVersion, re-list on :class:`Gone`, exponential backoff with full jitter on any
other error.

Exceptions: :class:`Gone` (the watch's resourceVersion is too old: re-list) and
:class:`WatchFailed` (the API server ended the watch with another error) are both
:class:`PodSourceError`; store failures surface as
:class:`governance.errors.StoreError` from the ledger.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from admission.leader import LeaderElector
from governance import watching
from governance.errors import StoreError
from governance.storage import ledger
from governance.storage.ledger import Allocation, State
from governance.storage.store import Store, utcnow

log = logging.getLogger("gpupool.reconciler")

Clock = Callable[[], datetime]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

CREATION_GRACE = timedelta(seconds=60)
"""How long after its admission a pod may still be created: the create request that
carried the admission ends within kube-apiserver's request timeout (60 s by default).
A reservation is judged only once the reconciler has seen the pods up to this long
after it was made."""


# -- values ------------------------------------------------------------------------------


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"
    ERROR = "ERROR"


@dataclass(frozen=True, kw_only=True)
class PodView:
    """What the reconciler needs of a pod."""

    uid: str
    namespace: str
    name: str
    phase: str
    resource_version: str
    allocation_id: str | None
    """The ``gpupool.io/allocation-id`` annotation; None on pods gpupool never saw."""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    type: EventType
    pod: PodView | None = None
    """Set for ADDED, MODIFIED and DELETED."""
    resource_version: str = ""
    """The version to resume the watch from after this event ("" for ERROR)."""
    code: int | None = None
    """ERROR: the HTTP status code of the Status object (410: Gone)."""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """A full list of pods, consistent at ``resource_version``."""

    pods: tuple[PodView, ...]
    resource_version: str


class PodSourceError(Exception):
    """The pod source could not list or watch."""


class Gone(PodSourceError, watching.Gone):
    """HTTP 410: the resourceVersion is too old to watch from; list again."""


class WatchFailed(PodSourceError):
    """The API server ended the watch with an error other than 410."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PodSource(Protocol):
    """The Kubernetes side, as the reconciler sees it (:class:`admission.kube.KubePods`)."""

    def list_pods(self) -> Snapshot: ...

    def watch_pods(self, resource_version: str) -> Iterable[WatchEvent]:
        """Events after ``resource_version`` until the server ends the watch; raise
        :class:`Gone` when the version is too old."""
        ...


# -- the pure decision -------------------------------------------------------------------


class Step(enum.StrEnum):
    BIND = "bind"
    RELEASE = "release"


class Suspicion(enum.StrEnum):
    """Why a pod's allocation-id annotation was not trusted (metrics label)."""

    UNKNOWN_ALLOCATION = "UnknownAllocation"
    NAMESPACE_MISMATCH = "NamespaceMismatch"
    POD_MISMATCH = "PodMismatch"


@dataclass(frozen=True, kw_only=True)
class Decision:
    steps: tuple[Step, ...] = ()
    suspicion: Suspicion | None = None
    message: str = ""


def decide(pod: PodView, entry: Allocation | None, *, gone: bool) -> Decision:
    """The ledger steps that make ``entry`` agree with ``pod`` (``gone``: deleted)."""
    ref = f"pod {pod.namespace}/{pod.name} (uid {pod.uid})"
    if entry is None:
        return Decision(
            suspicion=Suspicion.UNKNOWN_ALLOCATION,
            message=f"{ref} carries allocation id {pod.allocation_id!r}, which the ledger "
            "does not hold; ignored",
        )
    if entry.namespace != pod.namespace:
        return Decision(
            suspicion=Suspicion.NAMESPACE_MISMATCH,
            message=f"{ref} carries allocation id {entry.id!r} of namespace "
            f"{entry.namespace!r}; ignored",
        )
    if (entry.pod_uid and entry.pod_uid != pod.uid) or (
        entry.pod_name and pod.name and entry.pod_name != pod.name
    ):
        return Decision(
            suspicion=Suspicion.POD_MISMATCH,
            message=f"{ref} carries allocation id {entry.id!r}, which belongs to pod "
            f"{entry.pod_name or '?'} (uid {entry.pod_uid or '?'}); the entry stays with "
            "that pod, this one is counted on an entry of its own while it runs",
        )
    ended = gone or pod.terminal
    if not ended:
        # A released entry never binds again: the event is older than the end we saw.
        if entry.state in (State.RESERVED, State.EXPIRED):
            return Decision(steps=(Step.BIND,))
        return Decision()
    if entry.state is State.RESERVED:
        # Seen for the first time already over: bind first so that the history
        # records which pod held the entry.
        return Decision(steps=(Step.BIND, Step.RELEASE))
    if entry.state is State.BOUND:
        return Decision(steps=(Step.RELEASE,))
    return Decision()


# -- metrics -----------------------------------------------------------------------------


class Metrics:
    """The reconciler's series, on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "gpupool_reconciler_watch_events",
            "Pod watch events received, by type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).",
            ["type"],
            registry=registry,
        )
        self.skipped = Counter(
            "gpupool_reconciler_events_skipped",
            "Pod events not acted on: duplicate, stale (older than a version already "
            "seen) or unannotated (a pod gpupool did not admit).",
            ["reason"],
            registry=registry,
        )
        self.actions = Counter(
            "gpupool_reconciler_ledger_actions",
            "Ledger transitions made by the reconciler (bind, release, expire).",
            ["action"],
            registry=registry,
        )
        self.suspicious = Counter(
            "gpupool_reconciler_suspicious_pods",
            "Pods whose allocation-id annotation was not trusted, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "gpupool_reconciler_duplicate_claims",
            "Pods found running with an allocation id that another pod holds, each "
            "counted on a ledger entry of its own.",
            registry=registry,
        )
        self.relists = Counter(
            "gpupool_reconciler_relists",
            "Full lists of pods (start-up, 410 Gone, after an error).",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "gpupool_reconciler_errors",
            "Errors of the watch loop, by kind (watch, store, other).",
            ["kind"],
            registry=registry,
        )
        self.leader = Gauge(
            "gpupool_reconciler_leader",
            "1 while this replica holds the reconciler Lease and acts, else 0.",
            registry=registry,
        )
        self.last_resync = Gauge(
            "gpupool_reconciler_last_resync_timestamp_seconds",
            "Unix time of the last completed full resync.",
            registry=registry,
        )
        self.last_expire = Gauge(
            "gpupool_reconciler_last_expire_timestamp_seconds",
            "Unix time of the last completed expiry pass.",
            registry=registry,
        )
        self.last_sync = Gauge(
            "gpupool_reconciler_last_sync_timestamp_seconds",
            "Unix time up to which the reconciler has seen every pod event (a full list, "
            "a watch bookmark, a watch the server ended); expiry spares newer entries.",
            registry=registry,
        )


# -- the state machine -------------------------------------------------------------------


def _newer(candidate: str, seen: str) -> bool | None:
    """Whether ``candidate`` is newer than ``seen``; None if they cannot be compared.

    Kubernetes calls resourceVersions opaque; the API server's are etcd revisions
    (decimal integers), so they are compared only when both are integers, and only to
    skip work: the ledger's transitions are safe in any order.
    """
    if candidate.isdigit() and seen.isdigit():
        return int(candidate) > int(seen)
    return None


class Reconciler:
    """Applies pod events to the ledger. Not thread-safe: one watch loop drives it."""

    TOMBSTONES = 10_000
    """How many deleted pod uids are remembered, to drop events that arrive late."""

    def __init__(
        self,
        store: Store,
        *,
        metrics: Metrics,
        namespace: str | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.namespace = namespace
        """Only entries of this namespace are released at resync (None: every one)."""
        self.clock = clock
        self.resource_version: str | None = None
        """Where the next watch resumes; None: a full list is needed first. The watch
        loop keeps it (the reconciler is its :class:`governance.watching.Cursor`)."""
        self.synced_at: datetime | None = None
        """Up to when every pod event has been seen (None: not yet); see the module."""
        self._versions: dict[str, str] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()

    # The watch protocol.

    def resync(self, snapshot: Snapshot, *, listed_at: datetime | None = None) -> None:
        """Make the ledger agree with a full list of pods, asked for at ``listed_at``
        (default: now)."""
        listed_at = listed_at or self.clock()
        self._versions = {p.uid: p.resource_version for p in snapshot.pods}
        self._tombstones.clear()
        present: set[str] = set()
        for pod in snapshot.pods:
            present.add(pod.uid)
            if pod.allocation_id is not None:
                self._apply(pod, gone=False)
        for entry in ledger.list_allocations(self.store, states=[State.BOUND]):
            if self.namespace is not None and entry.namespace != self.namespace:
                continue
            if entry.pod_uid not in present:
                log.info(
                    "allocation %s: pod %s/%s (uid %s) is gone; releasing",
                    entry.id,
                    entry.namespace,
                    entry.pod_name,
                    entry.pod_uid,
                )
                self._release(entry.id)
        self.metrics.last_resync.set(self.clock().timestamp())
        self.caught_up(listed_at)

    def caught_up(self, at: datetime) -> None:
        """Every pod event up to ``at`` has been applied."""
        if self.synced_at is None or at > self.synced_at:
            self.synced_at = at
            self.metrics.last_sync.set(at.timestamp())

    def handle(self, event: WatchEvent) -> None:
        """Apply one watch event. Raises :class:`Gone` or :class:`WatchFailed` for an
        ERROR event. The loop moves :attr:`resource_version` past the event only once
        this returns, so an event that failed (store down) is seen again after the
        re-watch."""
        self.metrics.events.labels(event.type.value).inc()
        if event.type is EventType.ERROR:
            if event.code == 410:
                raise Gone(event.message or "resourceVersion too old")
            raise WatchFailed(event.message or "watch error", code=event.code)
        if event.type is not EventType.BOOKMARK:
            assert event.pod is not None
            self._on_pod(event.type, event.pod)
        if event.type is EventType.BOOKMARK:
            # the server sends a bookmark once it has sent every event before it
            self.caught_up(self.clock())

    def expire(self) -> list[Allocation]:
        """Expire reservations whose pod never appeared within their TTL, among those
        made :data:`CREATION_GRACE` before :attr:`synced_at` (none before a first sync):
        a reservation made later may have a pod that the reconciler has not seen."""
        now = self.clock()
        if self.synced_at is None:
            return []
        expired = ledger.expire(self.store, now=now, created_before=self.synced_at - CREATION_GRACE)
        for entry in expired:
            log.info(
                "allocation %s (%s/%s) expired: no pod appeared before %s",
                entry.id,
                entry.namespace,
                entry.queue,
                entry.expires_at.isoformat(),
            )
        self.metrics.actions.labels("expire").inc(len(expired))
        self.metrics.last_expire.set(now.timestamp())
        return expired

    # Internals.

    def _on_pod(self, kind: EventType, pod: PodView) -> None:
        gone = kind is EventType.DELETED
        if pod.uid in self._tombstones:
            self.metrics.skipped.labels("stale").inc()
            return
        seen = self._versions.get(pod.uid)
        if seen is not None and not gone:
            if seen == pod.resource_version:
                self.metrics.skipped.labels("duplicate").inc()
                return
            if _newer(pod.resource_version, seen) is False:
                self.metrics.skipped.labels("stale").inc()
                return
        if pod.allocation_id is None:
            self.metrics.skipped.labels("unannotated").inc()
        else:
            self._apply(pod, gone=gone)
        # Recorded only once applied: an event that failed is not a duplicate later.
        if gone:
            self._versions.pop(pod.uid, None)
            self._tombstones[pod.uid] = None
            while len(self._tombstones) > self.TOMBSTONES:
                self._tombstones.popitem(last=False)
        else:
            self._versions[pod.uid] = pod.resource_version

    def _apply(self, pod: PodView, *, gone: bool) -> None:
        assert pod.allocation_id is not None
        entry = ledger.get(self.store, pod.allocation_id)
        decision = decide(pod, entry, gone=gone)
        if decision.suspicion is not None:
            log.warning("suspicious pod: %s", decision.message)
            self.metrics.suspicious.labels(decision.suspicion.value).inc()
            if decision.suspicion is Suspicion.POD_MISMATCH:
                assert entry is not None
                self._duplicate(pod, entry, gone=gone)
            return
        assert entry is not None
        self._steps(pod, entry, decision, gone=gone)

    def _steps(self, pod: PodView, entry: Allocation, decision: Decision, *, gone: bool) -> None:
        for step in decision.steps:
            if step is Step.BIND:
                ledger.bind(
                    self.store, entry.id, pod_uid=pod.uid, pod_name=pod.name, now=self.clock()
                )
                log.info("allocation %s bound to pod %s/%s", entry.id, pod.namespace, pod.name)
                self.metrics.actions.labels("bind").inc()
            else:
                self._release(entry.id)
                log.info(
                    "allocation %s released: pod %s/%s %s",
                    entry.id,
                    pod.namespace,
                    pod.name,
                    "deleted" if gone else pod.phase,
                )

    def _duplicate(self, pod: PodView, claimed: Allocation, *, gone: bool) -> None:
        """A second pod carries the id of an entry another pod holds (an annotation
        copied past the webhook, or two pods the webhook could not tell apart: see
        docs/protocol.md). The entry stays with its pod; this one is counted on an entry
        of its own while it runs (:func:`governance.storage.ledger.record_duplicate`), released
        when it ends, so that usage counts every running pod."""
        own = ledger.by_request(self.store, ledger.duplicate_uid(pod.uid))
        if own is None:
            if gone or pod.terminal:
                return  # it ended before it was counted: nothing runs
            own, made = ledger.record_duplicate(
                self.store, claimed, pod_uid=pod.uid, pod_name=pod.name, now=self.clock()
            )
            if made:
                self.metrics.duplicates.inc()
                log.warning(
                    "pod %s/%s (uid %s) claims allocation %s of pod %s (uid %s): counted on "
                    "an entry of its own, %s (%d slice(s) of %s in queue %s/%s)",
                    pod.namespace,
                    pod.name,
                    pod.uid,
                    claimed.id,
                    claimed.pod_name or "?",
                    claimed.pod_uid or "?",
                    own.id,
                    own.amount.slices,
                    own.sku,
                    own.department,
                    own.queue,
                )
            return
        self._steps(pod, own, decide(pod, own, gone=gone), gone=gone)

    def _release(self, allocation_id: str) -> None:
        ledger.release(self.store, allocation_id, now=self.clock())
        self.metrics.actions.labels("release").inc()


# -- the loop ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Listed:
    """A list of pods and the instant it was asked for (the resync's ``listed_at``)."""

    snapshot: Snapshot
    listed_at: datetime

    @property
    def resource_version(self) -> str:
        return self.snapshot.resource_version


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, PodSourceError):
        return "watch"
    return "store" if isinstance(exc, StoreError) else "other"


def run_watch(
    reconciler: Reconciler,
    source: PodSource,
    stop: threading.Event,
    *,
    backoff: watching.Backoff | None = None,
    max_rounds: int | None = None,
    rewatch_pause_s: float = 1.0,
) -> None:
    """Drive ``reconciler`` from ``source`` until ``stop`` is set, on the one
    list-then-watch loop (:func:`governance.watching.list_then_watch`: re-list at once on
    :class:`Gone`, backoff with full jitter on any other error, resume from the last
    version applied). The reconciler is the loop's cursor, so a later call resumes where
    this one stopped. ``max_rounds`` bounds the loop for tests.
    """

    def list_pods() -> _Listed:
        listed_at = reconciler.clock()  # before the request: the list is at least this new
        return _Listed(snapshot=source.list_pods(), listed_at=listed_at)

    def resync(listed: _Listed) -> None:
        reconciler.resync(listed.snapshot, listed_at=listed.listed_at)

    def watch_ended() -> None:
        # The server ended the watch after the events it had: the view was current
        # until now.
        reconciler.caught_up(reconciler.clock())

    metrics = reconciler.metrics
    watching.list_then_watch(
        list_=list_pods,
        watch=source.watch_pods,
        on_list=resync,
        on_event=reconciler.handle,
        stop=stop,
        cursor=reconciler,
        backoff=backoff,
        on_relist=lambda reason: metrics.relists.labels(reason).inc(),
        on_watch_end=watch_ended,
        on_error=lambda exc: metrics.errors.labels(_error_kind(exc)).inc(),
        rewatch_pause_s=rewatch_pause_s,
        max_rounds=max_rounds,
        name="reconciler pod watch",
        log=log,
    )


# -- the service -------------------------------------------------------------------------


class Service:
    """One reconciler replica: elects, and while it leads, watches and expires.

    The main loop ticks the leader election every retry period. On winning it starts
    a watch thread with a fresh :class:`Reconciler` (which begins with a full resync);
    on losing it tells that thread to stop applying events. Reservations are expired
    from the main loop every ``expire_interval_s``, once the first resync is done (a
    reservation whose pod exists must be bound before it can be judged).
    """

    def __init__(
        self,
        *,
        store: Store,
        source: PodSource,
        elector: LeaderElector,
        metrics: Metrics,
        namespace: str | None = None,
        clock: Clock = utcnow,
        expire_interval_s: float = 30.0,
        backoff: Callable[[], watching.Backoff] = watching.Backoff,
        rewatch_pause_s: float = 1.0,
    ) -> None:
        self.store = store
        self.source = source
        self.elector = elector
        self.metrics = metrics
        self.namespace = namespace
        self.clock = clock
        self.expire_interval_s = expire_interval_s
        self.backoff = backoff
        self.rewatch_pause_s = rewatch_pause_s
        self.reconciler: Reconciler | None = None
        self._worker: threading.Thread | None = None
        self._worker_stop = threading.Event()
        self._next_expire: datetime | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.elector.retry_period_s)
        finally:
            self._stop_worker()
            self.elector.release()
            self.metrics.leader.set(0)

    def step(self) -> None:
        """One tick: election, then start/stop the watch, then expire if due."""
        leading = self.elector.tick()
        self.metrics.leader.set(1 if leading else 0)
        if not leading:
            self._stop_worker()
            return
        if self._worker is None or not self._worker.is_alive():
            self._start_worker()
        reconciler = self.reconciler
        if reconciler is None or reconciler.resource_version is None:
            return
        now = self.clock()
        if self._next_expire is None or now >= self._next_expire:
            try:
                reconciler.expire()
            except StoreError as exc:
                self.metrics.errors.labels("store").inc()
                log.warning("expiry pass failed: %s", exc)
            self._next_expire = now + timedelta(seconds=self.expire_interval_s)

    def _start_worker(self) -> None:
        self._worker_stop = threading.Event()
        self.reconciler = Reconciler(
            self.store, metrics=self.metrics, namespace=self.namespace, clock=self.clock
        )
        self._next_expire = None
        self._worker = threading.Thread(
            target=run_watch,
            args=(self.reconciler, self.source, self._worker_stop),
            kwargs={"backoff": self.backoff(), "rewatch_pause_s": self.rewatch_pause_s},
            name="gpupool-reconciler-watch",
            daemon=True,
        )
        self._worker.start()

    def _stop_worker(self) -> None:
        # The thread may sit in a blocking watch read; it applies nothing once told to
        # stop and ends when the read returns (at the latest, the watch timeout).
        self._worker_stop.set()
        self._worker = None
        self.reconciler = None
