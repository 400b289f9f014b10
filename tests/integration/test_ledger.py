"""The ledger against real databases: every test runs on SQLite and on PostgreSQL
(``store_url``), with the clock injected through ``now``."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from governance import quotas, scopes
from governance.contract import Reason, SliceGrant
from governance.errors import StoreError, StoreUnavailable
from governance.model import Org
from governance.resources import ZERO, Limits, Resources
from governance.storage import ledger, schema
from governance.storage.ledger import State
from governance.storage.store import Store
from tests.support.core import (
    GIB,
    make_department,
    make_org,
    make_pool,
    make_queue,
    make_sku,
    sku_demand,
)
from tests.support.databases import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)

ORG = make_org(
    pools=[make_pool("a100", gpus=8, memory_mib_per_gpu=80 * GIB)],
    skus=[
        make_sku("a100-1g", memory_mib=20 * GIB, compute_pct=25),
        make_sku("a100-x2", memory_mib=80 * GIB, compute_pct=100, gpus_per_slice=2),
    ],
    departments=[
        make_department("ml", namespaces=("ml",), quota=Limits.of(slices=4)),
        make_department("cv", namespaces=("cv",), default_queue="main"),
    ],
    queues=[
        # train reaches 2 + min(1, 4 - 1) = 3; serve reaches 1 + what train leaves.
        make_queue(
            "train",
            department="ml",
            nominal=Limits.of(slices=2),
            borrowing_limit=Limits.of(slices=1),
        ),
        make_queue("serve", department="ml", nominal=Limits.of(slices=1)),
        make_queue("main", department="cv"),
    ],
)
ONE = ORG.skus["a100-1g"].demand(1, ORG.pools["a100"])


def grant_of(count: int = 1, sku: str = "a100-1g") -> dict[str, SliceGrant]:
    s = ORG.skus[sku]
    return {
        "main": SliceGrant(
            count=count,
            memory_mib=s.memory_mib_on(ORG.pools["a100"]),
            compute_pct=s.compute_pct,
            backend="hami",
            pool="a100",
            sku=sku,
            gpus_per_slice=s.gpus_per_slice,
        )
    }


def reserve(
    store: Store,
    uid: str,
    *,
    queue: str = "train",
    department: str = "ml",
    count: int = 1,
    sku: str = "a100-1g",
    now: datetime = T0,
    org: Org = ORG,
    **kwargs: object,
) -> ledger.Reservation:
    return ledger.reserve(
        store,
        org,
        demand=sku_demand(org, department=department, queue=queue, sku=sku, count=count),
        request_uid=uid,
        namespace=department,
        grants=grant_of(count, sku),
        subject="user:alice",
        pod_name=f"pod-{uid}",
        ttl=TTL,
        now=now,
        **kwargs,  # type: ignore[arg-type]
    )


def live_usage(store: Store) -> dict[str, Resources]:
    """Usage rows that are not zero (a denial or a release leaves zero rows behind)."""
    return {k: v for k, v in ledger.usage(store).items() if not v.is_zero()}


def expected_usage(allocations: list[ledger.Allocation]) -> dict[str, Resources]:
    totals: dict[str, Resources] = {}
    for a in allocations:
        if a.state.live:
            demand = quotas.Demand(
                department=a.department, queue=a.queue, sku=a.sku, pool=a.pool, amount=a.amount
            )
            for key in demand.path.locked:
                totals[key] = totals.get(key, ZERO) + a.amount
    return {k: v for k, v in totals.items() if not v.is_zero()}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


# -- reserve ----------------------------------------------------------------------------------


def test_reserve_records_a_reserved_entry_with_its_figures(store: Store) -> None:
    r = reserve(store, "req-1", count=2)
    assert r.allowed and not r.replayed
    assert r.decision.reason is Reason.ADMITTED
    a = r.allocation
    assert a is not None
    assert a.id.startswith("alloc-")
    assert ledger.get(store, a.id) == a
    assert ledger.by_request(store, "req-1") == a
    assert (a.state, a.namespace, a.pod_name, a.pod_uid, a.subject) == (
        State.RESERVED,
        "ml",
        "pod-req-1",
        "",
        "user:alice",
    )
    assert (a.department, a.queue, a.sku, a.pool) == ("ml", "train", "a100-1g", "a100")
    assert a.amount == Resources(slices=2, memory_mib=40 * GIB, compute_pct=50)
    assert a.borrowed == ZERO
    assert a.grants == grant_of(2)
    assert (a.created_at, a.expires_at, a.bound_at, a.ended_at) == (T0, T0 + TTL, None, None)
    assert live_usage(store) == expected_usage([a])


def test_reserve_takes_the_callers_allocation_id(store: Store) -> None:
    r = reserve(store, "req-1", allocation_id="alloc-mine")
    assert r.allocation is not None and r.allocation.id == "alloc-mine"
    assert ledger.get(store, "alloc-mine") is not None


def test_reserve_until_the_quota_is_full_then_deny_with_reason(store: Store) -> None:
    admitted = [reserve(store, f"train-{i}", now=T0 + timedelta(seconds=i)) for i in range(3)]
    assert all(r.allowed for r in admitted)
    assert [r.decision.borrowed.slices for r in admitted] == [0, 0, 1]
    assert [a.borrowed.slices for a in ledger.list_allocations(store)] == [1, 0, 0]

    over_borrow = reserve(store, "train-3", now=T0 + timedelta(minutes=1))
    assert not over_borrow.allowed and over_borrow.allocation is None
    assert over_borrow.decision.reason is Reason.BORROWING_LIMIT_EXCEEDED
    v = over_borrow.decision.violation
    assert v is not None
    assert (v.owner, v.resource, v.in_use, v.requested, v.limit) == (
        "queue ml/train",
        "slices",
        3,
        1,
        3,
    )

    assert reserve(store, "serve-0", queue="serve").allowed
    over_dept = reserve(store, "serve-1", queue="serve", now=T0 + timedelta(minutes=2))
    assert over_dept.decision.reason is Reason.DEPARTMENT_QUOTA_EXCEEDED
    assert over_dept.decision.violation is not None

    assert live_usage(store)[scopes.parse("department/ml")].slices == 4
    assert ledger.by_request(store, "serve-1") is None
    denials = ledger.recent_denials(store)
    assert [d.reason for d in denials] == ["DepartmentQuotaExceeded", "BorrowingLimitExceeded"]
    newest = denials[0]
    assert newest == ledger.Denial(
        at=T0 + timedelta(minutes=2),
        namespace="ml",
        department="ml",
        queue="serve",
        sku="a100-1g",
        subject="user:alice",
        reason="DepartmentQuotaExceeded",
        message=over_dept.decision.violation.message(),
    )
    assert ledger.recent_denials(store, departments=["cv"]) == []
    assert len(ledger.recent_denials(store, limit=1)) == 1


def test_other_departments_are_not_limited_by_a_full_one(store: Store) -> None:
    for i in range(3):
        reserve(store, f"t{i}")
    reserve(store, "s0", queue="serve")
    assert not reserve(store, "t-over").allowed
    cv = reserve(store, "cv-1", department="cv", queue="main", count=10)
    assert cv.allowed


def test_replay_of_a_request_uid_charges_nothing(store: Store) -> None:
    first = reserve(store, "req-1", count=2)
    before = ledger.usage(store)
    again = reserve(store, "req-1", count=2, now=T0 + timedelta(minutes=1))
    assert again.allowed and again.replayed
    assert again.allocation == first.allocation
    assert again.decision.borrowed == first.decision.borrowed
    assert ledger.usage(store) == before
    assert len(ledger.list_allocations(store)) == 1


def test_replay_finds_the_reservation_even_when_the_quota_is_now_full(store: Store) -> None:
    for i in range(3):
        reserve(store, f"t{i}")
    replay = reserve(store, "t2")
    assert replay.allowed and replay.replayed
    assert replay.decision.borrowed.slices == 1


def test_dry_run_records_nothing(store: Store) -> None:
    ok = reserve(store, "dry-1", dry_run=True)
    assert ok.allowed and ok.allocation is None and not ok.replayed
    denied = reserve(store, "dry-2", count=5, dry_run=True)
    assert not denied.allowed
    assert denied.decision.reason is Reason.BORROWING_LIMIT_EXCEEDED
    assert ledger.list_allocations(store) == []
    assert ledger.recent_denials(store) == []
    assert ledger.usage(store) == {}
    assert ledger.by_request(store, "dry-1") is None


def test_dry_run_sees_the_current_usage(store: Store) -> None:
    for i in range(3):
        reserve(store, f"t{i}")
    assert not reserve(store, "dry", dry_run=True).allowed
    assert reserve(store, "dry", queue="serve", dry_run=True).allowed


def test_recorded_denials_come_back_newest_first_by_department(store: Store) -> None:
    def denial(at: datetime, department: str, reason: str) -> ledger.Denial:
        return ledger.Denial(
            at=at,
            namespace=department,
            department=department,
            queue="",
            sku="a100-1g",
            subject="group:system:serviceaccounts:ml",
            reason=reason,
            message=f"{reason} in {department}",
        )

    first = denial(T0, "ml", "Forbidden")
    second = denial(T0 + timedelta(seconds=1), "cv", "UnknownSKU")
    third = denial(T0 + timedelta(seconds=2), "ml", "NamespaceNotOwned")
    for d in (first, second, third):
        ledger.record_denial(store, d)
    assert ledger.recent_denials(store) == [third, second, first]
    assert ledger.recent_denials(store, departments=["ml"]) == [third, first]
    assert ledger.recent_denials(store, departments=[]) == []
    assert ledger.recent_denials(store, limit=2) == [third, second]


def test_a_group_of_denials_with_an_over_long_username_is_recorded_truncated(
    store: Store,
) -> None:
    """A 600-character username made PostgreSQL refuse a whole group of 31 denials
    ("value too long"); the fields are cut to their columns instead (issue 13.8)."""
    long_user = "oidc:" + "u" * 595

    def denial(i: int, subject: str) -> ledger.Denial:
        return ledger.Denial(
            at=T0 + timedelta(seconds=i),
            namespace="ml",
            department="ml",
            queue="train",
            sku="a100-1g",
            subject=subject,
            reason="Forbidden",
            message=f"denial {i}",
        )

    group = [denial(i, long_user if i == 15 else f"user-{i}") for i in range(31)]
    assert ledger.record_denials(store, group) == 31
    recorded = ledger.recent_denials(store, limit=100)
    assert len(recorded) == 31
    [cut] = [d for d in recorded if d.message == "denial 15"]
    limit = schema.denials.c.subject.type.length
    assert len(cut.subject) == limit and cut.subject.startswith("oidc:uuu")
    assert cut.subject.endswith("…")


def test_a_denial_the_database_refuses_does_not_lose_the_rest_of_its_group(
    store: Store,
) -> None:
    """A group insert that fails is retried one denial at a time: only the bad row is
    lost (and logged)."""
    good = [
        ledger.Denial(
            at=T0,
            namespace="ml",
            department="ml",
            queue="",
            sku="",
            subject=f"user-{i}",
            reason="Forbidden",
            message=f"denial {i}",
        )
        for i in range(5)
    ]
    bad = ledger.Denial(
        at=T0,
        namespace="ml",
        department="ml",
        queue="",
        sku="",
        subject="user-x",
        reason=None,  # type: ignore[arg-type]  # NOT NULL: refused by both databases
        message="refused",
    )
    assert ledger.record_denials(store, [*good[:2], bad, *good[2:]]) == 5
    assert sorted(d.subject for d in ledger.recent_denials(store)) == [d.subject for d in good]


def test_an_admission_by_an_over_long_subject_is_recorded(store: Store) -> None:
    reservation = ledger.reserve(
        store,
        ORG,
        demand=sku_demand(ORG, department="ml", queue="train", sku="a100-1g", count=1),
        request_uid="req-long",
        namespace="ml",
        grants=grant_of(1),
        subject="oidc:" + "u" * 700,
        ttl=TTL,
        now=T0,
    )
    assert reservation.allowed and reservation.allocation is not None
    stored = ledger.get(store, reservation.allocation.id)
    assert stored is not None and len(stored.subject) == schema.allocations.c.subject.type.length


# -- bind, release, expire ----------------------------------------------------------------------


def test_bind_then_release_with_their_timestamps(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    t1, t2 = T0 + timedelta(seconds=30), T0 + timedelta(hours=2)

    bound = ledger.bind(store, a.id, pod_uid="uid-1", pod_name="trainer-abc", now=t1)
    assert (bound.state, bound.pod_uid, bound.pod_name, bound.bound_at, bound.ended_at) == (
        State.BOUND,
        "uid-1",
        "trainer-abc",
        t1,
        None,
    )
    assert ledger.get(store, a.id) == bound
    assert live_usage(store) == expected_usage([bound])

    released = ledger.release(store, a.id, now=t2)
    assert (released.state, released.bound_at, released.ended_at) == (State.RELEASED, t1, t2)
    assert ledger.get(store, a.id) == released
    assert live_usage(store) == {}


def test_bind_keeps_the_pod_name_given_at_reservation(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    assert ledger.bind(store, a.id, pod_uid="u", now=T0).pod_name == "pod-req-1"


def test_bind_and_release_are_idempotent(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    first = ledger.bind(store, a.id, pod_uid="u1", now=t1)
    assert ledger.bind(store, a.id, pod_uid="u2", now=t2) == first
    assert live_usage(store) == expected_usage([first])

    released = ledger.release(store, a.id, now=t1 + timedelta(hours=1))
    again = ledger.release(store, a.id, now=t2 + timedelta(hours=1))
    assert again == released
    assert ledger.get(store, a.id) == released
    assert live_usage(store) == {}


def test_release_before_the_pod_was_seen(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    released = ledger.release(store, a.id, now=T0 + timedelta(seconds=5))
    assert (released.state, released.bound_at, released.ended_at) == (
        State.RELEASED,
        None,
        T0 + timedelta(seconds=5),
    )
    assert live_usage(store) == {}


def test_a_released_entry_is_not_bound_again(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    released = ledger.release(store, a.id, now=T0)
    assert ledger.bind(store, a.id, pod_uid="u", now=T0 + timedelta(seconds=1)) == released
    assert live_usage(store) == {}


def test_release_to_a_live_state_is_refused(store: Store) -> None:
    a = reserve(store, "req-1").allocation
    assert a is not None
    with pytest.raises(ValueError, match="live state 'bound'"):
        ledger.release(store, a.id, state=State.BOUND)


def test_unknown_allocation_is_a_ledger_error(store: Store) -> None:
    with pytest.raises(ledger.LedgerError, match="no allocation 'alloc-nope' in the ledger"):
        ledger.bind(store, "alloc-nope", pod_uid="u")
    with pytest.raises(ledger.LedgerError):
        ledger.release(store, "alloc-nope")
    assert issubclass(ledger.LedgerError, StoreError)


def test_expire_frees_reservations_past_their_ttl_only(store: Store) -> None:
    old = reserve(store, "old", now=T0).allocation
    young = reserve(store, "young", now=T0 + timedelta(minutes=5)).allocation
    bound = reserve(store, "bound", queue="serve", now=T0).allocation
    assert old and young and bound
    ledger.bind(store, bound.id, pod_uid="u", now=T0 + timedelta(seconds=1))

    assert ledger.expire(store, now=T0 + TTL) == [], "expires_at itself is not past the TTL"
    t = T0 + TTL + timedelta(seconds=1)
    expired = ledger.expire(store, now=t)
    assert [a.id for a in expired] == [old.id]
    assert (expired[0].state, expired[0].ended_at) == (State.EXPIRED, t)
    assert ledger.get(store, old.id) == expired[0]
    assert ledger.get(store, young.id).state is State.RESERVED  # type: ignore[union-attr]
    assert ledger.get(store, bound.id).state is State.BOUND  # type: ignore[union-attr]
    assert ledger.expire(store, now=t) == [], "expiring again does nothing"
    assert live_usage(store) == expected_usage(ledger.list_allocations(store))
    assert live_usage(store)[scopes.parse("department/ml")].slices == 2


def test_expiry_beside_binding_never_leaves_a_bound_pod_expired(store: Store) -> None:
    """The reconciler binds pods while an expiry pass runs: an entry that its pod bound
    is never expired after (expiry read the reserved ids, then released them with a
    check that accepted *bound*: 7-205 running pods' entries ended expired, issue 13.4).
    An entry that expiry took first is bound again by its pod and charged again."""
    ids = []
    for i in range(30):
        r = reserve(store, f"race-{i}", department="cv", queue="main", now=T0)
        assert r.allocation is not None
        ids.append(r.allocation.id)
    late = T0 + TTL + timedelta(seconds=1)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def binder() -> None:
        barrier.wait(10)
        for i, allocation_id in enumerate(ids):
            ledger.bind(store, allocation_id, pod_uid=f"pod-{i}", now=late)

    def expirer() -> None:
        barrier.wait(10)
        for _ in range(20):
            ledger.expire(store, now=late)

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (binder, expirer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    everything = ledger.list_allocations(store)
    assert {a.state for a in everything} == {State.BOUND}
    assert live_usage(store) == expected_usage(everything)
    assert live_usage(store)[scopes.parse("department/cv")].slices == 30


def test_expiry_spares_entries_made_after_the_pods_were_last_seen(store: Store) -> None:
    """``created_before``: an entry whose pod could exist unseen (the watch is broken
    since) is not expired, however old."""
    seen = reserve(store, "seen", department="cv", queue="main", now=T0).allocation
    unseen = reserve(
        store, "unseen", department="cv", queue="main", now=T0 + timedelta(minutes=2)
    ).allocation
    assert seen and unseen
    later = T0 + timedelta(hours=1)
    expired = ledger.expire(store, now=later, created_before=T0 + timedelta(minutes=1))
    assert [a.id for a in expired] == [seen.id]
    assert ledger.get(store, unseen.id).state is State.RESERVED  # type: ignore[union-attr]
    assert live_usage(store) == expected_usage(ledger.list_allocations(store))


def test_a_late_pod_binding_an_expired_entry_is_charged_again(store: Store) -> None:
    a = reserve(store, "req-1", count=2).allocation
    assert a is not None
    ledger.expire(store, now=T0 + TTL + timedelta(seconds=1))
    assert live_usage(store) == {}
    late = ledger.bind(store, a.id, pod_uid="u", now=T0 + timedelta(hours=1))
    assert (late.state, late.bound_at, late.ended_at) == (
        State.BOUND,
        T0 + timedelta(hours=1),
        None,
    )
    assert live_usage(store) == expected_usage([late])
    assert live_usage(store)[scopes.parse("department/ml")].slices == 2
    ledger.release(store, a.id, now=T0 + timedelta(hours=2))
    assert live_usage(store) == {}


def test_timestamps_in_another_timezone_keep_their_instant(store: Store) -> None:
    """Regression: SQLite stored a non-UTC instant's wall clock and read it back as UTC."""
    paris = timezone(timedelta(hours=2))
    now = datetime(2026, 3, 1, 11, 0, tzinfo=paris)
    a = reserve(store, "req-1", now=now).allocation
    assert a is not None
    stored = ledger.get(store, a.id)
    assert stored is not None
    assert stored.created_at == now
    assert stored.expires_at == now + TTL
    assert stored.created_at.utcoffset() == timedelta(0), "read back in UTC"
    assert ledger.expire(store, now=now + TTL - timedelta(minutes=1)) == []
    assert len(ledger.expire(store, now=now + TTL + timedelta(seconds=1))) == 1


# -- history, usage, reports --------------------------------------------------------------------


def test_history_is_kept_and_usage_equals_the_live_allocations(store: Store) -> None:
    ids = []
    for i in range(3):
        r = reserve(store, f"t{i}", now=T0 + timedelta(seconds=i))
        assert r.allocation is not None
        ids.append(r.allocation.id)
    x2 = reserve(store, "cv-x2", department="cv", queue="main", sku="a100-x2", count=2)
    assert x2.allocation is not None
    ledger.bind(store, ids[0], pod_uid="p0", now=T0 + timedelta(minutes=1))
    ledger.release(store, ids[0], now=T0 + timedelta(minutes=5))
    ledger.bind(store, ids[1], pod_uid="p1", now=T0 + timedelta(minutes=1))
    ledger.expire(store, now=T0 + TTL + timedelta(minutes=1))

    everything = ledger.list_allocations(store)
    assert len(everything) == 4, "entries are never deleted"
    with store.read() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.allocations)).scalar() == 4
        )
    states = {a.request_uid: a.state for a in everything}
    assert states == {
        "t0": State.RELEASED,
        "t1": State.BOUND,
        "t2": State.EXPIRED,
        "cv-x2": State.EXPIRED,
    }
    expired = ledger.list_allocations(store, states=[State.EXPIRED])
    assert [a.request_uid for a in expired] == ["t2", "cv-x2"]
    assert {a.request_uid for a in ledger.list_allocations(store, department="cv")} == {"cv-x2"}
    assert len(ledger.list_allocations(store, departments=["ml", "cv"], limit=2)) == 2

    before = live_usage(store)
    assert before == expected_usage(everything)
    assert ledger.rebuild_usage(store) == 1
    assert live_usage(store) == before


def test_rebuild_usage_repairs_a_corrupted_row(store: Store) -> None:
    reserve(store, "t0", count=2)
    reserve(store, "cv0", department="cv", queue="main", sku="a100-x2")
    good = live_usage(store)
    with store.write() as conn:
        conn.execute(
            schema.usage.update().where(schema.usage.c.scope == "department/ml").values(slices=99)
        )
    assert live_usage(store) != good
    assert ledger.rebuild_usage(store) == 2
    assert live_usage(store) == good
    assert good[scopes.parse("pool/a100")] == Resources(
        slices=3, memory_mib=(40 + 160) * GIB, compute_pct=250
    )


def test_list_allocations_is_newest_first(store: Store) -> None:
    for i in range(3):
        reserve(store, f"t{i}", now=T0 + timedelta(seconds=10 - i))
    assert [a.request_uid for a in ledger.list_allocations(store)] == ["t0", "t1", "t2"]


def test_quota_report_figures(store: Store) -> None:
    for i in range(3):
        reserve(store, f"t{i}")
    reserve(store, "cv0", department="cv", queue="main", sku="a100-x2")
    lines = {(q.department, q.queue, q.resource): q for q in ledger.quota_report(store, ORG)}
    assert lines[("ml", "", "slices")] == ledger.QuotaLine(
        department="ml", queue="", resource="slices", used=3, limit=4, borrowed=0, ceiling=4
    )
    assert lines[("ml", "", "memory_mib")] == ledger.QuotaLine(
        department="ml",
        queue="",
        resource="memory_mib",
        used=60 * GIB,
        limit=None,
        borrowed=0,
        ceiling=None,
    )
    assert lines[("ml", "train", "slices")] == ledger.QuotaLine(
        department="ml", queue="train", resource="slices", used=3, limit=2, borrowed=1, ceiling=3
    )
    assert lines[("ml", "serve", "slices")] == ledger.QuotaLine(
        department="ml", queue="serve", resource="slices", used=0, limit=1, borrowed=0, ceiling=None
    )
    assert lines[("cv", "main", "compute_pct")].used == 200
    assert lines[("cv", "main", "compute_pct")].limit is None
    # One line per resource for each department and queue, departments sorted.
    assert len(lines) == 3 * (2 + 3)
    report = ledger.quota_report(store, ORG, departments=["ml"])
    assert {q.department for q in report} == {"ml"}
    assert [q.queue for q in report][::3] == ["", "serve", "train"]


# -- a store that goes away -----------------------------------------------------------------------


class TcpProxy:
    """Forwards a local port to the database, and can drop dead: the database going
    away, as the client sees it, without stopping the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                thread.start()
                self.threads.append(thread)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=5)
        with self.lock:
            for s in self.sockets:
                s.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def test_sqlite_store_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'gpupool.db'}"
    with pytest.raises(StoreUnavailable) as info:
        Store(url)
    message = str(info.value)
    assert "cannot be reached" in message and "Nothing was recorded" in message
    assert str(tmp_path / "gone") in message
    assert "unable to open database file" in message


@pytest.mark.postgres
def test_postgresql_on_a_closed_port_is_unavailable_and_hides_the_password() -> None:
    url = f"postgresql+psycopg://gpupool:s3cret@127.0.0.1:{_closed_port()}/gpupool"
    with pytest.raises(StoreUnavailable) as info:
        Store(url)
    message = str(info.value)
    assert "cannot be reached" in message and "Nothing was recorded" in message
    assert "s3cret" not in message
    assert "***" in message and "127.0.0.1" in message


def test_sqlite_store_that_goes_away_loses_nothing_committed(tmp_path: Path) -> None:
    home = tmp_path / "store"
    home.mkdir()
    url = f"sqlite:///{home / 'gpupool.db'}"
    store = Store(url)
    kept = reserve(store, "kept").allocation
    assert kept is not None
    usage_before = ledger.usage(store)
    store.engine.dispose()
    moved = tmp_path / "elsewhere"
    home.rename(moved)
    try:
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            reserve(store, "lost")
        with pytest.raises(StoreUnavailable):
            ledger.release(store, kept.id)
        with pytest.raises(StoreUnavailable):
            store.ping()
    finally:
        store.close()
        moved.rename(home)
    again = Store(url)
    try:
        assert ledger.get(again, kept.id) == kept
        assert ledger.by_request(again, "lost") is None
        assert ledger.usage(again) == usage_before
    finally:
        again.close()


@pytest.mark.postgres
def test_postgresql_store_that_goes_away_loses_nothing_committed(pg_database: str) -> None:
    direct = sa.engine.make_url(pg_database)
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    via_proxy = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = Store(via_proxy)
    try:
        kept = reserve(store, "kept").allocation
        assert kept is not None
        usage_before = ledger.usage(store)
        proxy.stop()
        with pytest.raises(StoreUnavailable, match="cannot be reached") as info:
            reserve(store, "lost")
        assert "Nothing was recorded" in str(info.value)
        with pytest.raises(StoreUnavailable):
            ledger.bind(store, kept.id, pod_uid="u")
    finally:
        proxy.stop()
        store.close()
    again = Store(pg_database)
    try:
        assert ledger.get(again, kept.id) == kept
        assert ledger.by_request(again, "lost") is None
        assert ledger.usage(again) == usage_before
    finally:
        again.close()


# -- PostgreSQL with a linguistic collation -------------------------------------------------------


@pytest.fixture
def pg_linguistic_url() -> Iterator[str]:
    """A fresh PostgreSQL database whose default collation ignores punctuation at the
    first level, as glibc's en_US.UTF-8 (a common default) and ICU's ``ka-shifted`` do."""
    base = os.environ.get("GPUPOOL_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL server: set GPUPOOL_TEST_PG_URL")
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-u-ka-shifted' LOCALE 'C.UTF-8'"
    with ExitStack() as stack:
        try:
            url = stack.enter_context(
                fresh_database(base, prefix="gpupool_icu_", create_options=icu)
            )
        except sa.exc.DBAPIError as exc:
            pytest.skip(f"cannot create an ICU-collated database: {exc.orig}")
        yield url


@pytest.mark.postgres
def test_borrowing_counts_every_queue_whatever_the_databases_collation(
    pg_linguistic_url: str,
) -> None:
    store = Store(pg_linguistic_url)
    try:
        _borrowing_past_a_queue_named_0night(store)
    finally:
        store.close()


def test_borrowing_counts_a_queue_whose_name_starts_with_a_digit(store: Store) -> None:
    _borrowing_past_a_queue_named_0night(store)


def _borrowing_past_a_queue_named_0night(store: Store) -> None:
    org = make_org(
        pools=[make_pool("a100")],
        skus=[make_sku("a100-1g")],
        departments=[make_department("ml", quota=Limits.of(slices=6))],
        queues=[
            make_queue("0night", department="ml", nominal=Limits.of(slices=1)),
            make_queue("train", department="ml", nominal=Limits.of(slices=1)),
            make_queue("serve", department="ml", nominal=Limits.of(slices=3)),
        ],
    )
    # 0night borrows one slice: 1 + min(inf, 6 - 1 - 3) = 2.
    assert reserve(store, "night", queue="0night", count=2, org=org).allowed
    # train may reach 1 + (6 - max(2, 1) - 3) = 2: one slice, not two.
    assert reserve(store, "t1", queue="train", count=1, org=org).allowed
    denied = reserve(store, "t2", queue="train", count=1, org=org)
    assert not denied.allowed, "serve could no longer reach its nominal quota of 3"
    assert denied.decision.reason is Reason.DEPARTMENT_QUOTA_EXCEEDED
