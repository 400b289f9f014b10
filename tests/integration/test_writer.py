"""The group-commit writers against real databases.

:class:`LedgerWriter` (threads; SQLite and PostgreSQL) and :class:`InlineWriter` (on an
asyncio loop; SQLite). Groups are made to form without timing: another connection holds
the write lock (``tests.support.ledger.WriteLock``) while requests queue up behind the
first one, whose future is seen running, and is released afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
import sqlalchemy as sa

from admission.writer import InlineWriter, LedgerWriter, LoopGroupWriter
from governance import scopes
from governance.contract import Reason
from governance.errors import StoreBusy, StoreError, StoreUnavailable
from governance.resources import Limits
from governance.storage import ledger, schema
from governance.storage.store import BUSY_TIMEOUT_MS, Store
from tests.support import ledger as L
from tests.support.core import GIB, make_department, make_org, make_pool, make_queue, make_sku

pytestmark = pytest.mark.integration

WAIT_S = 30
"""Longest wait for a future (a bound for a broken writer, not a timing expectation)."""

# train reaches 10 + 5 borrowed = 15; the department (20) leaves serve 5.
ORG = make_org(
    pools=[make_pool("a100", gpus=16, memory_mib_per_gpu=80 * GIB)],
    skus=[make_sku("a100-1g", memory_mib=20 * GIB, compute_pct=25)],
    departments=[make_department("ml", quota=Limits.of(slices=20))],
    queues=[
        make_queue(
            "train",
            department="ml",
            nominal=Limits.of(slices=10),
            borrowing_limit=Limits.of(slices=5),
        ),
        make_queue("serve", department="ml", nominal=Limits.of(slices=5)),
    ],
)
TRAIN_CEILING = 15


def request(uid: str, **kwargs: Any) -> ledger.ReserveRequest:
    return L.reserve_request(ORG, uid, **kwargs)


def wait_running(future: Future[Any]) -> None:
    """Until a writer thread has taken ``future``'s request (it then waits for the lock)."""
    event = threading.Event()
    while not (future.running() or future.done()):
        event.wait(0.005)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    s = Store(sqlite_url)
    try:
        yield s
    finally:
        s.close()


# -- LedgerWriter ---------------------------------------------------------------------


def test_threads_submitting_together_get_exactly_the_quota_in_groups(store: Store) -> None:
    threads = 1 if store.is_sqlite else 2  # as the admitter chooses
    submitters, per_submitter = 6, 8
    with contextlib.closing(LedgerWriter(store, threads=threads)) as writer:
        lock = L.WriteLock(store)
        try:
            futures: list[Future[ledger.Reservation]] = []
            gate = threading.Barrier(submitters)

            def submit(n: int) -> None:
                gate.wait(WAIT_S)
                mine = [writer.reserve(ORG, request(f"t{n}-{i}")) for i in range(per_submitter)]
                futures.extend(mine)

            workers = [threading.Thread(target=submit, args=(n,)) for n in range(submitters)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(WAIT_S)
            # everything is queued behind the lock: nothing can have been decided yet
            assert not any(f.done() for f in futures)
        finally:
            lock.release()
        answers = [f.result(WAIT_S) for f in futures]
        groups, writes = writer.groups, writer.requests

    total = submitters * per_submitter
    assert sum(a.allowed for a in answers) == TRAIN_CEILING
    assert {a.decision.reason for a in answers if not a.allowed} == {
        Reason.BORROWING_LIMIT_EXCEEDED
    }
    assert writes == total
    assert 1 <= groups < writes  # the queued requests were committed together
    assert len(ledger.list_allocations(store)) == TRAIN_CEILING
    usage = L.live_usage(store)
    assert usage[scopes.queue("ml", "train")].slices == TRAIN_CEILING
    assert usage[scopes.department("ml")].slices == TRAIN_CEILING
    assert len(ledger.recent_denials(store, limit=1000)) == total - TRAIN_CEILING
    L.assert_usage_matches_allocations(store)


def test_a_bad_request_fails_alone_and_the_rest_of_its_group_is_reserved(store: Store) -> None:
    assert L.reserve_one(store, ORG, request("taken", allocation_id="alloc-taken")).allowed
    with contextlib.closing(LedgerWriter(store)) as writer:
        lock = L.WriteLock(store)
        try:
            first = writer.reserve(ORG, request("first"))
            wait_running(first)
            # Queued behind "first": the bad one shares a group with at least one other.
            before = writer.reserve(ORG, request("before"))
            bad = writer.reserve(ORG, request("bad", allocation_id="alloc-taken"))
            after = writer.reserve(ORG, request("after", queue="serve"))
        finally:
            lock.release()
        with pytest.raises(StoreError) as info:
            bad.result(WAIT_S)
        assert not isinstance(info.value, StoreUnavailable)
        for future in (first, before, after):
            assert future.result(WAIT_S).allowed
        assert writer.groups < writer.requests == 4

    assert ledger.by_request(store, "bad") is None
    assert sorted(a.request_uid for a in ledger.list_allocations(store)) == [
        "after",
        "before",
        "first",
        "taken",
    ]
    ours = ledger.get(store, "alloc-taken")
    assert ours is not None and ours.request_uid == "taken"
    assert L.live_usage(store)[scopes.department("ml")].slices == 4
    L.assert_usage_matches_allocations(store)


class HangingServer:
    """A TCP port that accepts connections and never answers until :meth:`drop`, which
    closes them and every later one: a database that hangs, then goes away."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._dropped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                if self._dropped:
                    conn.close()
                else:
                    self._held.append(conn)

    def drop(self) -> None:
        with self._lock:
            self._dropped = True
            for conn in self._held:
                conn.close()

    def stop(self) -> None:
        self.drop()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(5)


def test_unreachable_store_fails_every_request_of_the_group_at_once() -> None:
    server = HangingServer()
    url = (
        f"postgresql+psycopg://gpupool@127.0.0.1:{server.port}/gpupool"
        "?sslmode=disable&gssencmode=disable"
    )
    store = Store(url, migrate=False)
    try:
        with contextlib.closing(LedgerWriter(store)) as writer:
            first = writer.reserve(ORG, request("first"))
            wait_running(first)  # its connection hangs: the rest queue behind it
            group = [writer.reserve(ORG, request(f"r{i}")) for i in range(4)]
            server.drop()
            for future in (first, *group):
                with pytest.raises(StoreUnavailable, match="cannot be reached"):
                    future.result(WAIT_S)
            assert (writer.groups, writer.requests) == (2, 5)
        # one connection per group: an unreachable store is not retried request by request
        assert server.connections == 2
    finally:
        store.close()
        server.stop()


def test_close_writes_what_is_queued(store: Store) -> None:
    writer = LedgerWriter(store)
    lock = L.WriteLock(store)
    try:
        first = writer.reserve(ORG, request("first"))
        wait_running(first)
        queued = [writer.reserve(ORG, request(f"q{i}")) for i in range(5)]
        denial = writer.record_denial(
            ledger.Denial(
                at=L.T0,
                namespace="ml",
                department="ml",
                queue="train",
                sku="a100-1g",
                subject="user:eve",
                reason=Reason.FORBIDDEN.value,
                message="eve may not",
            )
        )
        pending: list[Future[Any]] = [*queued, denial]
        assert not any(f.done() for f in pending)
        closing = threading.Thread(target=writer.close, kwargs={"timeout": WAIT_S})
        closing.start()
    finally:
        lock.release()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    assert first.done() and all(f.done() for f in pending)
    assert all(f.result().allowed for f in (first, *queued))
    assert len(ledger.list_allocations(store)) == 6
    assert [d.subject for d in ledger.recent_denials(store)] == ["user:eve"]
    with pytest.raises(RuntimeError, match="closed"):
        writer.reserve(ORG, request("late"))


def test_a_future_cancelled_before_its_turn_is_not_written(store: Store) -> None:
    # max_group=1: "first" is a group of its own, so "cancelled" is still queued
    with contextlib.closing(LedgerWriter(store, max_group=1)) as writer:
        lock = L.WriteLock(store)
        try:
            first = writer.reserve(ORG, request("first"))
            wait_running(first)
            cancelled = writer.reserve(ORG, request("cancelled"))
            kept = writer.reserve(ORG, request("kept"))
            assert cancelled.cancel()
        finally:
            lock.release()
        assert first.result(WAIT_S).allowed and kept.result(WAIT_S).allowed
        assert writer.requests == 2
    assert ledger.by_request(store, "cancelled") is None
    assert L.live_usage(store)[scopes.queue("ml", "train")].slices == 2


# -- InlineWriter (SQLite, on the event loop) -----------------------------------------


def test_reserves_queued_in_one_loop_turn_are_one_transaction(sqlite_store: Store) -> None:
    small = make_org(
        pools=[make_pool("a100")],
        skus=[make_sku("a100-1g")],
        departments=[make_department("ml", quota=Limits.of(slices=3))],
        queues=[make_queue("train")],
    )
    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback)

        async def main() -> list[ledger.Reservation]:
            futures = [inline.reserve(small, L.reserve_request(small, f"r{i}")) for i in range(5)]
            return list(await asyncio.gather(*futures))

        answers = asyncio.run(main())
        assert (inline.groups, inline.requests, inline.handed_over) == (1, 5, 0)
        assert (fallback.groups, fallback.requests) == (0, 0)
    assert [a.allowed for a in answers] == [True, True, True, False, False]
    assert {a.decision.reason for a in answers[3:]} == {Reason.DEPARTMENT_QUOTA_EXCEEDED}
    assert len(ledger.list_allocations(sqlite_store)) == 3
    assert len(ledger.recent_denials(sqlite_store)) == 2


def test_writes_queued_within_the_turns_join_one_group_and_later_ones_do_not(
    sqlite_store: Store,
) -> None:
    """A group waits ``turns`` turns of the loop: writes queued by coroutines that run
    in those turns join it; a write queued after the flush starts the next group."""
    small = make_org(
        pools=[make_pool("a100")],
        skus=[make_sku("a100-1g")],
        departments=[make_department("ml", quota=Limits.of(slices=10))],
        queues=[make_queue("train")],
    )
    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback, turns=3)

        async def after(turns: int, uid: str) -> ledger.Reservation:
            for _ in range(turns):
                await asyncio.sleep(0)
            return await inline.reserve(small, L.reserve_request(small, uid))

        async def main() -> list[ledger.Reservation]:
            first = inline.reserve(small, L.reserve_request(small, "r0"))
            # tasks that queue their write on the next turn and the one after: inside
            # the window (the group is written on its third turn); the fourth write
            # comes after the first group was committed
            joined = [asyncio.ensure_future(after(n, f"r{n + 1}")) for n in (0, 1)]
            done = await first
            assert inline.groups == 1 and inline.requests == 3
            late = await after(0, "r9")
            return [done, *(await asyncio.gather(*joined)), late]

        answers = asyncio.run(main())
        assert (inline.groups, inline.requests) == (2, 4)
    assert all(a.allowed for a in answers)


def test_inline_groups_are_cut_at_max_group_and_skip_cancelled_callers(
    sqlite_store: Store,
) -> None:
    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback, max_group=2)

        async def main() -> list[ledger.Reservation]:
            futures = [inline.reserve(ORG, request(f"r{i}")) for i in range(6)]
            futures[2].cancel()  # its client went away before the end of the turn
            done = await asyncio.gather(*futures, return_exceptions=True)
            return [r for r in done if isinstance(r, ledger.Reservation)]

        answers = asyncio.run(main())
        assert (inline.groups, inline.requests) == (3, 5)
    assert len(answers) == 5 and all(a.allowed for a in answers)
    assert ledger.by_request(sqlite_store, "r2") is None
    assert len(ledger.list_allocations(sqlite_store)) == 5


def test_locked_group_goes_to_the_thread_and_the_loop_keeps_running(
    sqlite_store: Store,
) -> None:
    ticks_needed = 20
    lock = L.WriteLock(sqlite_store)
    ticked = threading.Event()

    def release_once_the_loop_ticked() -> None:
        # A loop that waited for the lock would never tick: release anyway, late, so that
        # such a bug fails the assertions below instead of hanging the test.
        ticked.wait(5)
        lock.release()

    releaser = threading.Thread(target=release_once_the_loop_ticked)
    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback, turns=1)

        async def main() -> tuple[int, list[ledger.Reservation]]:
            futures = [inline.reserve(ORG, request(f"r{i}")) for i in range(TRAIN_CEILING + 2)]
            ticks = 0
            while ticks < ticks_needed and not any(f.done() for f in futures):
                await asyncio.sleep(0)
                ticks += 1
            ticked.set()
            answers = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
            return ticks, list(answers)

        releaser.start()
        try:
            ticks, answers = asyncio.run(main())
        finally:
            lock.release()
            releaser.join(WAIT_S)
        assert ticks == ticks_needed  # the loop turned while the group waited for the lock
        # the group is counted once, by the thread that wrote it
        assert (inline.groups, inline.requests, inline.handed_over) == (0, 0, 1)
        assert fallback.requests == TRAIN_CEILING + 2
    assert [a.allowed for a in answers] == [True] * TRAIN_CEILING + [False, False]
    assert len(ledger.list_allocations(sqlite_store)) == TRAIN_CEILING
    L.assert_usage_matches_allocations(sqlite_store)


def test_store_write_without_waiting_is_busy_while_another_connection_writes(
    sqlite_store: Store,
) -> None:
    lock = L.WriteLock(sqlite_store)
    try:
        with pytest.raises(StoreBusy, match="locked by another writer"):  # noqa: SIM117
            with sqlite_store.write(wait=False) as conn:
                conn.execute(sa.delete(schema.denials))
        with pytest.raises(StoreBusy):
            ledger.record_denials(
                sqlite_store,
                [
                    ledger.Denial(
                        at=L.T0,
                        namespace="ml",
                        department="ml",
                        queue="train",
                        sku="a100-1g",
                        subject="user:eve",
                        reason=Reason.FORBIDDEN.value,
                        message="no",
                    )
                ],
                wait=False,
            )
        # the connections go back to the pool waiting again for a lock
        with sqlite_store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
        releaser = threading.Timer(0.3, lock.release)
        releaser.start()
        uid = str(uuid.uuid4())
        # waits for the release, then writes
        assert L.reserve_one(sqlite_store, ORG, request(uid)).allowed
        releaser.join(WAIT_S)
    finally:
        lock.release()
    assert ledger.by_request(sqlite_store, uid) is not None
    assert ledger.recent_denials(sqlite_store) == []


def test_locked_denials_go_to_the_thread_and_are_counted_as_handed_over(
    sqlite_store: Store,
) -> None:
    lock = L.WriteLock(sqlite_store)
    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback, turns=1)

        async def main() -> None:
            denial = ledger.Denial(
                at=L.T0,
                namespace="ml",
                department="ml",
                queue="train",
                sku="a100-1g",
                subject="user:eve",
                reason=Reason.FORBIDDEN.value,
                message="eve may not",
            )
            future = inline.record_denial(denial)
            await asyncio.sleep(0)  # the flush found the lock taken
            assert not future.done()
            threading.Thread(target=lock.release).start()
            await asyncio.wait_for(future, WAIT_S)

        try:
            asyncio.run(main())
        finally:
            lock.release()
        assert fallback.requests == 1
        # handed_over counts "groups that found the lock taken": a denial group is one,
        # counted as written by the thread only
        assert (inline.groups, inline.requests, inline.handed_over) == (0, 0, 1)
    assert [d.subject for d in ledger.recent_denials(sqlite_store)] == ["user:eve"]


def test_a_flush_that_fails_unexpectedly_answers_every_caller(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the writer must not leave admissions waiting forever."""
    small = make_org(
        pools=[make_pool("a100")],
        skus=[make_sku("a100-1g")],
        departments=[make_department("ml", quota=Limits.of(slices=3))],
        queues=[make_queue("train")],
    )

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in the writer")

    with contextlib.closing(LedgerWriter(sqlite_store)) as fallback:
        inline = InlineWriter(sqlite_store, fallback, turns=1)
        monkeypatch.setattr(inline, "_reserve", broken)

        async def main() -> list[BaseException | ledger.Reservation]:
            futures = [inline.reserve(small, L.reserve_request(small, f"r{i}")) for i in range(3)]
            return list(await asyncio.gather(*futures, return_exceptions=True))

        answers = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert [str(a) for a in answers] == ["a bug in the writer"] * 3
    assert ledger.list_allocations(sqlite_store) == []


# -- LoopGroupWriter (PostgreSQL, on the event loop) ------------------------------------


@pytest.fixture
def pg_store(pg_database: str) -> Iterator[Store]:
    s = Store(pg_database)
    try:
        yield s
    finally:
        s.close()


def test_loop_groups_get_exactly_the_quota(pg_store: Store) -> None:
    """48 reservations queued on the loop against a ceiling of 15: exactly 15 admitted,
    in order, in fewer transactions than reservations, on one connection."""

    async def main() -> tuple[list[ledger.Reservation], LoopGroupWriter]:
        writer = LoopGroupWriter(pg_store)
        try:
            futures = [writer.reserve(ORG, request(f"g{i}")) for i in range(48)]
            return list(await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)), writer
        finally:
            await writer.aclose()

    answers, writer = asyncio.run(main())
    assert 0 < writer.groups < writer.requests == 48
    assert writer.connects == 1
    assert [a.allowed for a in answers] == [True] * TRAIN_CEILING + [False] * 33
    assert len(ledger.list_allocations(pg_store)) == TRAIN_CEILING
    assert ledger.usage(pg_store)[scopes.queue("ml", "train")].slices == TRAIN_CEILING


def test_loop_group_with_one_bad_request_fails_only_that_one(pg_store: Store) -> None:
    assert L.reserve_one(pg_store, ORG, request("taken", allocation_id="alloc-taken")).allowed

    async def main() -> list[Any]:
        writer = LoopGroupWriter(pg_store)
        try:
            futures = [
                writer.reserve(ORG, request("a")),
                writer.reserve(ORG, request("bad", allocation_id="alloc-taken")),
                writer.reserve(ORG, request("b")),
            ]
            answers = list(await asyncio.gather(*futures, return_exceptions=True))
            assert writer.connects == 1  # a refused group does not break the connection
            return answers
        finally:
            await writer.aclose()

    a, bad, b = asyncio.run(main())
    assert isinstance(bad, StoreError) and not isinstance(bad, StoreUnavailable)
    assert a.allowed and b.allowed
    assert {x.request_uid for x in ledger.list_allocations(pg_store)} == {"taken", "a", "b"}


def test_loop_group_writer_skips_cancelled_callers_and_answers_denials(pg_store: Store) -> None:
    async def main() -> tuple[ledger.Reservation, bool]:
        writer = LoopGroupWriter(pg_store, turns=1)
        try:
            kept = writer.reserve(ORG, request("kept"))
            gone = writer.reserve(ORG, request("gone"))
            gone.cancel()  # its client went away before the group was written
            denial = ledger.Denial(
                at=L.T0,
                namespace="ml",
                department="ml",
                queue="train",
                sku="a100-1g",
                subject="user:eve",
                reason=Reason.FORBIDDEN.value,
                message="eve may not",
            )
            await asyncio.wait_for(writer.record_denial(denial), WAIT_S)
            return await asyncio.wait_for(kept, WAIT_S), gone.cancelled()
        finally:
            await writer.aclose()

    kept, cancelled = asyncio.run(main())
    assert kept.allowed and cancelled
    assert [x.request_uid for x in ledger.list_allocations(pg_store)] == ["kept"]
    assert [d.subject for d in ledger.recent_denials(pg_store)] == ["user:eve"]


def test_a_loop_group_writer_that_fails_unexpectedly_answers_every_caller(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("a bug in the writer")

    async def main() -> list[BaseException | ledger.Reservation]:
        writer = LoopGroupWriter(pg_store)
        monkeypatch.setattr(writer, "_reserve", broken)
        try:
            futures = [writer.reserve(ORG, request(f"r{i}")) for i in range(3)]
            return list(await asyncio.gather(*futures, return_exceptions=True))
        finally:
            await writer.aclose()

    answers = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert [str(a) for a in answers] == ["a bug in the writer"] * 3
    assert ledger.list_allocations(pg_store) == []


def test_loop_group_writer_whose_connection_was_killed_writes_the_next_group_on_a_new_one(
    pg_store: Store,
) -> None:
    """The server ended the loop's connection between two groups (a restart, an admin's
    pg_terminate_backend, a proxy's idle timeout): the next group fails on it and runs
    again on a new connection; each request is charged once."""

    async def main() -> tuple[list[ledger.Reservation], int]:
        writer = LoopGroupWriter(pg_store)
        try:
            first = await asyncio.wait_for(writer.reserve(ORG, request("before")), WAIT_S)
            assert first.allowed
            held = writer._session._held
            pid = (await held.connection()).info.backend_pid
            await asyncio.to_thread(_terminate, pg_store, pid)
            futures = [writer.reserve(ORG, request(f"after-{i}")) for i in range(3)]
            return list(await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)), writer.connects
        finally:
            await writer.aclose()

    answers, connects = asyncio.run(main())
    assert [a.allowed for a in answers] == [True] * 3
    assert connects == 2
    kept = sorted(a.request_uid for a in ledger.list_allocations(pg_store))
    assert kept == ["after-0", "after-1", "after-2", "before"]
    assert ledger.usage(pg_store)[scopes.queue("ml", "train")].slices == 4


def test_loop_group_writer_closing_writes_what_is_queued(pg_store: Store) -> None:
    async def main() -> list[asyncio.Future[ledger.Reservation]]:
        writer = LoopGroupWriter(pg_store)
        futures = [writer.reserve(ORG, request(f"q{i}")) for i in range(5)]
        await writer.aclose()  # at once: nothing was written yet
        return futures

    futures = asyncio.run(main())
    assert all(f.done() and f.result().allowed for f in futures)
    assert len(ledger.list_allocations(pg_store)) == 5


def _terminate(store: Store, pid: int) -> None:
    with store.write() as conn:
        conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_writer_that_waits_out_the_busy_timeout_is_told_the_store_is_locked(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting (the default) ends after the busy timeout, shortened here: the store is
    reachable, and the error says it stayed locked and what to look for."""
    import governance.storage.store as store_module

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 50)
    store = Store(sqlite_url)
    lock = L.WriteLock(store)
    try:
        locked = r"stayed locked by another writer.*0\.05 s"
        with pytest.raises(StoreUnavailable, match=locked), store.write() as conn:
            conn.execute(sa.delete(schema.denials))
    finally:
        lock.release()
        store.close()


def test_loop_group_writer_closing_on_a_store_that_does_not_answer_gives_up_in_time(
    pg_store: Store,
) -> None:
    """The department's row is locked by another transaction for longer than the
    writer may wait at shutdown: closing ends within its timeout, the group in flight
    is rolled back, and every caller is answered StoreUnavailable."""
    lock = L.WriteLock(pg_store)

    async def main() -> tuple[list[Any], float]:
        writer = LoopGroupWriter(pg_store)
        futures = [writer.reserve(ORG, request(f"stuck-{i}")) for i in range(3)]
        await asyncio.sleep(0.3)  # the group is in flight, waiting for the lock
        started = asyncio.get_running_loop().time()
        await writer.aclose(timeout_s=0.5)
        took = asyncio.get_running_loop().time() - started
        return list(await asyncio.gather(*futures, return_exceptions=True)), took

    try:
        answers, took = asyncio.run(main())
    finally:
        lock.release()
    assert took < 3.0, took
    assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    assert ledger.list_allocations(pg_store) == []


def test_admitter_on_a_new_event_loop_writes_on_a_connection_of_its_own(
    pg_store: Store,
) -> None:
    """Tools and tests run the admitter under one ``asyncio.run`` after another: each
    loop gets a writer and a connection of its own, the previous loop's connection is
    closed (not left to the garbage collector), and nothing is charged twice."""
    from admission.admitter import Admitter
    from governance.storage.source import SnapshotSource

    admitter = Admitter(store=pg_store, snapshot=SnapshotSource(pg_store).get)

    async def reserve(uid: str) -> tuple[ledger.Reservation, LoopGroupWriter]:
        writer = admitter.loop_writer
        return await asyncio.wait_for(writer.reserve(ORG, request(uid)), WAIT_S), writer

    try:
        first, one = asyncio.run(reserve("loop-1"))
        held = one._session._held
        assert held._conn is not None and not held._conn.closed
        second, two = asyncio.run(reserve("loop-2"))
        assert two is not one
        assert held._conn is None  # closed when the second loop took over
        assert first.allowed and second.allowed
        assert sorted(a.request_uid for a in ledger.list_allocations(pg_store)) == [
            "loop-1",
            "loop-2",
        ]
    finally:
        admitter.close()
        if admitter._on_loop is not None:
            admitter._on_loop.abandon()
