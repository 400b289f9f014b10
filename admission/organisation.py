"""The snapshot in force, as the event loop sees it: never a store query on the loop.

:class:`governance.storage.source.SnapshotSource` asks the store for the newest
configuration revision every few seconds, synchronously. Called on the event loop (as every GPU
admission did), a PostgreSQL that stopped answering stopped the loop with it: /healthz
failed, and GPU pods waiting behind it were admitted 17-30 s later, after the API
server had given up on them. :class:`LiveSnapshot` runs that refresh in a worker thread, one
at a time. A request that finds a refresh due waits for it up to
:data:`FRESH_WAIT_S` from the refresh's start (so that a revision just applied is used
at once), then goes on with the last snapshot loaded: the store is needed for the
reservation anyway, and that wait is bounded by the request budget. Only a webhook that
never loaded a snapshot waits for one until its budget runs out (one refresh
shared by every request, so a hung store costs one thread, not one per request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio.to_thread

from governance.errors import GpupoolError
from governance.snapshot import Snapshot
from governance.storage.source import SnapshotSource

log = logging.getLogger(__name__)

FRESH_WAIT_S = 0.25
"""How long after a refresh started requests wait for it; the newest-revision query is
one indexed max(), milliseconds on a store that answers."""


class LiveSnapshot:
    """:meth:`get` for the event loop, over a :class:`SnapshotSource` read in threads."""

    def __init__(
        self, source: SnapshotSource, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.clock = clock
        self._snapshot: Snapshot | None = None
        self._loaded_at: float | None = None
        self._refresh: asyncio.Task[Snapshot] | None = None
        self._refresh_started_at = 0.0
        self.failures = 0
        """Refreshes that failed in a row (the last snapshot keeps serving)."""

    async def get(self) -> Snapshot:
        """The snapshot; starts a refresh in the background when one is due."""
        found = self._snapshot
        if found is not None:
            loaded_at = self._loaded_at
            now = self.clock()
            task = self._refresh
            if loaded_at is None or now - loaded_at >= self.source.refresh_s:
                task = self._start_refresh()
            if task is None or task.done():
                return found
            wait_s = self._refresh_started_at + FRESH_WAIT_S - now
            if wait_s <= 0:  # a refresh that hangs: serve what was loaded
                return found
            try:
                return await asyncio.wait_for(asyncio.shield(task), wait_s)
            except (TimeoutError, GpupoolError):
                return found
        # Nothing to serve from yet: wait for the one refresh every request shares. A
        # request that gives up (its budget ran out) must not cancel it for the others.
        return await asyncio.shield(self._start_refresh())

    def _start_refresh(self) -> asyncio.Task[Snapshot]:
        task = self._refresh
        if task is None or task.done():
            self._refresh_started_at = self.clock()
            task = self._refresh = asyncio.get_running_loop().create_task(self._load())
            # every waiter may have given up: the error is reported here, not by the GC
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task

    async def _load(self) -> Snapshot:
        try:
            # abandoned if the loop shuts down; a hung store keeps only this thread
            found = await anyio.to_thread.run_sync(self.source.get, abandon_on_cancel=True)
        except GpupoolError as exc:
            self.failures += 1
            self._loaded_at = self.clock()  # retried after refresh_s, not on every request
            if self._snapshot is None:
                raise
            if self.failures == 1:
                log.warning(
                    "cannot refresh the configuration, keeping revision %s: %s",
                    self.source.revision,
                    exc,
                )
            return self._snapshot
        self.failures = 0
        self._snapshot = found
        self._loaded_at = self.clock()
        return found


__all__ = ["LiveSnapshot"]
