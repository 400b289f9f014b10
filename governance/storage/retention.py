"""How long the denial log keeps its records, and the prune that enforces it.

Every RBAC, placement and quota denial is recorded for the console and audit; without a
bound the table grows with every refused pod (200 forged requests added 200 rows). The
webhook, which records them, prunes them too (``gpupool webhook --denial-retention``):
:class:`DenialPruner` deletes what is older than the retention every so often, in
batches of :data:`BATCH_ROWS` rows, one transaction each, at most :data:`MAX_BATCHES`
per round, so that a prune never holds SQLite's write lock (or PostgreSQL's row locks)
for long and a large backlog is worked off over several rounds. Replicas prune the same
rows harmlessly: a row deleted twice is deleted once.

Allocations are not pruned: they are the ledger's history, for metering.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa

from governance.storage import schema
from governance.storage.store import Store, utcnow

log = logging.getLogger(__name__)

DEFAULT_DENIAL_RETENTION: Final = timedelta(days=30)
BATCH_ROWS: Final = 1000
MAX_BATCHES: Final = 100
"""100,000 rows a round at most; the next round takes the rest."""

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_retention(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``3600s``; ``forever`` keeps everything (None).
    ValueError, naming the accepted forms, for anything else."""
    value = text.strip().lower()
    if value == "forever":
        return None
    match = _DURATION.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"retention {text!r} is not a duration: write a positive whole number with a "
            "unit, such as 30d, 12h, 90m or 3600s, or 'forever' to keep every record"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def prune_denials(
    store: Store,
    *,
    older_than: datetime,
    batch_rows: int = BATCH_ROWS,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete denials recorded before ``older_than``, oldest first, ``batch_rows`` per
    transaction and ``max_batches`` transactions at most; the number deleted."""
    t = schema.denials
    oldest = sa.select(t.c.id).where(t.c.at < older_than).order_by(t.c.id).limit(batch_rows)
    deleted = 0
    for _ in range(max_batches):
        with store.write() as conn:
            ids = list(conn.execute(oldest).scalars())
            if ids:
                conn.execute(t.delete().where(t.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch_rows:
            break
    return deleted


class DenialPruner:
    """A daemon thread that prunes the denial log every ``interval_s`` (the first
    time at once) until :meth:`stop`."""

    def __init__(
        self,
        store: Store,
        *,
        retention: timedelta,
        interval_s: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval_s = (
            interval_s
            if interval_s is not None
            else min(3600.0, max(60.0, retention.total_seconds() / 24))
        )
        """By default a 24th of the retention, between a minute and an hour: the log
        holds at most about 4% more than the retention asks."""
        self.clock = clock
        self.deleted = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prune_once(self) -> int:
        deleted = prune_denials(self.store, older_than=self.clock() - self.retention)
        self.deleted += deleted
        self.rounds += 1
        if deleted:
            log.info("pruned %d denial records older than %s", deleted, self.retention)
        return deleted

    def start(self) -> None:
        def run() -> None:
            while True:
                try:
                    self.prune_once()
                except Exception as exc:  # the store is down: next round
                    log.warning("could not prune the denial log: %s", exc)
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=run, name="gpupool-denial-pruner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


__all__ = [
    "DEFAULT_DENIAL_RETENTION",
    "DenialPruner",
    "parse_retention",
    "prune_denials",
]
