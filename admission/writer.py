"""Group commit for the ledger: one writer commits the reservations of many requests.

A webhook under load has many GPU pods in flight at once, and each reservation is a
small write transaction whose fixed costs (taking the write lock, the statements'
round trips, the commit) dwarf the arithmetic. :class:`LedgerWriter` queues the
reservations and denials of concurrent requests and commits whatever has queued up
while the previous group was being written, in one transaction
(:func:`governance.storage.ledger.reserve_many`): at low load a group is one request and
nothing waits; under load the fixed costs are shared.

Correctness is the ledger's: a group is decided in arrival order, each request
against the usage that the ones before it leave, under the same row locks as a single
reservation, so two writers (two webhook replicas on one PostgreSQL) still never
admit past a limit. A group that fails for any reason but an unreachable store is
retried request by request, so that one bad request cannot fail the others.

Callers get a :class:`concurrent.futures.Future` per request (``.result()`` blocks a
worker thread; ``asyncio.wrap_future`` awaits it on an event loop).

A caller may give up (the webhook answers every request within its budget, and denies
it when the store has not answered by then). A write not yet taken into a group is then
dropped; one already on its way to the store (a stopped PostgreSQL commits it when it
resumes) is released as soon as it is known to have been made
(:func:`release_abandoned`), since its pod was denied and will never come: no quota is
held for a request answered "no".

:class:`InlineWriter` is the same group commit run on an asyncio event loop itself,
for SQLite: an embedded database's statements are CPU work of microseconds, and
handing each group to a thread and back costs more (thread wake-ups, the GIL) than
the writing. The writes that the loop's requests queue within a few turns of the
loop are committed together. The loop never waits for a lock: when another process
holds SQLite's write lock, the group goes to a :class:`LedgerWriter` thread, which
waits for it.

:class:`LoopGroupWriter` forms groups on the loop the same way, for PostgreSQL, and
writes them on the loop too, over psycopg's asynchronous connection: PostgreSQL's
statements wait on the network, which the loop waits on as on any socket.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from governance.errors import StoreBusy, StoreUnavailable
from governance.model import Org
from governance.storage import ledger
from governance.storage.store import Store

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_MAX_GROUP: Final = 64
"""Requests committed in one transaction at most (a bound on one group's latency)."""
DEFAULT_TURNS: Final = 3
"""Turns of the event loop an InlineWriter group waits for more writes."""
CLOSE_TIMEOUT_S: Final = 10.0
"""How long a closing LoopGroupWriter waits for the store to take what it holds."""


def reserve_group(
    store: Store, org: Org, requests: Sequence[ledger.ReserveRequest], *, wait: bool = True
) -> list[ledger.Reservation | Exception]:
    """One answer per request, from one transaction when it can be: a group that fails
    for any reason but an unreachable (or, with ``wait=False``, locked) store is retried
    request by request, so that one bad request cannot fail the others."""
    try:
        return list(ledger.reserve_many(store, org, requests, wait=wait))
    except Exception as exc:
        final = _group_failed(requests, exc)
        if final is not None:
            return final
        return [
            outcome
            for request in requests
            for outcome in reserve_group(store, org, [request], wait=wait)
        ]


def _group_failed(
    requests: Sequence[ledger.ReserveRequest], exc: Exception
) -> list[ledger.Reservation | Exception] | None:
    """The answers to a group whose transaction failed with ``exc``, when that failure
    is every request's (an unreachable or locked store, or a group of one); None when
    each request is to be tried on its own, so that one bad request cannot fail the
    others."""
    if isinstance(exc, StoreUnavailable | StoreBusy) or len(requests) == 1:
        return [exc] * len(requests)
    log.warning("a group of %d reservations failed (%s); retrying one by one", len(requests), exc)
    return None


def abandoned_allocation(outcome: object) -> str | None:
    """The allocation that ``outcome`` made, if it is a new reservation (not a replay of
    one made before): what to release when its caller is gone."""
    if (
        isinstance(outcome, ledger.Reservation)
        and outcome.allowed
        and not outcome.replayed
        and outcome.allocation is not None
    ):
        return outcome.allocation.id
    return None


def release_abandoned(store: Store, allocation_ids: Sequence[str]) -> None:
    """Release reservations made for requests that were answered before the store
    committed them (their pods were denied). One that cannot be released now expires
    with its reservation TTL, as any reservation whose pod never came."""
    for allocation_id in allocation_ids:
        try:
            ledger.release(store, allocation_id, state=ledger.State.EXPIRED)
        except Exception as exc:
            log.warning(
                "reservation %s was made after its request had been answered, and cannot "
                "be released now (%s): it expires with its TTL",
                allocation_id,
                exc,
            )
        else:
            log.warning(
                "reservation %s was made after its request had been answered (denied at "
                "its budget); released",
                allocation_id,
            )


@dataclass(frozen=True)
class _Reserve:
    org: Org
    request: ledger.ReserveRequest
    future: Future[ledger.Reservation]


@dataclass(frozen=True)
class _Deny:
    denial: ledger.Denial
    future: Future[None]


_Item = _Reserve | _Deny


class LedgerWriter:
    """Queues ledger writes and commits them in groups from ``threads`` threads.

    One thread suits SQLite, which takes one writer at a time anyway. On PostgreSQL a
    second thread prepares a group while the first one's commit travels; more seldom
    help, since every reservation in a pool locks that pool's row.
    """

    def __init__(
        self,
        store: Store,
        *,
        threads: int = 1,
        max_group: int = DEFAULT_MAX_GROUP,
        name: str = "gpupool-ledger-writer",
    ) -> None:
        if threads < 1 or max_group < 1:
            raise ValueError("a LedgerWriter needs at least one thread and a group of one")
        self.store = store
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self.groups = 0
        """Transactions committed (or tried) so far: with :attr:`requests`, the mean
        group size."""
        self.requests = 0
        for thread in self._threads:
            thread.start()

    # -- submitting ------------------------------------------------------------------

    def reserve(self, org: Org, request: ledger.ReserveRequest) -> Future[ledger.Reservation]:
        """Queue a reservation; the future holds its :class:`~governance.storage.ledger.Reservation`
        or the store's error."""
        future: Future[ledger.Reservation] = Future()
        self._put(_Reserve(org, request, future))
        return future

    def record_denial(self, denial: ledger.Denial) -> Future[None]:
        """Queue a denial for the audit trail."""
        future: Future[None] = Future()
        self._put(_Deny(denial, future))
        return future

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this LedgerWriter is closed")
            self._queue.put(item)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    # -- the writer threads ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group: list[_Item] = []
            stop = False
            item: _Item = first
            while True:
                # A caller that gave up before its turn (its client went away) is not
                # written; once running, its write goes through.
                if item.future.set_running_or_notify_cancel():
                    group.append(item)
                if len(group) >= self.max_group:
                    break
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    stop = True
                    break
                item = following
            try:
                if group:
                    self._write(group)
            except BaseException as exc:  # never leave a caller waiting forever
                log.exception("ledger writer failed on a group of %d", len(group))
                for item in group:
                    _settle(item.future, exc)
            if stop:
                return

    def _write(self, group: Sequence[_Item]) -> None:
        with self._lock:  # two threads may count at once
            self.groups += 1
            self.requests += len(group)
        denials = [i for i in group if isinstance(i, _Deny)]
        reserves = [i for i in group if isinstance(i, _Reserve)]
        for items in _by_org(reserves, lambda r: r.org, self.max_group):
            self._reserve(items)
        if denials:
            self._deny(denials)

    def _reserve(self, items: Sequence[_Reserve]) -> None:
        outcomes = reserve_group(self.store, items[0].org, [i.request for i in items])
        for item, outcome in zip(items, outcomes, strict=True):
            _settle(item.future, outcome)

    def _deny(self, items: Sequence[_Deny]) -> None:
        outcome: Exception | None = None
        try:
            ledger.record_denials(self.store, [i.denial for i in items])
        except Exception as exc:
            outcome = exc
        for item in items:
            _settle(item.future, outcome)


_Reserving = tuple[Org, ledger.ReserveRequest, "asyncio.Future[Any]"]
_Denying = tuple[ledger.Denial, "asyncio.Future[Any]"]


class _LoopGroups:
    """Writes queued on the running event loop and taken in groups on the ``turns``-th
    turn of the loop from the first one (sooner when ``max_group`` reservations wait).

    A turn of a loop with work ready takes microseconds, so waiting a few costs a lone
    request nothing, while under load the requests that the loop is reading meanwhile
    join the group: with 32 connections the groups grew from 10 to 30, and each
    reservation's share of the transaction's fixed cost fell accordingly. Subclasses
    write the groups (:meth:`_write_groups`) and answer every future."""

    def __init__(self, store: Store, *, max_group: int, turns: int) -> None:
        if max_group < 1 or turns < 1:
            raise ValueError("a group holds one write at least, after one turn at the soonest")
        self.store = store
        self.max_group = max_group
        self.turns = turns
        self._reserves: list[_Reserving] = []
        self._denials: list[_Denying] = []
        self._scheduled = False
        self.groups = 0
        self.requests = 0

    def reserve(
        self, org: Org, request: ledger.ReserveRequest
    ) -> asyncio.Future[ledger.Reservation]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ledger.Reservation] = loop.create_future()
        self._reserves.append((org, request, future))
        self._schedule(loop, self.turns)
        return future

    def record_denial(self, denial: ledger.Denial) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._denials.append((denial, future))
        self._schedule(loop, self.turns)
        return future

    def _ready(self) -> bool:
        """Whether a group may be taken now (else the writes wait and form the next)."""
        return True

    def _schedule(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if not self._scheduled and self._ready():
            self._scheduled = True
            loop.call_soon(self._flush, loop, turns)

    def _flush(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if turns > 1 and len(self._reserves) < self.max_group:
            # Let the loop turn again: the requests it is reading join this group.
            loop.call_soon(self._flush, loop, turns - 1)
            return
        self._scheduled = False
        reserves, self._reserves = self._reserves, []
        denials, self._denials = self._denials, []
        # a caller that went away (its request was cancelled) is not written
        reserves = [r for r in reserves if not r[2].done()]
        denials = [d for d in denials if not d[1].done()]
        if not reserves and not denials:
            return
        try:
            self._write_groups(loop, reserves, denials)
        except Exception as exc:  # a bug: never leave a caller waiting forever
            log.exception("ledger writer failed on a group of %d", len(reserves) + len(denials))
            _fail([r[2] for r in reserves] + [d[1] for d in denials], exc)

    def _write_groups(
        self,
        loop: asyncio.AbstractEventLoop,
        reserves: Sequence[_Reserving],
        denials: Sequence[_Denying],
    ) -> None:
        raise NotImplementedError

    def _groups(self, reserves: Sequence[_Reserving]) -> list[Sequence[_Reserving]]:
        return _by_org(reserves, lambda r: r[0], self.max_group)


class InlineWriter(_LoopGroups):
    """Group commit on the running event loop, never waiting for a lock (SQLite).

    :meth:`reserve` and :meth:`record_denial` return asyncio futures; each group (see
    :class:`_LoopGroups`) is one transaction per organisation, written on the loop. A
    group that finds the write lock taken is handed to ``fallback`` whole."""

    def __init__(
        self,
        store: Store,
        fallback: LedgerWriter,
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        turns: int = DEFAULT_TURNS,
    ) -> None:
        super().__init__(store, max_group=max_group, turns=turns)
        self.fallback = fallback
        self.groups = 0
        """Transactions tried on the loop so far (reservations and denials); a group
        handed over to the fallback thread is counted there instead."""
        self.requests = 0
        """Writes they carried."""
        self.handed_over = 0
        """Groups that found the lock taken and went to the fallback thread."""

    def _write_groups(
        self,
        loop: asyncio.AbstractEventLoop,
        reserves: Sequence[_Reserving],
        denials: Sequence[_Denying],
    ) -> None:
        for group in self._groups(reserves):
            self._reserve(loop, group)
        if denials:
            self._deny(loop, denials)

    def _reserve(
        self,
        loop: asyncio.AbstractEventLoop,
        items: Sequence[_Reserving],
    ) -> None:
        self.groups += 1
        self.requests += len(items)
        outcomes = reserve_group(self.store, items[0][0], [i[1] for i in items], wait=False)
        busy = [i for i, o in zip(items, outcomes, strict=True) if isinstance(o, StoreBusy)]
        if busy:  # the lock was taken: those go to the thread, which waits for it
            self._handed_over(len(busy))
            if len(busy) < len(items):  # retried one by one, some written here
                self.groups += 1
            for org, request, future in busy:
                _chain(loop, self.fallback.reserve(org, request), future, self.store)
        for (*_, future), outcome in zip(items, outcomes, strict=True):
            if not isinstance(outcome, StoreBusy):
                _settle(future, outcome)

    def _handed_over(self, writes: int) -> None:
        # counted by the thread that writes them, not here as well
        self.handed_over += 1
        self.groups -= 1
        self.requests -= writes

    def _deny(
        self,
        loop: asyncio.AbstractEventLoop,
        items: Sequence[_Denying],
    ) -> None:
        self.groups += 1
        self.requests += len(items)
        try:
            ledger.record_denials(self.store, [d for d, _ in items], wait=False)
        except StoreBusy:
            self._handed_over(len(items))
            for denial, future in items:
                _chain(loop, self.fallback.record_denial(denial), future, self.store)
            return
        except Exception as exc:
            _fail([future for _, future in items], exc)
            return
        for _, future in items:
            _settle(future, None)


class LoopGroupWriter(_LoopGroups):
    """Group commit on the event loop itself, for PostgreSQL: groups form as on SQLite
    (within ``turns`` turns of the loop, or while the previous group is being written)
    and each is written on a connection the loop holds
    (:class:`~governance.storage.ledger.AsyncGroupSession`), its statements awaited.
    One group at a time: every reservation in a pool locks the pool's usage row, so a
    second group written beside the first would wait for the first's locks.

    It replaced a writer thread fed by the loop. There every round trip ended with the
    thread waiting for the GIL while the loop served HTTP, and its answers crossed back
    through the loop's self-pipe: a group of 16 took 5.4-6.0 ms from hand-over to
    answers, for 1.7-1.9 ms of the thread's CPU and about 1.5 ms of the server's. Here
    the server's answer wakes the loop like any socket. Denials (rare) are written by
    a worker thread through the store's pool (:func:`~governance.storage.ledger.record_denials`,
    whose one-by-one retry they keep)."""

    def __init__(
        self,
        store: Store,
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        turns: int = DEFAULT_TURNS,
    ) -> None:
        super().__init__(store, max_group=max_group, turns=turns)
        self._session = ledger.AsyncGroupSession(store)
        self._writing: asyncio.Task[None] | None = None
        self.groups = 0
        """Groups written so far (each one transaction per organisation, or more)."""
        self.requests = 0
        """Writes they carried."""

    @property
    def connects(self) -> int:
        """Connections to the store opened so far (one, unless one broke)."""
        return self._session.connects

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write the group in flight and those queued, then close the connection. A
        store that does not answer within ``timeout_s`` is given up: the group in
        flight is cancelled (PostgreSQL rolls it back) and every caller still waiting
        is answered StoreUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while self._writing is not None or self._reserves or self._denials:
                    if self._writing is not None:
                        await asyncio.shield(self._writing)
                    else:
                        self._schedule(loop, 1)
                        await asyncio.sleep(0)
        except TimeoutError:
            log.warning(
                "the ledger did not answer within %g s while the webhook stopped: the "
                "group in flight is rolled back and %d queued writes are not made",
                timeout_s,
                len(self._reserves) + len(self._denials),
            )
            writing = self._writing
            if writing is not None:
                writing.cancel()
                await asyncio.wait([writing])
            _fail([r[2] for r in self._reserves] + [d[1] for d in self._denials], _stopped())
            self._reserves, self._denials = [], []
        await self._session.close()

    def abandon(self) -> None:
        """Close the connection without waiting (its event loop is gone)."""
        self._session.abandon()

    def _ready(self) -> bool:
        # while a group is being written, writes wait and form the next group
        return self._writing is None

    def _write_groups(
        self,
        loop: asyncio.AbstractEventLoop,
        reserves: Sequence[_Reserving],
        denials: Sequence[_Denying],
    ) -> None:
        taken, rest = reserves[: self.max_group], reserves[self.max_group :]
        self._reserves[:0] = rest  # more than a group was waiting: the next one
        self.groups += 1
        self.requests += len(taken) + len(denials)
        self._writing = loop.create_task(self._write(loop, taken, denials))

    async def _write(
        self,
        loop: asyncio.AbstractEventLoop,
        reserves: Sequence[_Reserving],
        denials: Sequence[_Denying],
    ) -> None:
        outcomes: list[ledger.Reservation | Exception | BaseException] = []
        denied: BaseException | None = None
        try:
            for group in self._groups(reserves):
                outcomes.extend(await self._reserve(group[0][0], [r[1] for r in group]))
            if denials:
                try:
                    await loop.run_in_executor(
                        None, ledger.record_denials, self.store, [d for d, _ in denials]
                    )
                except Exception as exc:
                    denied = exc
        except BaseException as exc:  # a bug, or the writer stopped: answer every caller
            stopped = isinstance(exc, asyncio.CancelledError)
            if not stopped:
                log.error("ledger group writer failed", exc_info=exc)
            answer = _stopped() if stopped else exc
            outcomes += [answer] * (len(reserves) - len(outcomes))
            denied = denied or answer
            if stopped:
                raise
        finally:
            self._writing = None
            self._answer(loop, reserves, outcomes, denials, denied)

    async def _reserve(
        self, org: Org, requests: Sequence[ledger.ReserveRequest]
    ) -> list[ledger.Reservation | Exception]:
        """:func:`reserve_group` on the loop: one transaction, or one per request when
        the group fails for any reason but an unreachable store."""
        try:
            return list(await self._session.reserve_many(org, requests))
        except Exception as exc:
            final = _group_failed(requests, exc)
            if final is not None:
                return final
            return [
                outcome for request in requests for outcome in await self._reserve(org, [request])
            ]

    def _answer(
        self,
        loop: asyncio.AbstractEventLoop,
        reserves: Sequence[_Reserving],
        outcomes: Sequence[object],
        denials: Sequence[_Denying],
        denied: BaseException | None,
    ) -> None:
        abandoned = []
        for (*_, future), outcome in zip(reserves, outcomes, strict=True):
            if future.cancelled():  # its caller went away while it was being written
                gone = abandoned_allocation(outcome)
                if gone is not None:
                    abandoned.append(gone)
            _settle(future, outcome)
        for _, future in denials:
            _settle(future, denied)
        if abandoned:
            loop.run_in_executor(None, release_abandoned, self.store, abandoned)
        if self._reserves or self._denials:
            self._schedule(loop, 1)


def _stopped() -> StoreUnavailable:
    """The answer to a write the webhook stopped before the store took."""
    return StoreUnavailable("the webhook stopped before the ledger answered")


def _settle(future: Future[Any] | asyncio.Future[Any], outcome: object) -> None:
    """An exception as the future's error, anything else as its result; a future
    already done (its caller went away) is left alone."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _fail(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        _settle(future, exc)


def _by_org(items: Sequence[_T], org: Callable[[_T], Org], size: int) -> list[Sequence[_T]]:
    """``items`` cut into transactions: one organisation each (a new configuration
    revision starts a new one) and ``size`` items at most."""
    groups: list[Sequence[_T]] = []
    start = 0
    for end in range(1, len(items) + 1):
        if end == len(items) or org(items[end]) is not org(items[start]) or end - start == size:
            groups.append(items[start:end])
            start = end
    return groups


def _chain(
    loop: asyncio.AbstractEventLoop,
    source: Future[Any],
    target: asyncio.Future[Any],
    store: Store,
) -> None:
    """Settle ``target`` (on ``loop``) as ``source`` (in a writer thread) settles. A
    ``target`` cancelled (its caller gave up) cancels ``source`` if it is still queued,
    and a reservation ``source`` made all the same is released."""

    def copy(done: Future[Any]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        outcome = exc if exc is not None else done.result()
        if target.cancelled():
            gone = abandoned_allocation(outcome)
            if gone is not None:
                loop.run_in_executor(None, release_abandoned, store, [gone])
            return
        _settle(target, outcome)

    source.add_done_callback(lambda done: loop.call_soon_threadsafe(copy, done))
    target.add_done_callback(lambda settled: source.cancel() if settled.cancelled() else None)


__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEFAULT_MAX_GROUP",
    "DEFAULT_TURNS",
    "InlineWriter",
    "LedgerWriter",
    "LoopGroupWriter",
    "abandoned_allocation",
    "release_abandoned",
    "reserve_group",
]
