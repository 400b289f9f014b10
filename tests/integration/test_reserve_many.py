"""Group commit in the ledger: :func:`ledger.reserve_many` decides a group of requests in
one transaction exactly as one :func:`ledger.reserve` per request, in order, would.

Every test runs on SQLite and on PostgreSQL (``store_url``); the property test that
compares a grouped run with a one-by-one run on random sequences runs on SQLite."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import scopes
from governance.contract import Reason
from governance.errors import StoreError, StoreUnavailable
from governance.model import Org
from governance.resources import ZERO, Limits, Resources
from governance.storage import ledger, schema
from governance.storage.store import Store
from tests.support import ledger as L
from tests.support.core import (
    GIB,
    make_department,
    make_org,
    make_pool,
    make_queue,
    make_sku,
)

pytestmark = pytest.mark.integration

# ml: 4 slices. train reaches 2 + 1 borrowed; serve 1 (+ what train leaves). cv: no limit.
ORG = make_org(
    pools=[make_pool("a100", gpus=8, memory_mib_per_gpu=80 * GIB)],
    skus=[make_sku("a100-1g", memory_mib=20 * GIB, compute_pct=25)],
    departments=[
        make_department("ml", quota=Limits.of(slices=4)),
        make_department("cv", default_queue="main"),
    ],
    queues=[
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


def request(uid: str, *, org: Org = ORG, **kwargs: Any) -> ledger.ReserveRequest:
    return L.reserve_request(org, uid, **kwargs)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


# -- decided in order -----------------------------------------------------------------


def test_group_over_a_small_quota_admits_up_to_the_limit_and_denies_the_rest(
    store: Store,
) -> None:
    group = [request(f"train-{i}", now=L.T0 + timedelta(seconds=i)) for i in range(5)]
    answers = ledger.reserve_many(store, ORG, group)
    assert [a.allowed for a in answers] == [True, True, True, False, False]
    assert [a.decision.borrowed.slices for a in answers[:3]] == [0, 0, 1]
    assert not any(a.replayed for a in answers)
    for denied in answers[3:]:
        assert denied.allocation is None
        assert denied.decision.reason is Reason.BORROWING_LIMIT_EXCEEDED
        v = denied.decision.violation
        assert v is not None
        assert (v.owner, v.in_use, v.requested, v.limit) == ("queue ml/train", 3, 1, 3)

    allocations = ledger.list_allocations(store)
    assert sorted(a.request_uid for a in allocations) == ["train-0", "train-1", "train-2"]
    for answer in answers[:3]:
        assert answer.allocation is not None
        assert ledger.get(store, answer.allocation.id) == answer.allocation
    assert L.live_usage(store) == {
        key: Resources(slices=3, memory_mib=3 * 20 * GIB, compute_pct=75)
        for key in group[0].demand.path.locked
    }
    L.assert_usage_matches_allocations(store)

    denials = ledger.recent_denials(store)
    assert [(d.reason, d.at) for d in denials] == [
        ("BorrowingLimitExceeded", L.T0 + timedelta(seconds=4)),
        ("BorrowingLimitExceeded", L.T0 + timedelta(seconds=3)),
    ]
    violation = answers[4].decision.violation
    assert violation is not None
    assert denials[0] == ledger.Denial(
        at=L.T0 + timedelta(seconds=4),
        namespace="ml",
        department="ml",
        queue="train",
        sku="a100-1g",
        subject="user:alice",
        reason="BorrowingLimitExceeded",
        message=violation.message(),
    )
    assert "3 in use + 1 requested would exceed it by 1" in denials[0].message


def test_each_request_in_a_group_sees_what_the_ones_before_it_took(store: Store) -> None:
    # The department (4 slices) binds serve once train has borrowed; cv is not limited
    # by a full ml, though it shares the pool.
    group = [
        request("t0"),
        request("t1"),
        request("t2"),
        request("t3"),
        request("s0", queue="serve"),
        request("s1", queue="serve"),
        request("cv", department="cv", queue="main", count=4),
    ]
    answers = ledger.reserve_many(store, ORG, group)
    assert [(a.allowed, a.decision.reason) for a in answers] == [
        (True, Reason.ADMITTED),
        (True, Reason.ADMITTED),
        (True, Reason.ADMITTED),
        (False, Reason.BORROWING_LIMIT_EXCEEDED),
        (True, Reason.ADMITTED),
        (False, Reason.DEPARTMENT_QUOTA_EXCEEDED),
        (True, Reason.ADMITTED),
    ]
    usage = L.live_usage(store)
    assert usage[scopes.department("ml")].slices == 4
    assert usage[scopes.queue("ml", "train")].slices == 3
    assert usage[scopes.queue("ml", "serve")].slices == 1
    assert usage[scopes.pool("a100")].slices == 8
    L.assert_usage_matches_allocations(store)
    assert sorted(d.reason for d in ledger.recent_denials(store)) == [
        "BorrowingLimitExceeded",
        "DepartmentQuotaExceeded",
    ]


# -- replays --------------------------------------------------------------------------


def test_request_uid_repeated_in_a_group_is_replayed_and_charged_once(store: Store) -> None:
    group = [request("a", count=2), request("a", count=2), request("b"), request("a", count=2)]
    first, again, other, third = ledger.reserve_many(store, ORG, group)
    assert first.allowed and not first.replayed
    for replay in (again, third):
        assert replay.allowed and replay.replayed
        assert replay.decision.reason is Reason.ADMITTED
        assert replay.allocation == first.allocation
        assert replay.decision.borrowed == first.decision.borrowed
    # b comes after a's 2 slices, whatever the replays: it borrows the third
    assert other.allowed and other.decision.borrowed.slices == 1
    assert sorted(a.request_uid for a in ledger.list_allocations(store)) == ["a", "b"]
    assert L.live_usage(store)[scopes.queue("ml", "train")].slices == 3
    L.assert_usage_matches_allocations(store)


def test_request_uid_already_in_the_ledger_is_replayed_even_when_the_quota_is_full(
    store: Store,
) -> None:
    earlier = L.reserve_one(store, ORG, request("old", count=2))
    assert earlier.allowed and earlier.allocation is not None
    answers = ledger.reserve_many(
        store, ORG, [request("new"), request("old", count=2), request("over")]
    )
    new, old, over = answers
    assert new.allowed and new.decision.borrowed.slices == 1
    assert old.allowed and old.replayed
    assert old.allocation == earlier.allocation == ledger.by_request(store, "old")
    assert not over.allowed
    assert len(ledger.list_allocations(store)) == 2
    assert L.live_usage(store)[scopes.queue("ml", "train")].slices == 3
    assert [d.reason for d in ledger.recent_denials(store)] == ["BorrowingLimitExceeded"]


# -- nothing, or all of it ------------------------------------------------------------


def test_empty_group_is_a_no_op(store: Store) -> None:
    assert ledger.reserve_many(store, ORG, []) == []
    assert ledger.usage(store) == {}
    assert ledger.list_allocations(store) == []
    assert ledger.recent_denials(store) == []


def test_empty_group_does_not_touch_the_store(tmp_path: Path) -> None:
    unreachable = Store(f"sqlite:///{tmp_path / 'gone' / 'gpupool.db'}", migrate=False)
    try:
        assert ledger.reserve_many(unreachable, ORG, []) == []
    finally:
        unreachable.close()


def nonzero(usage: dict[str, Resources]) -> dict[str, Resources]:
    return {k: v for k, v in usage.items() if not v.is_zero()}


@pytest.mark.parametrize(
    "taken_in_ledger",
    [
        pytest.param(False, id="duplicate-inside-the-group"),
        pytest.param(True, id="id-already-in-the-ledger"),
    ],
)
def test_group_whose_transaction_fails_records_nothing_of_it(
    store: Store, taken_in_ledger: bool
) -> None:
    if taken_in_ledger:
        assert L.reserve_one(store, ORG, request("kept", allocation_id="alloc-dup")).allowed
    before = ledger.usage(store)
    kept = ledger.list_allocations(store)
    # the last request takes an id that the ledger (or the group's first request) holds
    group = [
        request("x", allocation_id=None if taken_in_ledger else "alloc-dup"),
        request("y", queue="serve"),
        request("z", count=9),  # denied: its denial belongs to the failed transaction too
        request("w", allocation_id="alloc-dup"),
    ]
    with pytest.raises(StoreError) as info:
        ledger.reserve_many(store, ORG, group)
    # a broken request is not a store that went away (the writers retry the former)
    assert not isinstance(info.value, StoreUnavailable)
    # no usage changed (PostgreSQL may have created the path's missing rows, empty, in a
    # transaction of their own before: locking them in one order needs them to exist)
    assert nonzero(ledger.usage(store)) == nonzero(before)
    assert ledger.list_allocations(store) == kept
    assert ledger.recent_denials(store) == []
    for uid in ("x", "y", "z", "w"):
        assert ledger.by_request(store, uid) is None
    # the store is fine afterwards: the same requests without the clash go through
    answers = ledger.reserve_many(store, ORG, group[:3])
    assert [a.allowed for a in answers] == [True, True, False]


# -- grouped or one by one: the same ledger -------------------------------------------

PROP_ORG = make_org(
    pools=[make_pool("a100", gpus=3, memory_mib_per_gpu=80 * GIB)],
    skus=[
        make_sku("small", memory_mib=20 * GIB, compute_pct=25),
        make_sku("big", memory_mib=80 * GIB, compute_pct=100),
    ],
    departments=[
        make_department(
            "ml",
            quota=Limits.of(slices=6, memory_mib=200 * GIB),
            per_sku={"big": Limits.of(slices=1)},
        ),
        make_department("cv", default_queue="main"),
    ],
    queues=[
        make_queue(
            "train",
            department="ml",
            nominal=Limits.of(slices=2),
            borrowing_limit=Limits.of(slices=2),
        ),
        make_queue(
            "serve",
            department="ml",
            nominal=Limits.of(slices=2, compute_pct=100),
            borrowing_limit=Limits.of(slices=0, compute_pct=50),
        ),
        make_queue("eval", department="ml"),
        make_queue("main", department="cv"),
    ],
)
PROP_QUEUES = [("ml", "train"), ("ml", "serve"), ("ml", "eval"), ("cv", "main")]

demands = st.lists(
    st.tuples(
        st.integers(0, 9),  # request uid: repeats are replays
        st.sampled_from(PROP_QUEUES),
        st.sampled_from(["small", "big"]),
        st.integers(1, 3),
    ),
    max_size=14,
)


@pytest.fixture(scope="module")
def twin_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Store]]:
    home = tmp_path_factory.mktemp("twins")
    one, grouped = Store(f"sqlite:///{home / 'one.db'}"), Store(f"sqlite:///{home / 'many.db'}")
    try:
        yield one, grouped
    finally:
        one.close()
        grouped.close()


def _empty(store: Store) -> None:
    with store.write() as conn:
        for table in (schema.allocations, schema.usage, schema.denials):
            conn.execute(sa.delete(table))


def _outcome(r: ledger.Reservation) -> tuple[bool, Reason, Resources, bool, str | None]:
    uid = r.allocation.request_uid if r.allocation is not None else None
    return (r.allowed, r.decision.reason, r.decision.borrowed, r.replayed, uid)


@pytest.mark.property
@settings(max_examples=40, deadline=None)
@given(items=demands, cuts=st.lists(st.integers(1, 5), min_size=1, max_size=14))
def test_reserve_many_in_groups_decides_as_reserve_one_by_one(
    twin_stores: tuple[Store, Store],
    items: list[tuple[int, tuple[str, str], str, int]],
    cuts: list[int],
) -> None:
    one, grouped = twin_stores
    _empty(one)
    _empty(grouped)
    requests = [
        request(
            f"r{uid}",
            department=dept,
            queue=queue,
            sku=sku,
            count=count,
            now=L.T0 + timedelta(seconds=i),
            org=PROP_ORG,
        )
        for i, (uid, (dept, queue), sku, count) in enumerate(items)
    ]
    expected = [_outcome(L.reserve_one(one, PROP_ORG, r)) for r in requests]

    got: list[ledger.Reservation] = []
    start, sizes = 0, iter(cuts * len(requests))
    while start < len(requests):
        end = start + next(sizes)
        got += ledger.reserve_many(grouped, PROP_ORG, requests[start:end])
        start = end
    assert [_outcome(r) for r in got] == expected

    assert ledger.usage(grouped) == ledger.usage(one)
    assert ledger.recent_denials(grouped, limit=100) == ledger.recent_denials(one, limit=100)

    def entries(store: Store) -> list[tuple[str, Resources, Resources, str]]:
        return sorted(
            (a.request_uid, a.amount, a.borrowed, a.queue) for a in ledger.list_allocations(store)
        )

    assert entries(grouped) == entries(one)
    total = ZERO
    for a in ledger.list_allocations(grouped):
        total = total + a.amount
    assert ledger.usage(grouped).get(scopes.pool("a100"), ZERO) == total


def test_postgresql_runs_one_text_per_statement_whatever_the_group_size(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a group's statements take JSON arrays: the same texts for a group
    of 1, 3 or 7 (psycopg converts each once and prepares it on the server), and the
    usage update and the allocations go in one statement (one round trip fewer while
    the group's usage rows are locked). Counted where psycopg's cursor runs them, on
    the blocking path and on the event loop's (``AsyncGroupSession``) alike."""
    import asyncio

    import psycopg

    store = Store(pg_database)
    texts: list[str] = []
    execute, execute_async = psycopg.Cursor.execute, psycopg.AsyncCursor.execute

    def seen(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        texts.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    async def seen_async(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        texts.append(str(query))
        return await execute_async(cursor, query, *args, **kwargs)

    async def on_loop(groups: list[list[ledger.ReserveRequest]]) -> list[list[bool]]:
        session = ledger.AsyncGroupSession(store)
        try:
            return [[r.allowed for r in await session.reserve_many(ORG, g)] for g in groups]
        finally:
            await session.close()

    try:
        ledger.reserve_many(store, ORG, [request("warm", department="cv", queue="main")])
        monkeypatch.setattr(psycopg.Cursor, "execute", seen)
        monkeypatch.setattr(psycopg.AsyncCursor, "execute", seen_async)
        for path in ("call", "loop"):
            by_size: dict[int, set[str]] = {}
            for size in (1, 3, 7):
                texts.clear()
                group = [
                    request(f"{path}{size}-{i}", department="cv", queue="main") for i in range(size)
                ]
                if path == "call":
                    allowed = [r.allowed for r in ledger.reserve_many(store, ORG, group)]
                else:
                    (allowed,) = asyncio.run(on_loop([group]))
                assert allowed == [True] * size
                by_size[size] = {t for t in texts if "allocations" in t or "usage" in t}
            assert by_size[1] == by_size[3] == by_size[7]
            assert len(by_size[7]) == 3, sorted(by_size[7])  # uids, lock usage, record
        assert len(ledger.list_allocations(store)) == 1 + 2 * (1 + 3 + 7)
    finally:
        store.close()


def test_texts_and_instants_reach_the_ledger_exactly_as_given(store: Store) -> None:
    """A group's rows travel as JSON on PostgreSQL (and as parameters on SQLite): quotes,
    backslashes, commas, braces and non-ASCII text, and instants to the microsecond,
    come back as they were given."""
    awkward = 'o\'brien "x" \\ {a,b} é漢 \t'
    now = L.T0 + timedelta(microseconds=123457)
    group = [
        dataclasses.replace(
            request(f'uid-{i},{{}}"', now=now),
            subject=f"user:{awkward}{i}",
            pod_name=f'pod,{i}"{{x}}',
            fingerprint='f"p',
        )
        for i in range(2)
    ]
    out = ledger.reserve_many(store, ORG, group)
    assert [r.allowed for r in out] == [True, True]
    kept = {a.request_uid: a for a in ledger.list_allocations(store)}
    for asked, answer in zip(group, out, strict=True):
        got = kept[asked.request_uid]
        assert got == answer.allocation
        assert (got.subject, got.pod_name, got.fingerprint) == (
            asked.subject,
            asked.pod_name,
            asked.fingerprint,
        )
        assert got.created_at == now and got.created_at.utcoffset() == timedelta(0)
        assert got.expires_at == now + asked.ttl
        assert got.grants == dict(asked.grants)
