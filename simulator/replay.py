"""Replay a trace over time: arrivals and departures, admission, placement, queueing.

An event-driven engine. Each pod arrives at ``arrival_s``; an *admission* callable
decides whether it may run at all (a denial is final, counted by its reason code);
an admitted pod is placed by the policy (:mod:`simulator.scheduler`) or, when no node
has room, waits in a first-come queue and starts as soon as a departure frees room
(every waiting pod is tried, oldest first, so a small pod may pass a large one that
still does not fit). A running pod leaves ``duration_s`` after it *started*; a pod
without a duration runs to the end. A pod that would not fit even on the empty fleet
is refused at once with :data:`UNSCHEDULABLE` (on a part of the fleet, as the search
for the GPUs needed replays, such a pod waits: that part does not serve it).

Admission is injected: a callable that sees the pod and the usage at that moment and
answers a :class:`Decision`. :func:`admit_all` admits everything (a cluster without
governance); :mod:`simulator.governed` asks gpupool's one governance decision, against
a configuration's departments, queues and quotas. The replay keeps the usage that
decision reads as the ledger keeps it: an admitted pod's ``amount`` is added to each of
its decision's ``scopes`` when it is admitted (a pod waiting for room holds its quota,
as a pod admitted by the webhook and pending in the scheduler does) and taken off when
it ends.

What it measures (:class:`ReplayResult`): allocation (allocated GPU thousandths over
the fleet's) and occupancy (GPUs with anything on them) as time-weighted mean, p50 and
p90 between the first arrival and the last event; queueing delay; acceptance (pods
started on arrival, over pods admitted); denials by reason. :func:`gpus_needed` finds
the smallest fleet, keeping the fleet's mix of node shapes, that serves the trace at a
given acceptance, and :func:`saving` compares it with whole-card allocation.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from governance.errors import ConfigError
from governance.resources import RESOURCE_NAMES, ZERO, Resources
from governance.scopes import Scope
from simulator import policies
from simulator.fleet import Fleet, Kinds
from simulator.policies.base import FloatArray, Setup
from simulator.scheduler import Memo, Placement, Scheduler
from simulator.trace import MILLI_PER_GPU, Node, Pod

ADMITTED = "Admitted"
UNSCHEDULABLE = "Unschedulable"
"""Reason code of a pod that no node of the fleet could hold even when empty."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    """An admission answer: ``reason`` is a machine-readable code (governance's
    ``Reason`` values), ``message`` says it to a person. An allowed pod holds
    ``amount`` in each of ``scopes`` from its admission until it ends."""

    allowed: bool
    reason: str = ADMITTED
    message: str = ""
    scopes: tuple[Scope, ...] = ()
    amount: Resources = ZERO


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What is admitted now (read-only views, live during the call): pods and GPU
    thousandths running per (department, queue), and the quota usage per scope that
    the admitted pods hold (a scope holding nothing is absent)."""

    pods: Mapping[tuple[str, str], int]
    gpu_milli: Mapping[tuple[str, str], int]
    scopes: Mapping[Scope, Resources] = field(default_factory=dict)


Admission = Callable[[Pod, Usage], Decision]
Observer = Callable[[float, Mapping[Scope, Resources]], None]
"""Called after every event with its time and the usage per scope then (tests)."""


def admit_all(pod: Pod, usage: Usage) -> Decision:
    """The admission of a cluster without governance: everything may run."""
    return Decision(allowed=True)


@dataclass(frozen=True, kw_only=True)
class Spread:
    """Time-weighted mean and percentiles of a quantity, in percent."""

    mean: float
    p50: float
    p90: float


@dataclass(frozen=True, kw_only=True)
class ScopeUse:
    """The quota usage one scope held over the replay, per resource: time-weighted
    mean (between the first arrival and the last event) and peak."""

    mean: Mapping[str, float]
    peak: Resources


@dataclass(frozen=True, kw_only=True)
class DepartmentCounts:
    """What one department's pods saw."""

    pods: int = 0
    admitted: int = 0
    started_on_arrival: int = 0
    started_after_waiting: int = 0
    still_waiting: int = 0
    denied: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    policy: str
    total_gpus: int
    pods: int
    admitted: int
    started_on_arrival: int
    started_after_waiting: int
    still_waiting: int
    denied: dict[str, int]
    allocation_pct: Spread
    occupancy_pct: Spread
    wait_s: Spread
    wait_max_s: float
    duration_s: float
    departments: Mapping[str, DepartmentCounts] = field(default_factory=dict)
    """Per department named by the pods (none when no pod names one)."""
    scope_use: Mapping[Scope, ScopeUse] = field(default_factory=dict)
    """Per scope that held quota at some time (none without governance)."""

    @property
    def acceptance(self) -> float:
        """Share of admitted pods that started the moment they arrived."""
        return self.started_on_arrival / self.admitted if self.admitted else 1.0


_Event = tuple[float, bool, int, int]
"""(time, is an arrival, creation order, pod index): ordered by time; at one instant
departures come first (they free room for arrivals), then in creation order."""


def _weighted_percentile(values: FloatArray, weights: FloatArray, q: float) -> float:
    if len(values) == 0 or weights.sum() <= 0:
        return 0.0
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q * cumulative[-1]))
    return float(values[order][min(index, len(values) - 1)])


def _spread(values: FloatArray, weights: FloatArray) -> Spread:
    total = float(weights.sum())
    mean = float((values * weights).sum() / total) if total > 0 else 0.0
    return Spread(
        mean=round(mean, 2),
        p50=round(_weighted_percentile(values, weights, 0.5), 2),
        p90=round(_weighted_percentile(values, weights, 0.9), 2),
    )


class Replayer:
    """Replays one trace with one policy on a fleet or any part of it.

    What does not depend on the fleet's size is prepared once: the pod kinds (indexed
    by the whole fleet's models), the policy, and the scores it gave each node state
    (the scheduler's memo), which fleets of every size share.
    """

    def __init__(
        self,
        pods: Sequence[Pod],
        nodes: Sequence[Node],
        policy: str,
        *,
        admission: Admission = admit_all,
        seed: int = 42,
    ) -> None:
        missing = [p.name for p in pods if p.arrival_s is None]
        if missing:
            raise ConfigError(
                f"{len(missing)} pod(s) have no arrival time (first: {missing[0]}); the "
                "replay needs creation_time (trace) or arrival_s (gpupool's format) on "
                "every pod"
            )
        self.pods = tuple(pods)
        self.nodes = tuple(nodes)
        self.models = Fleet(nodes).models
        self.kinds = Kinds.of(pods, self.models)
        setup = Setup(kinds=self.kinds, models=self.models, workload=self.pods)
        self.policy = policies.create(policy, setup)
        self.admission = admission
        self.seed = seed
        self.memo: Memo = {}
        self.kind_of = [self.kinds.index(p) for p in pods]
        self.holdable = _holdable(self.nodes, self.kinds, self.models)

    def run(
        self, nodes: Sequence[Node] | None = None, *, observe: Observer | None = None
    ) -> ReplayResult:
        """Replay on ``nodes`` (default: the whole fleet); ``observe`` is called after
        every event."""
        pods, kind_of = self.pods, self.kind_of
        fleet = Fleet(nodes or self.nodes, models=self.models)
        rng = np.random.default_rng(self.seed)
        scheduler = Scheduler(fleet, self.kinds, self.policy, rng, self.memo)
        # a pod the whole fleet could hold but this part of it cannot waits (it is not
        # served), so that a fleet-size search never counts it out as unschedulable
        holdable = self.holdable
        tie = itertools.count()
        events: list[_Event] = [
            (float(p.arrival_s or 0.0), True, next(tie), i) for i, p in enumerate(pods)
        ]
        heapq.heapify(events)
        running: dict[int, Placement] = {}
        waiting: deque[int] = deque()
        pods_by_queue: Counter[tuple[str, str]] = Counter()
        milli_by_queue: Counter[tuple[str, str]] = Counter()
        quota = _QuotaBook()
        usage = Usage(
            pods=MappingProxyType(pods_by_queue),
            gpu_milli=MappingProxyType(milli_by_queue),
            scopes=MappingProxyType(quota.usage),
        )
        denied: Counter[str] = Counter()
        books = _DepartmentBooks()
        waits: list[float] = []
        admitted = on_arrival = 0
        times: list[float] = []
        allocation: list[float] = []
        occupancy: list[float] = []

        def start(index: int, now: float) -> bool:
            placement = scheduler.place(kind_of[index])
            if placement is None:
                return False
            pod = pods[index]
            running[index] = placement
            key = (pod.department, pod.queue)
            pods_by_queue[key] += 1
            milli_by_queue[key] += pod.gpu_milli_total
            if pod.duration_s is not None:
                heapq.heappush(events, (now + pod.duration_s, False, next(tie), index))
            return True

        def start_waiting(now: float) -> None:
            # only kinds that fit somewhere now are worth a try; the table says which
            room = np.isfinite(scheduler.table.max(axis=1))
            for queued in list(waiting):
                if room[kind_of[queued]] and start(queued, now):
                    waiting.remove(queued)
                    waits.append(now - float(pods[queued].arrival_s or 0.0))
                    books.after_waiting[pods[queued].department] += 1
                    room = np.isfinite(scheduler.table.max(axis=1))

        while events:
            now, arrival, _, index = heapq.heappop(events)
            pod = pods[index]
            if arrival:
                books.pods[pod.department] += 1
                decision = self.admission(pod, usage)
                if not decision.allowed:
                    denied[decision.reason] += 1
                    books.denied[(pod.department, decision.reason)] += 1
                elif not holdable[kind_of[index]]:
                    denied[UNSCHEDULABLE] += 1
                    books.denied[(pod.department, UNSCHEDULABLE)] += 1
                else:
                    admitted += 1
                    books.admitted[pod.department] += 1
                    quota.hold(index, decision, now)
                    if start(index, now):
                        on_arrival += 1
                        books.on_arrival[pod.department] += 1
                        waits.append(0.0)
                    else:
                        waiting.append(index)
            else:
                scheduler.release(kind_of[index], running.pop(index))
                quota.release(index, now)
                key = (pod.department, pod.queue)
                pods_by_queue[key] -= 1
                milli_by_queue[key] -= pod.gpu_milli_total
                if waiting:
                    start_waiting(now)
            times.append(now)
            allocation.append(fleet.allocation * 100)
            occupancy.append(fleet.occupied_gpus() * 100 / fleet.total_gpus)
            if observe is not None:
                observe(now, usage.scopes)

        stamps = np.array(times)
        spans = np.diff(stamps, append=stamps[-1]) if len(stamps) else np.array([])
        wait_values = np.array(waits)
        for queued in waiting:
            books.still_waiting[pods[queued].department] += 1
        first, last = (float(stamps[0]), float(stamps[-1])) if len(stamps) else (0.0, 0.0)
        return ReplayResult(
            policy=self.policy.name,
            total_gpus=fleet.total_gpus,
            pods=len(pods),
            admitted=admitted,
            started_on_arrival=on_arrival,
            started_after_waiting=len(waits) - on_arrival,
            still_waiting=len(waiting),
            denied=dict(denied),
            allocation_pct=_spread(np.array(allocation), spans),
            occupancy_pct=_spread(np.array(occupancy), spans),
            wait_s=_spread(wait_values, np.ones(len(wait_values))),
            wait_max_s=float(wait_values.max()) if len(wait_values) else 0.0,
            duration_s=last - first,
            departments=books.counts(),
            scope_use=quota.use(first, last),
        )


class _QuotaBook:
    """The usage per scope that admitted pods hold, kept as the ledger keeps it, with
    each scope's time-weighted area and peak for :class:`ScopeUse`."""

    def __init__(self) -> None:
        self.usage: dict[Scope, Resources] = {}
        self.held: dict[int, Decision] = {}
        self.since: dict[Scope, float] = {}
        self.area: dict[Scope, list[float]] = {}
        self.peak: dict[Scope, Resources] = {}

    def _change(self, scope: Scope, new: Resources, now: float) -> None:
        old = self.usage.get(scope, ZERO)
        area = self.area.setdefault(scope, [0.0] * len(RESOURCE_NAMES))
        elapsed = now - self.since.get(scope, now)
        for i, value in enumerate(old.values):
            area[i] += value * elapsed
        self.since[scope] = now
        self.peak[scope] = self.peak.get(scope, ZERO).max(new)
        if new.is_zero():
            self.usage.pop(scope, None)
        else:
            self.usage[scope] = new

    def hold(self, index: int, decision: Decision, now: float) -> None:
        if not decision.scopes or decision.amount.is_zero():
            return
        self.held[index] = decision
        for scope in decision.scopes:
            self._change(scope, self.usage.get(scope, ZERO) + decision.amount, now)

    def release(self, index: int, now: float) -> None:
        decision = self.held.pop(index, None)
        if decision is None:
            return
        for scope in decision.scopes:
            self._change(scope, self.usage[scope] - decision.amount, now)

    def use(self, first: float, last: float) -> dict[Scope, ScopeUse]:
        span = last - first
        found: dict[Scope, ScopeUse] = {}
        for scope, area in self.area.items():
            held = self.usage.get(scope, ZERO).values
            closed = [a + v * (last - self.since[scope]) for a, v in zip(area, held, strict=True)]
            found[scope] = ScopeUse(
                mean={
                    name: round(total / span, 3) if span > 0 else 0.0
                    for name, total in zip(RESOURCE_NAMES, closed, strict=True)
                },
                peak=self.peak[scope],
            )
        return found


class _DepartmentBooks:
    """Counts per department, for :class:`DepartmentCounts`."""

    def __init__(self) -> None:
        self.pods: Counter[str] = Counter()
        self.admitted: Counter[str] = Counter()
        self.on_arrival: Counter[str] = Counter()
        self.after_waiting: Counter[str] = Counter()
        self.still_waiting: Counter[str] = Counter()
        self.denied: Counter[tuple[str, str]] = Counter()

    def counts(self) -> dict[str, DepartmentCounts]:
        found: dict[str, DepartmentCounts] = {}
        for name in sorted(self.pods):
            if not name:
                continue  # pods that name no department (the trace's, or CPU-only)
            found[name] = DepartmentCounts(
                pods=self.pods[name],
                admitted=self.admitted[name],
                started_on_arrival=self.on_arrival[name],
                started_after_waiting=self.after_waiting[name],
                still_waiting=self.still_waiting[name],
                denied={r: n for (d, r), n in sorted(self.denied.items()) if d == name},
            )
        return found


def run(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    policy: str,
    *,
    admission: Admission = admit_all,
    seed: int = 42,
    observe: Observer | None = None,
) -> ReplayResult:
    """Replay ``pods`` on ``nodes`` with the placement ``policy``."""
    return Replayer(pods, nodes, policy, admission=admission, seed=seed).run(observe=observe)


def accelerated(pods: Sequence[Pod], load: float) -> list[Pod]:
    """The pods arriving ``load`` times as fast (every time since the first arrival
    divided by ``load``), each running as long: about ``load`` times the concurrent
    demand with the same mix of pods, a workload grown ``load``-fold. 1: unchanged."""
    if not 0 < load < float("inf"):
        raise ConfigError(f"the load is {load}; it must be a number above 0")
    if load == 1:
        return list(pods)
    times = [p.arrival_s for p in pods if p.arrival_s is not None]
    origin = min(times) if times else 0.0
    return [
        p if p.arrival_s is None else replace(p, arrival_s=origin + (p.arrival_s - origin) / load)
        for p in pods
    ]


def peak_gpu_milli(pods: Sequence[Pod]) -> int:
    """The most GPU thousandths the pods ask for at one time, if each ran from its
    arrival for its duration (no waiting)."""
    changes: list[tuple[float, int]] = []
    for pod in pods:
        if pod.arrival_s is None or not pod.gpu_milli_total:
            continue
        changes.append((pod.arrival_s, pod.gpu_milli_total))
        if pod.duration_s is not None:
            changes.append((pod.arrival_s + pod.duration_s, -pod.gpu_milli_total))
    level = peak = 0
    for _, change in sorted(changes):
        level += change
        peak = max(peak, level)
    return peak


def _holdable(nodes: Sequence[Node], kinds: Kinds, models: Sequence[str]) -> list[bool]:
    """Which kinds some node of the fleet could hold when empty."""
    empty = Fleet(nodes, models=models)
    able = np.zeros(len(kinds), dtype=np.bool_)
    seen: set[tuple[int, ...]] = set()
    for node in range(len(empty)):
        key = empty.state_key(node)
        if key not in seen:
            seen.add(key)
            able |= empty.fits(kinds, node)
    return [bool(a) for a in able]


def stratified(nodes: Sequence[Node]) -> list[Node]:
    """The nodes reordered so that every prefix keeps the fleet's mix of node shapes
    (model, GPUs, CPU, memory): a shape with a tenth of the nodes has about every
    tenth place. Fleets sized by prefix then shrink every shape alike."""
    shapes: dict[tuple[str, int, int, int], list[Node]] = {}
    for node in nodes:
        shapes.setdefault((node.model, node.gpus, node.cpu_milli, node.memory_mib), []).append(node)
    ranked: list[tuple[float, int, Node]] = []
    for group in shapes.values():
        for position, node in enumerate(group):
            ranked.append(((position + 0.5) / len(group), len(ranked), node))
    return [node for _, _, node in sorted(ranked, key=lambda item: (item[0], item[1]))]


@dataclass(frozen=True, kw_only=True)
class Needed:
    """The smallest fleet prefix (in :func:`stratified` order) found to serve the
    trace at ``acceptance``, and the replay on it. ``gpus`` is None when even the
    whole fleet does not."""

    acceptance: float
    nodes: int | None
    gpus: int | None
    result: ReplayResult


def gpus_needed(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    policy: str,
    *,
    acceptance: float = 0.99,
    admission: Admission = admit_all,
    seed: int = 42,
    on_probe: Callable[[int], None] | None = None,
) -> Needed:
    """Bisect the fleet size: acceptance grows with the fleet in practice (not in
    every case, as in any bin packing), so this is the smallest size bisection finds."""
    if not 0 < acceptance <= 1:
        raise ConfigError(f"the acceptance is {acceptance}; it must be above 0 and at most 1")
    order = stratified(nodes)
    replayer = Replayer(pods, order, policy, admission=admission, seed=seed)

    def probe(count: int) -> ReplayResult:
        if on_probe is not None:
            on_probe(count)
        return replayer.run(order[:count])

    # start from the fleet that holds the trace's peak demand and grow it (doubling)
    # until it serves the trace, then bisect: a handful of replays, not log2(nodes)
    gpus = np.cumsum([n.gpus for n in order])
    peak = peak_gpu_milli(pods) / MILLI_PER_GPU
    low, high = 0, min(int(np.searchsorted(gpus, peak)) + 1, len(order))
    best = probe(high)
    while best.acceptance < acceptance and high < len(order):
        low, high = high, min(2 * high, len(order))
        best = probe(high)
    if best.acceptance < acceptance:
        return Needed(acceptance=acceptance, nodes=None, gpus=None, result=best)
    while high - low > 1:
        middle = (low + high) // 2
        if not any(n.gpus for n in order[:middle]):
            low = middle
            continue
        result = probe(middle)
        if result.acceptance >= acceptance:
            high, best = middle, result
        else:
            low = middle
    return Needed(
        acceptance=acceptance,
        nodes=high,
        gpus=sum(n.gpus for n in order[:high]),
        result=best,
    )


@dataclass(frozen=True, kw_only=True)
class Saving:
    """GPUs needed with slicing and with whole cards, for the same trace.

    A sliced cluster can always fall back to giving pods whole cards, so slicing never
    needs more GPUs than whole cards: :attr:`sliced_gpus` is the smaller of the two.
    A placement heuristic can still do worse sliced than whole-card on some trace (a
    property test found one with random placement on CPU-bound nodes); then
    :attr:`anomaly` is true and the whole-card figure stands for both.
    """

    sliced: Needed
    whole_cards: Needed

    @property
    def sliced_gpus(self) -> int | None:
        found = [g for g in (self.sliced.gpus, self.whole_cards.gpus) if g is not None]
        return min(found) if found else None

    @property
    def anomaly(self) -> bool:
        """The policy's own sliced placement needed more than its whole-card one."""
        return self.sliced_gpus != self.sliced.gpus

    @property
    def saving(self) -> float | None:
        """1 - sliced / whole-card GPUs; None when the whole fleet does not serve the
        trace with whole cards."""
        sliced = self.sliced_gpus
        if sliced is None or not self.whole_cards.gpus:
            return None
        return 1.0 - sliced / self.whole_cards.gpus


def saving(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    policy: str,
    *,
    acceptance: float = 0.99,
    admission: Admission = admit_all,
    seed: int = 42,
    on_probe: Callable[[int], None] | None = None,
) -> Saving:
    """GPUs needed to serve ``pods`` at ``acceptance`` as sliced, and with every pod
    given whole cards (a sharing pod takes a card of its own)."""

    def needed(trace: Sequence[Pod]) -> Needed:
        return gpus_needed(
            trace,
            nodes,
            policy,
            acceptance=acceptance,
            admission=admission,
            seed=seed,
            on_probe=on_probe,
        )

    return Saving(sliced=needed(pods), whole_cards=needed([p.as_whole_cards() for p in pods]))
