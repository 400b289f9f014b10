"""The governance store: one SQL database shared by every replica.

SQLite is the embedded default (WAL journal, ``BEGIN IMMEDIATE`` write transactions so
that quota checks serialise); PostgreSQL is the shared store for several replicas
(row locks with ``SELECT ... FOR UPDATE`` on the usage rows). The schema is created and
migrated by Alembic (``governance/storage/migrations``) when the store opens.

The URL comes from ``--store URL`` or ``GPUPOOL_STORE``; a bare path is a SQLite file.

Nothing waits on the database without a bound (:class:`Timeouts`): a hung or
unreachable server ends in :class:`~governance.errors.StoreUnavailable`, never in a
thread blocked for good. On PostgreSQL the connect timeout is libpq's (a stopped server
accepts the TCP connection and never answers it) and also bounds the wait for a pooled
connection; the statement, lock and idle-in-transaction timeouts are the server's
settings for every session. A server that is stopped outright (SIGSTOP, a frozen VM)
enforces nothing, and a statement sent to it waits until it resumes: callers that must
answer in time (the webhook) wait for the store with a deadline of their own. SQLite's
lock timeout is its busy timeout; its statement timeout is a progress handler that
interrupts a transaction running past it.

SQLite's write-ahead log is checkpointed by a background thread: PASSIVE every
``checkpoint_interval_s`` (it never blocks anyone, but under a steady stream of writes
it never catches up, so the log is never restarted and grew to 571 MB for a 9 MB
database), then TRUNCATE once the log passes ``wal_truncate_bytes``, which completes
the checkpoint and empties the file while writers wait at most
:data:`WAL_TRUNCATE_BUSY_MS` for it (more after failures, and less often).
:meth:`Store.close` truncates it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from governance.errors import ConfigError, StoreBusy, StoreConflict, StoreError, StoreUnavailable
from governance.storage import schema

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///gpupool.db"
BUSY_TIMEOUT_MS = 5_000
"""SQLite: how long a writer waits for another connection's write lock, unless the
Store is given another lock timeout. Write transactions hold the lock for milliseconds;
5 s ends a wait before the webhook's request budget (8 s) does."""
ENV_STORE = "GPUPOOL_STORE"

DEFAULT_WAL_TRUNCATE_BYTES = 64 * 1024 * 1024
"""SQLite: the WAL size past which the checkpointer truncates it (see the module
docstring). At 1,500 admissions/s the log grows about 40 MB/s, so this is a TRUNCATE
every second or two at the peak, each copying only what the PASSIVE checkpoint just
before it left."""
WAL_TRUNCATE_BUSY_MS = 100
"""SQLite: how long the TRUNCATE checkpoint waits for readers and writers to finish.
Writers that begin meanwhile wait for it (the webhook's on-loop writer hands its group
to a thread instead). After a checkpoint that could not finish in time, the next waits
twice as long, up to :data:`WAL_TRUNCATE_BUSY_MAX_MS` (a reader thread that the GIL
keeps from finishing its snapshot must not keep the log growing), and comes 1, 3, 7...
rounds later (at most :data:`WAL_TRUNCATE_MAX_SKIP`) unless a PASSIVE round copied
every frame: a long reader then holds writers back 0.4 s in 32 rounds at most."""
WAL_TRUNCATE_BUSY_MAX_MS = 400
WAL_TRUNCATE_MAX_SKIP = 31
_SQLITE_PROGRESS_STEPS = 1_000_000
"""SQLite virtual-machine steps between two checks of the statement deadline."""


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """How long the store may keep a caller waiting, in seconds (None: no bound)."""

    connect_s: float | None = 5.0
    """PostgreSQL: establishing a connection (libpq's connect_timeout, 2 s at least),
    and waiting for a free connection of the pool."""
    statement_s: float | None = None
    """One statement (PostgreSQL's statement_timeout; also its
    idle_in_transaction_session_timeout, which frees the row locks of a client that
    stopped in the middle of a transaction); on SQLite, one transaction. None by
    default: `gpupool apply` or a usage rebuild on a large store may take minutes (the
    ledger bench's rebuild of 30,000 allocations passed 15 s on a loaded machine); the
    webhook sets it to its request budget (:meth:`within`)."""
    lock_s: float | None = BUSY_TIMEOUT_MS / 1000
    """Waiting for a lock: PostgreSQL's lock_timeout (row locks of another replica's
    reservation), SQLite's busy timeout (another connection's write lock)."""

    @classmethod
    def within(cls, budget_s: float) -> Timeouts:
        """Timeouts for a caller that answers within ``budget_s`` (the webhook): every
        wait ends before the budget does."""
        return cls(
            connect_s=max(2.0, min(5.0, budget_s / 2)),
            statement_s=budget_s,
            lock_s=budget_s / 2,
        )


def _ms(seconds: float | None) -> int:
    """PostgreSQL and SQLite milliseconds; 0 means no timeout to both."""
    return 0 if seconds is None else max(1, round(seconds * 1000))


SUPPORTED_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
"""The URL schemes a store may have (a bare path is a SQLite file)."""


def resolve_url(url: str | None) -> str:
    """``--store`` value, else GPUPOOL_STORE, else ./gpupool.db; a bare path is SQLite.

    Any other scheme is a ConfigError naming the supported ones (SQLAlchemy would
    otherwise fail on a missing driver module, as ``mysql://`` does on MySQLdb)."""
    url = url or os.environ.get(ENV_STORE) or DEFAULT_URL
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r}: gpupool stores its data in SQLite "
            "(sqlite:///path.db, or a bare path) or PostgreSQL "
            "(postgresql://user@host/db)",
            source="--store",
        )
    if scheme in ("postgresql", "postgres"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def sqlite_file(url: str | None) -> Path | None:
    """The file of a SQLite store (``url`` as :func:`resolve_url` reads it); None for an
    in-memory SQLite or a PostgreSQL store."""
    parsed = sa.engine.make_url(resolve_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class ConfigRevision:
    revision: int
    applied_at: datetime
    checksum: str
    source: str
    document: dict[str, Any]
    applied_by: str = ""
    """Who applied it (``user:NAME``, or ``local:login@host``); "" before migration 0003."""


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


# Errors are told apart by their codes, never by words in their text: PostgreSQL's
# deadlock report says "blocked by process", which a test for "locked" took for a busy
# timeout.
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
"""serialization_failure, deadlock_detected: the transaction was rolled back to let
another one through, and may run again."""
LOCK_SQLSTATES = frozenset({"55P03"})
"""lock_not_available: a lock wait ran past ``lock_timeout`` (or NOWAIT)."""
SQLITE_BUSY, SQLITE_LOCKED = 5, 6
"""SQLite's primary result codes for a database (or table) locked by another connection."""


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error (psycopg's ``sqlstate``), else None."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code if isinstance(code, str) else None


def _is_conflict(exc: BaseException) -> bool:
    return sqlstate(exc) in CONFLICT_SQLSTATES


def _is_locked(exc: BaseException) -> bool:
    """SQLite: the database was locked by another connection (PostgreSQL's lock waits
    end at ``lock_timeout``: :func:`_timed_out`)."""
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


_PG_STATEMENT_TIMEOUT = "57014"  # query_canceled
_PG_IDLE_TIMEOUT = "25P03"  # idle_in_transaction_session_timeout


def _timed_out(exc: DBAPIError) -> str | None:
    """Which of the store's timeouts ``exc`` is, if any: "statement" or "lock"."""
    state = getattr(exc.orig, "sqlstate", None)
    if state in (_PG_STATEMENT_TIMEOUT, _PG_IDLE_TIMEOUT):
        return "statement"
    if state in LOCK_SQLSTATES:
        return "lock"
    if isinstance(exc, OperationalError) and str(exc.orig) == "interrupted":
        return "statement"  # SQLite's progress handler ended the transaction
    return None


class Store:
    """A connection pool to the governance database, with transaction helpers."""

    def __init__(
        self,
        url: str | None = None,
        *,
        migrate: bool = True,
        pool_size: int = 5,
        checkpoint_interval_s: float = 1.0,
        wal_truncate_bytes: int | None = DEFAULT_WAL_TRUNCATE_BYTES,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]
        self.checkpoint_interval_s = checkpoint_interval_s
        """SQLite: how often a background thread checkpoints the WAL (see _checkpointer)."""
        self.wal_truncate_bytes = wal_truncate_bytes
        """SQLite: truncate the WAL once it is larger (None: PASSIVE checkpoints only)."""
        self.timeouts = timeouts or Timeouts(lock_s=BUSY_TIMEOUT_MS / 1000)
        self.wal_truncations = 0
        """TRUNCATE checkpoints that completed (the checkpointer's and close's)."""
        self._truncate_failures = 0
        self._truncate_skip = 0
        self._checkpointer: threading.Thread | None = None
        self._closed = threading.Event()
        self._migrating = False
        self.engine = self._make_engine(pool_size)
        if migrate:
            self.migrate()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def _busy_ms(self) -> int:
        """SQLite's busy timeout for the lock timeout (its 0 would mean no wait at all)."""
        lock_s = self.timeouts.lock_s
        return 2**31 - 1 if lock_s is None else _ms(lock_s)

    def _make_engine(self, pool_size: int) -> Engine:
        if self.is_sqlite:
            # LIFO: the connection used last (its page cache warm) is the one reused
            pool: dict[str, Any] = (
                {"poolclass": sa.pool.StaticPool}
                if ":memory:" in self.url
                else {"poolclass": sa.pool.QueuePool, "pool_use_lifo": True}
            )
            busy_ms = self._busy_ms
            engine = sa.create_engine(
                self.url,
                connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
                **pool,
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, record: Any) -> None:
                # Let SQLAlchemy not emit BEGIN; we emit BEGIN IMMEDIATE ourselves so
                # that a write transaction holds the write lock from its first read.
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                # No checkpoint inside a committing transaction: SQLite's automatic
                # checkpoint ran on whichever commit crossed 1,000 pages, and its fsync
                # made that reservation's latency 10x the median (the p99 of
                # bench/ledger.py). A background thread checkpoints instead.
                cur.execute("PRAGMA wal_autocheckpoint=0")
                if self.wal_truncate_bytes is not None:
                    # a log restarted after a complete checkpoint shrinks to this size
                    cur.execute(f"PRAGMA journal_size_limit={self.wal_truncate_bytes}")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
                deadline = record.info["deadline"] = [math.inf]
                if self.timeouts.statement_s is not None:
                    dbapi_conn.set_progress_handler(
                        lambda: time.monotonic() > deadline[0], _SQLITE_PROGRESS_STEPS
                    )

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                mode = conn.info.get("begin_mode", "DEFERRED")
                if conn.info.get("no_wait"):
                    _set_busy_timeout(conn, 0)
                if self.timeouts.statement_s is not None and not self._migrating:
                    conn.connection.info["deadline"][0] = (
                        time.monotonic() + self.timeouts.statement_s
                    )
                conn.exec_driver_sql(f"BEGIN {mode}")

            @event.listens_for(engine, "checkin")
            def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
                deadline = record.info.get("deadline")
                if deadline is not None:
                    deadline[0] = math.inf

            return engine
        t = self.timeouts
        settings = {
            "statement_timeout": _ms(t.statement_s),
            "lock_timeout": _ms(t.lock_s),
            "idle_in_transaction_session_timeout": _ms(t.statement_s),
        }
        connect_args: dict[str, Any] = {
            "options": " ".join(f"-c {name}={value}" for name, value in settings.items()),
            # a peer that vanished (not one that stopped: its kernel still answers)
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
        }
        if t.connect_s is not None:
            connect_args["connect_timeout"] = max(2, math.ceil(t.connect_s))
        self._pg_connect_args = connect_args
        engine = sa.create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_timeout=t.connect_s if t.connect_s is not None else 30.0,
            connect_args=connect_args,
        )

        @event.listens_for(engine, "begin")
        def _on_begin_pg(conn: Connection) -> None:
            if self._migrating:  # a migration may take its time, and wait for others.
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
                conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")

        return engine

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        from governance.storage import migrations

        self._migrating = True
        try:
            with self._translate():
                migrations.upgrade(self.engine)
        finally:
            self._migrating = False

    def close(self) -> None:
        """Stop the checkpointer, truncate SQLite's WAL, close every connection."""
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
            try:
                self._truncate_wal()
            except Exception:  # another process may be writing: it will checkpoint
                log.debug("WAL truncation at close failed", exc_info=True)
        self.engine.dispose()

    def _start_checkpointer(self) -> None:
        if self._checkpointer is not None or not self.is_sqlite or ":memory:" in self.url:
            return
        thread = threading.Thread(
            target=self._checkpoint_loop, name="gpupool-sqlite-checkpoint", daemon=True
        )
        self._checkpointer = thread
        thread.start()

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database every few seconds, off the request path.

        PASSIVE never blocks readers or writers; once the log is larger than
        :attr:`wal_truncate_bytes`, a TRUNCATE follows it (see the module docstring and
        :data:`WAL_TRUNCATE_BUSY_MS`). A checkpoint that fails (the file went away, the
        store is closing) is tried again on the next round."""
        while not self._closed.wait(self.checkpoint_interval_s):
            try:
                _busy, frames, done = self._checkpoint("PASSIVE")
                limit = self.wal_truncate_bytes
                if limit is not None and self.wal_bytes() > limit:
                    # After failures, wait some rounds unless PASSIVE copied every frame:
                    # a reader that holds an old snapshot (a long report, a backup) would
                    # keep each TRUNCATE holding the writers back while it waits for it.
                    if self._truncate_skip > 0 and done < frames:
                        self._truncate_skip -= 1
                    else:
                        self._truncate_wal()
            except Exception:  # a background chore must never die loudly
                log.debug("WAL checkpoint failed; retrying next round", exc_info=True)

    def wal_bytes(self) -> int:
        """SQLite: the size of the write-ahead log file (0 when there is none)."""
        database = sa.engine.make_url(self.url).database
        try:
            return os.stat(f"{database}-wal").st_size
        except OSError:
            return 0

    def _checkpoint(self, mode: str, *, busy_ms: int | None = None) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(mode)`` on a connection outside any transaction:
        (busy, frames in the log, frames checkpointed); busy is 1 when it could not
        finish (readers or a writer held on past the busy timeout)."""
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            if busy_ms is not None:
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            try:
                row = cur.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                if busy_ms is not None:
                    cur.execute(f"PRAGMA busy_timeout={self._busy_ms}")
                cur.close()
        finally:
            raw.close()
        busy, frames, done = row
        return int(busy), int(frames), int(done)

    def _truncate_wal(self) -> bool:
        """Checkpoint the whole log and truncate it to nothing; True when it did."""
        if not self.is_sqlite or ":memory:" in self.url:
            return False
        busy_ms = min(WAL_TRUNCATE_BUSY_MS << self._truncate_failures, WAL_TRUNCATE_BUSY_MAX_MS)
        busy, frames, done = self._checkpoint("TRUNCATE", busy_ms=busy_ms)
        if busy:
            self._truncate_failures = min(self._truncate_failures + 1, 16)
            self._truncate_skip = min(2**self._truncate_failures - 1, WAL_TRUNCATE_MAX_SKIP)
            log.info(
                "WAL checkpoint could not finish within %d ms (%d of %d frames copied); "
                "retrying next round",
                busy_ms,
                done,
                frames,
            )
            return False
        self._truncate_failures = 0
        self._truncate_skip = 0
        self.wal_truncations += 1
        return True

    @contextmanager
    def _translate(self, *, busy: bool = False) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except sa.exc.TimeoutError as exc:  # every pooled connection is in use
            raise StoreUnavailable(
                f"the governance store ({self.safe_url}) gave no free connection within "
                f"{self.timeouts.connect_s:g} s: every one is waiting on a slow or hung "
                "database. Nothing was recorded."
            ) from exc
        except (DBAPIError, OSError) as exc:
            if _is_conflict(exc):
                raise StoreConflict(
                    f"the governance store ({self.safe_url}) rolled this transaction back to "
                    f"let a concurrent one through: {_first_line(exc)}. Nothing was "
                    "recorded; it can run again."
                ) from exc
            timeout = _timed_out(exc) if isinstance(exc, DBAPIError) else None
            if timeout is not None:
                limit = (
                    self.timeouts.statement_s if timeout == "statement" else self.timeouts.lock_s
                )
                raise StoreUnavailable(
                    f"the governance store ({self.safe_url}) did not answer within its "
                    f"{timeout} timeout ({limit or 0:g} s): {_first_line(exc)}. Nothing was "
                    "recorded; the database is overloaded or a long transaction holds it."
                ) from exc
            locked = _is_locked(exc)
            if busy and locked:
                raise StoreBusy(
                    f"the governance store ({self.safe_url}) is locked by another writer. "
                    "Nothing was recorded."
                ) from exc
            if locked:  # waited the whole busy timeout: reachable, but not writable now
                raise StoreUnavailable(
                    f"the governance store ({self.safe_url}) stayed locked by another "
                    f"writer for the whole busy timeout ({self.timeouts.lock_s:g} s): "
                    f"{_first_line(exc)}. Nothing was recorded; find the process that "
                    "holds the write lock (a stuck `gpupool apply`, a backup) and retry."
                ) from exc
            if _is_disconnect(exc) or isinstance(exc, OSError):
                raise StoreUnavailable(
                    f"the governance store ({self.safe_url}) cannot be reached: "
                    f"{_first_line(exc)}. Nothing was recorded."
                ) from exc
            raise StoreError(f"store error: {_first_line(exc)}") from exc

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def write(self, *, wait: bool = True) -> Iterator[Connection]:
        """A write transaction; on SQLite it takes the write lock at BEGIN.

        ``wait=False`` (SQLite): raise :class:`StoreBusy` at once when another
        connection holds the write lock, instead of waiting for it up to the busy
        timeout; for a caller that must not block, such as an event loop. PostgreSQL
        writers lock rows, not the database: there it changes nothing."""
        if self._checkpointer is None:
            self._start_checkpointer()
        no_wait = not wait and self.is_sqlite
        with self._translate(busy=no_wait), self.engine.connect() as conn:
            conn.info["begin_mode"] = "IMMEDIATE"
            conn.info["no_wait"] = no_wait
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info["begin_mode"] = "DEFERRED"
                if no_wait:
                    conn.info["no_wait"] = False
                    _set_busy_timeout(conn, self._busy_ms)

    def hold_async(self) -> AsyncHeldConnection:
        """A PostgreSQL connection for an event loop's write transactions (see
        :class:`AsyncHeldConnection`)."""
        if self.is_sqlite:
            raise ValueError("a held connection is PostgreSQL's: SQLite writes in place")
        return AsyncHeldConnection(self)

    def driver_connect_params(self) -> dict[str, Any]:
        """What the pool's connections are opened with (the URL's parts, the session's
        timeouts, keepalives), for a connection of the driver's own outside the pool."""
        _args, params = self.engine.dialect.create_connect_args(self.engine.url)
        return {**params, **self._pg_connect_args}

    def driver_error(self, exc: Exception, connection: Any = None) -> DBAPIError:
        """``exc``, an error of the database driver raised by a statement run on the
        driver's own connection, as SQLAlchemy would have raised it (what
        :meth:`_translate` and the callers tell apart by its SQLSTATE)."""
        dialect = self.engine.dialect
        disconnect = bool(dialect.is_disconnect(exc, connection, None))  # type: ignore[arg-type]
        error = DBAPIError.instance(
            None,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=dialect,
            connection_invalidated=disconnect,
        )
        assert isinstance(error, DBAPIError)  # exc is the driver's: never a StatementError
        return error

    @contextmanager
    def translated(self) -> Iterator[None]:
        """The store's errors (:class:`~governance.errors.StoreError` and its kinds) for
        SQLAlchemy's within the block."""
        with self._translate():
            yield

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._translate(), self.engine.connect() as conn, conn.begin():
            yield conn

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- configuration revisions ------------------------------------------------------

    def latest_config(self) -> ConfigRevision | None:
        t = schema.config_revisions
        with self.read() as conn:
            row = (
                conn.execute(sa.select(t).order_by(t.c.revision.desc()).limit(1)).mappings().first()
            )
        if row is None:
            return None
        return _revision(row)

    def config_history(self, *, limit: int = 20) -> list[ConfigRevision]:
        """The newest ``limit`` configuration revisions, newest first."""
        t = schema.config_revisions
        with self.read() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.revision.desc()).limit(limit))
            return [_revision(row) for row in rows.mappings()]

    def latest_revision(self) -> int:
        t = schema.config_revisions
        with self.read() as conn:
            value = conn.execute(sa.select(sa.func.max(t.c.revision))).scalar()
        return int(value or 0)

    def save_config(
        self, conn: Connection, document: dict[str, Any], *, source: str = "", applied_by: str = ""
    ) -> int:
        """Record a new configuration revision in the caller's transaction."""
        checksum = checksum_of(document)
        result = conn.execute(
            schema.config_revisions.insert().values(
                applied_at=utcnow(),
                checksum=checksum,
                source=source,
                document=document,
                applied_by=applied_by[:512],
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])


def _revision(row: Any) -> ConfigRevision:
    return ConfigRevision(
        revision=row["revision"],
        applied_at=row["applied_at"],
        checksum=row["checksum"],
        source=row["source"],
        document=dict(row["document"]),
        applied_by=row["applied_by"] or "",
    )


def _set_busy_timeout(conn: Connection, timeout_ms: int) -> None:
    """SQLite's busy timeout, set on the driver's connection. Through SQLAlchemy the
    statement after a transaction began another one (autobegin: BEGIN, the PRAGMA, a
    ROLLBACK when the connection went back to the pool): with the PRAGMA before BEGIN,
    ~85 of the ~150 us of CPU an empty no-wait write transaction cost, which every
    lone GPU admission pays (the inline writer's groups hold one request at a moderate
    rate). A PRAGMA with a literal integer cannot fail."""
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")


def checksum_of(document: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AsyncHeldConnection:
    """A PostgreSQL connection that an event loop keeps for its write transactions: the
    group commit's groups written on the loop itself (``admission.writer.LoopGroupWriter``),
    with no thread between the loop and the database (psycopg's ``AsyncConnection``,
    opened with the pool's parameters and session settings: its timeouts, keepalives).
    Its errors come out as the store's (:meth:`Store.driver_error`), and a connection
    that breaks is closed and the next transaction opens a new one. For one event loop,
    one transaction at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Any = None
        self.connects = 0
        """Connections opened so far (one, unless one broke)."""

    @property
    def broken(self) -> bool:
        """Whether no connection is held (none yet, or the last one broke)."""
        return self._conn is None

    async def connection(self) -> Any:
        """The driver's connection, opened when none is held."""
        if self._conn is None:
            dbapi = self.store.engine.dialect.loaded_dbapi
            with self.store.translated():
                try:
                    self._conn = await dbapi.AsyncConnection.connect(
                        **self.store.driver_connect_params()
                    )
                except dbapi.Error as exc:
                    raise self.store.driver_error(exc) from exc
            self.connects += 1
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A cursor in a transaction, committed at the end of the block and rolled back
        when the block raises; the driver's errors come out as the store's."""
        with self.store.translated():
            conn = await self.connection()
            try:
                async with conn.cursor() as cursor:
                    yield cursor
                await conn.commit()
            except BaseException as exc:
                error = exc  # the driver's own (from commit, rollback) as SQLAlchemy's
                if isinstance(exc, self.store.engine.dialect.loaded_dbapi.Error):
                    error = self.store.driver_error(exc, conn)
                try:
                    await conn.rollback()
                except Exception:
                    log.debug("rollback on a held connection failed", exc_info=True)
                invalidated = isinstance(error, DBAPIError) and error.connection_invalidated
                if conn.closed or conn.broken or invalidated:
                    await self.close()
                if error is exc:
                    raise
                raise error from exc

    def abandon(self) -> None:
        """Close the connection at once, without its event loop (a loop that is gone:
        an ``asyncio.run`` that ended)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()

    async def close(self) -> None:
        """Close the connection (a later transaction opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing a held connection failed", exc_info=True)
