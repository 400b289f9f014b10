"""A caller that gives up (the webhook denies a request whose budget ran out) leaves no
reservation behind: a write still queued is dropped, and one already on its way to the
store is released once made. Real databases; another connection holds the lock that the
write needs, so that the caller gives up while its write waits (no timing involved
beyond a bound for a broken writer)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from admission.writer import InlineWriter, LedgerWriter, LoopGroupWriter
from governance.resources import Limits
from governance.storage import ledger
from governance.storage.store import Store
from tests.support import ledger as L
from tests.support.core import GIB, make_department, make_org, make_pool, make_queue, make_sku

pytestmark = pytest.mark.integration

ORG = make_org(
    pools=[make_pool("a100", gpus=16, memory_mib_per_gpu=80 * GIB)],
    skus=[make_sku("a100-1g", memory_mib=20 * GIB, compute_pct=25)],
    departments=[make_department("ml", quota=Limits.of(slices=20))],
    queues=[make_queue("train", department="ml", nominal=Limits.of(slices=10))],
)
WAIT_S = 20.0
"""Longest wait for the writers (a bound for a broken one, not a timing expectation)."""


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


def _request(uid: str) -> ledger.ReserveRequest:
    return L.reserve_request(ORG, uid)


async def _given_up(future: asyncio.Future[Any]) -> None:
    """Await ``future`` as a request with a short budget would, and give up."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await future
    assert future.cancelled()


async def _state_of(store: Store, uid: str, *, until: ledger.State | None) -> ledger.State | None:
    """The state of ``uid``'s allocation once it is ``until`` (None: no allocation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        alloc = await asyncio.to_thread(ledger.by_request, store, uid)
        state = alloc.state if alloc is not None else None
        if state == until or loop.time() > deadline:
            return state
        await asyncio.sleep(0.05)


def test_on_loop_writes_handed_to_the_thread_are_dropped_or_released(sqlite_url: str) -> None:
    """SQLite only: the on-loop writer is SQLite's (PostgreSQL's groups are written by
    threads from the start, the other test of this module)."""
    store = Store(sqlite_url)
    fallback = LedgerWriter(store)
    writer = InlineWriter(store, fallback)
    taken, queued = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario() -> tuple[ledger.State | None, ledger.State | None]:
        lock = L.WriteLock(store)
        try:
            # the lock is taken: the group goes to the thread, which waits for it
            first = writer.reserve(ORG, _request(taken))
            await _given_up(first)
            # the thread is still waiting with the first: this one stays queued
            second = writer.reserve(ORG, _request(queued))
            await _given_up(second)
        finally:
            lock.release()
        return (
            await _state_of(store, taken, until=ledger.State.EXPIRED),
            await _state_of(store, queued, until=None),
        )

    try:
        made, never = asyncio.run(scenario())
        assert made is ledger.State.EXPIRED  # written once the lock came free, released
        assert never is None  # dropped before it was written
        assert writer.handed_over == 2
        L.assert_usage_matches_allocations(store)
        assert L.live_usage(store) == {}
    finally:
        fallback.close()
        store.close()


def test_loop_group_writes_in_flight_are_released_when_their_caller_gave_up(
    pg_database: str,
) -> None:
    """PostgreSQL's writer on the event loop: a reservation whose caller gave up while
    its group waited for a lock is written when the lock comes free, then released; a
    caller that waited is answered as usual."""
    store = Store(pg_database)
    uid, answered = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario() -> ledger.State | None:
        writer = LoopGroupWriter(store)
        try:
            lock = L.WriteLock(store)
            try:
                gone = writer.reserve(ORG, _request(uid))
                await _given_up(gone)
            finally:
                lock.release()
            kept = await asyncio.wait_for(writer.reserve(ORG, _request(answered)), WAIT_S)
            assert kept.allowed
            return await _state_of(store, uid, until=ledger.State.EXPIRED)
        finally:
            await writer.aclose()

    try:
        assert asyncio.run(scenario()) is ledger.State.EXPIRED
        alloc = ledger.by_request(store, answered)
        assert alloc is not None and alloc.state is ledger.State.RESERVED
        L.assert_usage_matches_allocations(store)
    finally:
        store.close()
