"""The reconciler on recorded watch streams (built with the kubernetes client's
models, replayed behind the adapter) against a real store."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from admission import kube
from admission.reconciler import Metrics, Reconciler, run_watch
from governance.storage import ledger
from governance.storage.ledger import State
from governance.storage.store import Store
from governance.watching import Backoff
from tests.support.kube import (
    FakeClock,
    RecordedPodApi,
    bookmark,
    event,
    gone,
    make_pod,
    pod_list,
    reserve,
    slices_in_use,
    with_state,
)

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    store: Store
    clock: FakeClock
    registry: CollectorRegistry
    reconciler: Reconciler

    def run(self, raw: RecordedPodApi, rounds: int) -> None:
        run_watch(
            self.reconciler,
            kube.KubePods(raw),
            threading.Event(),
            backoff=Backoff(base_s=0.001, cap_s=0.002, rng=random.Random(1)),
            max_rounds=rounds,
            rewatch_pause_s=0,
        )

    def state(self, allocation_id: str) -> State:
        entry = ledger.get(self.store, allocation_id)
        assert entry is not None
        return entry.state

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


_open: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def rig(url: str, *, namespace: str | None = None, clock: FakeClock | None = None) -> Rig:
    store = Store(url)
    _open.append(store)
    clock = clock or FakeClock()
    registry = CollectorRegistry()
    reconciler = Reconciler(store, metrics=Metrics(registry), namespace=namespace, clock=clock)
    return Rig(store=store, clock=clock, registry=registry, reconciler=reconciler)


@pytest.fixture
def sqlite_rig(sqlite_url: str) -> Rig:
    return rig(sqlite_url)


def test_pods_bind_and_release_through_their_lifecycle(store_url: str) -> None:
    r = rig(store_url)
    running, job, gpu_less = reserve(r.store), reserve(r.store), reserve(r.store)
    p1 = make_pod("train-1", phase="Running", resource_version="10", allocation_id=running)
    p2 = make_pod("job-1", resource_version="11", allocation_id=job)
    p3 = make_pod("web-1", resource_version="12")
    raw = RecordedPodApi(
        lists=[pod_list([p1, p3], "20")],
        watches=[
            [
                event("ADDED", with_state(p2, resource_version="21")),
                event("MODIFIED", with_state(p2, resource_version="22", phase="Running")),
                event("MODIFIED", with_state(p2, resource_version="23", phase="Succeeded")),
                event("MODIFIED", with_state(p3, resource_version="24", phase="Running")),
                event("DELETED", with_state(p1, resource_version="25")),
            ]
        ],
    )
    assert slices_in_use(r.store) == 3
    r.run(raw, rounds=1)
    assert r.state(running) is State.RELEASED
    assert r.state(job) is State.RELEASED
    assert r.state(gpu_less) is State.RESERVED  # its pod has not shown up yet
    entry = ledger.get(r.store, job)
    assert entry is not None
    assert (entry.pod_uid, entry.pod_name) == (p2.metadata.uid, "job-1")
    assert entry.bound_at is not None and entry.ended_at is not None
    assert slices_in_use(r.store) == 1
    assert raw.watched_from == ["20"]
    assert r.reconciler.resource_version == "25"
    assert r.metric("gpupool_reconciler_ledger_actions_total", action="bind") == 2
    assert r.metric("gpupool_reconciler_ledger_actions_total", action="release") == 2
    assert r.metric("gpupool_reconciler_watch_events_total", type="MODIFIED") == 3
    assert r.metric("gpupool_reconciler_events_skipped_total", reason="unannotated") == 1
    assert r.metric("gpupool_reconciler_last_resync_timestamp_seconds") == r.clock().timestamp()


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_release_their_slices(sqlite_rig: Rig, phase: str) -> None:
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("job", phase="Running", resource_version="5", allocation_id=alloc)
    raw = RecordedPodApi(
        lists=[pod_list([pod], "5")],
        watches=[[event("MODIFIED", with_state(pod, resource_version="6", phase=phase))]],
    )
    r.run(raw, rounds=1)
    assert r.state(alloc) is State.RELEASED
    assert slices_in_use(r.store) == 0


def test_duplicate_and_out_of_order_events_never_move_an_entry_backwards(
    sqlite_rig: Rig,
) -> None:
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("train", resource_version="31", allocation_id=alloc)
    raw = RecordedPodApi(
        lists=[pod_list([], "30")],
        watches=[
            [
                event("ADDED", pod),
                event("ADDED", pod),  # duplicate
                event("MODIFIED", with_state(pod, resource_version="33", phase="Succeeded")),
                event("MODIFIED", with_state(pod, resource_version="32", phase="Running")),
                event("DELETED", with_state(pod, resource_version="34", phase="Succeeded")),
                event("MODIFIED", with_state(pod, resource_version="32", phase="Running")),
            ]
        ],
    )
    r.run(raw, rounds=1)
    assert r.state(alloc) is State.RELEASED
    assert slices_in_use(r.store) == 0
    assert r.metric("gpupool_reconciler_events_skipped_total", reason="duplicate") == 1
    assert r.metric("gpupool_reconciler_events_skipped_total", reason="stale") == 2
    assert r.metric("gpupool_reconciler_ledger_actions_total", action="bind") == 1
    assert r.metric("gpupool_reconciler_ledger_actions_total", action="release") == 1


def test_a_late_event_for_a_released_entry_does_not_bind_it_again(sqlite_rig: Rig) -> None:
    """Even when versions cannot be compared (a new process, no memory of the pod)."""
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("train", phase="Running", resource_version="7", allocation_id=alloc)
    r.run(RecordedPodApi(lists=[pod_list([], "5")], watches=[[event("DELETED", pod)]]), 1)
    fresh = rig(r.store.url, clock=r.clock)
    fresh.run(RecordedPodApi(lists=[pod_list([], "8")], watches=[[event("ADDED", pod)]]), 1)
    assert fresh.state(alloc) is State.RELEASED
    assert slices_in_use(r.store) == 0


def test_bookmarks_move_the_resume_point(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    raw = RecordedPodApi(
        lists=[pod_list([], "100")],
        watches=[[bookmark("150")], [bookmark("175")], []],
    )
    r.run(raw, rounds=3)
    assert raw.watched_from == ["100", "150", "175"]
    assert raw.listed == 1
    assert r.metric("gpupool_reconciler_watch_events_total", type="BOOKMARK") == 2


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("event", id="410-error-event-mid-stream"),
        pytest.param("http", id="410-answer-to-the-watch-request"),
    ],
)
def test_gone_mid_stream_lists_again_and_catches_up(sqlite_rig: Rig, how: str) -> None:
    r = sqlite_rig
    first, second, third = reserve(r.store), reserve(r.store), reserve(r.store)
    p1 = make_pod("a", phase="Running", resource_version="41", allocation_id=first)
    p2 = make_pod("b", phase="Running", resource_version="42", allocation_id=second)
    p3 = make_pod("c", phase="Running", resource_version="90", allocation_id=third)
    expired: object = gone("42", "80") if how == "event" else None
    streams: list[object] = [
        [event("ADDED", p1), event("ADDED", p2), expired]
        if how == "event"
        else [event("ADDED", p1), event("ADDED", p2)],
    ]
    if how == "http":
        streams.append(kube.ApiStatusError(410, "Expired"))
    raw = RecordedPodApi(
        # While the watch was down: a deleted, c created. The re-list is the truth.
        lists=[pod_list([], "40"), pod_list([p2, p3], "95")],
        watches=streams,  # type: ignore[arg-type]
    )
    r.run(raw, rounds=3)
    assert raw.listed == 2
    assert (r.state(first), r.state(second), r.state(third)) == (
        State.RELEASED,
        State.BOUND,
        State.BOUND,
    )
    assert raw.watched_from[-1] == "95"
    assert r.metric("gpupool_reconciler_relists_total", reason="gone") == 1
    assert slices_in_use(r.store) == 2


def test_errors_back_off_and_resume_from_the_last_applied_version(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("a", resource_version="61", allocation_id=alloc)
    raw = RecordedPodApi(
        lists=[pod_list([], "60")],
        watches=[
            [event("ADDED", pod), ConnectionResetError("connection reset by peer")],
            kube.ApiStatusError(500, "Internal Server Error"),
            [{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}],
            [event("MODIFIED", with_state(pod, resource_version="62", phase="Failed"))],
        ],
    )
    r.run(raw, rounds=5)
    assert raw.watched_from == ["60", "61", "61", "61", "62"]
    assert raw.listed == 1
    assert r.state(alloc) is State.RELEASED
    assert r.metric("gpupool_reconciler_errors_total", kind="other") == 1
    assert r.metric("gpupool_reconciler_errors_total", kind="watch") == 2


def test_restart_midway_resync_rebuilds_the_bindings(store_url: str) -> None:
    clock = FakeClock()
    first = rig(store_url, clock=clock)
    kept, deleted, created, never = (reserve(first.store) for _ in range(4))
    pk = make_pod("kept", phase="Running", resource_version="3", allocation_id=kept)
    pd = make_pod("deleted", phase="Running", resource_version="4", allocation_id=deleted)
    pc = make_pod("created", resource_version="9", allocation_id=created)
    first.run(RecordedPodApi(lists=[pod_list([pk], "3")], watches=[[event("ADDED", pd)]]), rounds=1)
    assert (first.state(kept), first.state(deleted)) == (State.BOUND, State.BOUND)
    bound_at = ledger.get(first.store, kept).bound_at  # type: ignore[union-attr]
    first.store.close()  # the process dies; meanwhile "deleted" is deleted, "created" created

    clock.advance(30)
    second = rig(store_url, clock=clock)
    second.run(RecordedPodApi(lists=[pod_list([pk, pc], "12")]), rounds=1)
    assert second.state(kept) is State.BOUND
    assert ledger.get(second.store, kept).bound_at == bound_at  # type: ignore[union-attr]
    assert second.state(deleted) is State.RELEASED
    assert second.state(created) is State.BOUND
    assert second.state(never) is State.RESERVED  # left to the TTL
    assert slices_in_use(second.store) == 3
    assert ledger.rebuild_usage(second.store) == 3
    assert slices_in_use(second.store) == 3  # the running counters were right


def test_reservations_whose_pod_never_appears_expire(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    from datetime import timedelta

    lost = reserve(r.store, ttl=timedelta(seconds=60))
    seen = reserve(r.store, ttl=timedelta(seconds=60))
    pod = make_pod("seen", resource_version="2", allocation_id=seen)
    r.run(RecordedPodApi(lists=[pod_list([pod], "2")]), rounds=1)
    r.clock.advance(59)
    assert r.reconciler.expire() == []
    r.clock.advance(2)  # past the TTL, but no pod seen since the list: spared
    assert r.reconciler.expire() == []
    # a bookmark: the server has sent every event up to now, and no pod came for "lost"
    r.run(RecordedPodApi(lists=[], watches=[[bookmark("3")]]), rounds=1)
    assert r.reconciler.synced_at == r.clock.now
    assert [e.id for e in r.reconciler.expire()] == [lost]
    assert (r.state(lost), r.state(seen)) == (State.EXPIRED, State.BOUND)
    assert slices_in_use(r.store) == 1
    assert r.metric("gpupool_reconciler_ledger_actions_total", action="expire") == 1
    # The pod shows up after all (a slow API server): it is counted again.
    late = make_pod("late", resource_version="4", allocation_id=lost)
    r.run(RecordedPodApi(lists=[], watches=[[event("ADDED", late)]]), rounds=1)
    assert r.state(lost) is State.BOUND
    assert slices_in_use(r.store) == 2


def test_a_broken_watch_never_expires_the_reservation_of_a_pod_it_did_not_see(
    store_url: str,
) -> None:
    """The pod was created after the list; the watch then broke (43 failed attempts in
    issue 13.4) and its ADDED event never came. Past the TTL the entry is spared while
    the view is stale, and bound once the watch delivers the pod."""
    from datetime import timedelta

    r = rig(store_url)
    r.run(RecordedPodApi(lists=[pod_list([], "5")]), rounds=1)
    entry = reserve(r.store, now=r.clock.now, ttl=timedelta(seconds=60))
    pod = make_pod("unseen", resource_version="6", allocation_id=entry)
    broken = RecordedPodApi(lists=[], watches=[ConnectionResetError("watch broken")] * 43)
    r.clock.advance(30)
    r.run(broken, rounds=43)
    assert r.metric("gpupool_reconciler_errors_total", kind="other") == 43
    r.clock.advance(600)
    assert r.reconciler.expire() == []
    assert r.state(entry) is State.RESERVED
    r.run(RecordedPodApi(lists=[], watches=[[event("ADDED", pod), bookmark("7")]]), rounds=1)
    assert r.state(entry) is State.BOUND
    assert r.reconciler.expire() == []
    assert slices_in_use(r.store) == 1


def test_a_pod_deleted_before_it_was_seen_releases_its_reservation(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("blink", resource_version="8", allocation_id=alloc)
    raw = RecordedPodApi(lists=[pod_list([], "7")], watches=[[event("DELETED", pod)]])
    r.run(raw, rounds=1)
    entry = ledger.get(r.store, alloc)
    assert entry is not None and entry.state is State.RELEASED
    assert entry.pod_uid == pod.metadata.uid  # the history says which pod it was
    assert slices_in_use(r.store) == 0


def test_forged_annotations_change_nothing(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    real = reserve(r.store)
    other_ns = reserve(r.store, namespace="team-b")
    victim = make_pod("victim", phase="Running", resource_version="2", allocation_id=real)
    copycat = make_pod("copycat", phase="Running", resource_version="3", allocation_id=real)
    made_up = make_pod("made-up", phase="Running", resource_version="4", allocation_id="alloc-x")
    thief = make_pod("thief", phase="Running", resource_version="5", allocation_id=other_ns)
    raw = RecordedPodApi(
        lists=[pod_list([victim], "2")],
        watches=[
            [
                event("ADDED", copycat),
                event("ADDED", made_up),
                event("ADDED", thief),
                event("DELETED", with_state(copycat, resource_version="6")),
                event("DELETED", with_state(thief, resource_version="7")),
            ]
        ],
    )
    r.run(raw, rounds=1)
    entry = ledger.get(r.store, real)
    assert entry is not None and entry.state is State.BOUND
    assert entry.pod_uid == victim.metadata.uid
    assert r.state(other_ns) is State.RESERVED
    assert ledger.get(r.store, "alloc-x") is None
    assert slices_in_use(r.store) == 2
    suspicious = "gpupool_reconciler_suspicious_pods_total"
    assert r.metric(suspicious, reason="PodMismatch") == 2
    assert r.metric(suspicious, reason="UnknownAllocation") == 1
    assert r.metric(suspicious, reason="NamespaceMismatch") == 2


def test_two_pods_claiming_one_allocation_are_both_counted(store_url: str) -> None:
    """The entry stays with the first pod seen; the later claim is counted on an entry
    of its own while its pod runs (issue 12.2), released when the pod goes, once."""
    r = rig(store_url)
    shared = reserve(r.store)  # a generateName pod: no name at admission
    first = make_pod("trainer-abcde", phase="Running", resource_version="2", allocation_id=shared)
    later = make_pod("trainer-fghij", phase="Pending", resource_version="3", allocation_id=shared)
    r.run(
        RecordedPodApi(
            lists=[pod_list([first], "2")],
            watches=[
                [
                    event("ADDED", later),
                    event("MODIFIED", with_state(later, resource_version="4", phase="Running")),
                ]
            ],
        ),
        rounds=1,
    )
    entry = ledger.get(r.store, shared)
    assert entry is not None and entry.pod_uid == first.metadata.uid
    own = ledger.by_request(r.store, ledger.duplicate_uid(later.metadata.uid))
    assert own is not None and own.id != shared
    assert (own.state, own.pod_uid, own.pod_name) == (
        State.BOUND,
        later.metadata.uid,
        "trainer-fghij",
    )
    assert (own.amount, own.department, own.queue) == (entry.amount, entry.department, entry.queue)
    assert slices_in_use(r.store) == 2
    assert r.metric("gpupool_reconciler_duplicate_claims_total") == 1
    assert r.metric("gpupool_reconciler_suspicious_pods_total", reason="PodMismatch") == 2

    # a re-list that shows both again counts the later one once
    r.reconciler.resource_version = None
    r.run(RecordedPodApi(lists=[pod_list([first, later], "5")]), rounds=1)
    assert slices_in_use(r.store) == 2
    assert r.metric("gpupool_reconciler_duplicate_claims_total") == 1

    # the later pod goes: its own entry is released, the first pod keeps its entry
    r.run(
        RecordedPodApi(
            lists=[], watches=[[event("DELETED", with_state(later, resource_version="6"))]]
        ),
        rounds=1,
    )
    assert ledger.get(r.store, own.id).state is State.RELEASED  # type: ignore[union-attr]
    assert r.state(shared) is State.BOUND
    assert slices_in_use(r.store) == 1
    assert ledger.rebuild_usage(r.store) == 1


def test_a_namespaced_reconciler_leaves_other_namespaces_alone(sqlite_url: str) -> None:
    everything = rig(sqlite_url)
    mine, theirs = reserve(everything.store), reserve(everything.store, namespace="team-b")
    everything.run(
        RecordedPodApi(
            lists=[
                pod_list(
                    [
                        make_pod("a", resource_version="1", allocation_id=mine),
                        make_pod(
                            "b", namespace="team-b", resource_version="2", allocation_id=theirs
                        ),
                    ],
                    "2",
                )
            ]
        ),
        rounds=1,
    )
    scoped = rig(sqlite_url, namespace="team-a", clock=everything.clock)
    scoped.run(RecordedPodApi(lists=[pod_list([], "5")]), rounds=1)
    assert (scoped.state(mine), scoped.state(theirs)) == (State.RELEASED, State.BOUND)


def test_store_outage_is_retried_and_nothing_is_lost(sqlite_rig: Rig) -> None:
    r = sqlite_rig
    alloc = reserve(r.store)
    pod = make_pod("train", phase="Running", resource_version="3", allocation_id=alloc)
    good = r.store
    down = Store("postgresql+psycopg://nobody@127.0.0.1:1/none", migrate=False)
    _open.append(down)
    r.reconciler.store = down
    raw = RecordedPodApi(lists=[pod_list([pod], "3"), pod_list([pod], "4"), pod_list([pod], "4")])
    r.run(raw, rounds=2)
    assert r.metric("gpupool_reconciler_errors_total", kind="store") == 2
    assert r.reconciler.resource_version is None  # the resync did not complete
    assert r.state(alloc) is State.RESERVED
    r.reconciler.store = good  # the database is back
    r.run(raw, rounds=1)
    assert r.state(alloc) is State.BOUND
    assert r.metric("gpupool_reconciler_relists_total", reason="error") == 1
