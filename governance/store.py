"""The governance store: one SQL database shared by every replica.

SQLite is the embedded default (WAL journal, ``BEGIN IMMEDIATE`` write transactions so
that quota checks serialise); PostgreSQL is the shared store for several replicas
(row locks with ``SELECT ... FOR UPDATE`` on the usage rows). The schema is created and
migrated by Alembic (``governance/migrations``) when the store opens.

The URL comes from ``--store URL`` or ``GPUPOOL_STORE``; a bare path is a SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from governance import schema
from governance.errors import ConfigError, StoreBusy, StoreConflict, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///gpupool.db"
BUSY_TIMEOUT_MS = 30_000
"""SQLite: how long a writer waits for another connection's write lock."""
ENV_STORE = "GPUPOOL_STORE"


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
    if sqlstate(exc) in LOCK_SQLSTATES:
        return True
    code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)


class Store:
    """A connection pool to the governance database, with transaction helpers."""

    def __init__(
        self,
        url: str | None = None,
        *,
        migrate: bool = True,
        pool_size: int = 5,
        checkpoint_interval_s: float = 1.0,
    ) -> None:
        self.url = resolve_url(url)
        self.dialect = self.url.split(":", 1)[0].split("+", 1)[0]
        self.checkpoint_interval_s = checkpoint_interval_s
        """SQLite: how often a background thread checkpoints the WAL (see _checkpointer)."""
        self._checkpointer: threading.Thread | None = None
        self._closed = threading.Event()
        self.engine = self._make_engine(pool_size)
        if migrate:
            self.migrate()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _make_engine(self, pool_size: int) -> Engine:
        if self.is_sqlite:
            # LIFO: the connection used last (its page cache warm) is the one reused
            pool: dict[str, Any] = (
                {"poolclass": sa.pool.StaticPool}
                if ":memory:" in self.url
                else {"poolclass": sa.pool.QueuePool, "pool_use_lifo": True}
            )
            engine = sa.create_engine(
                self.url,
                connect_args={"timeout": 30, "check_same_thread": False},
                **pool,
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
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
                cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                mode = conn.info.get("begin_mode", "DEFERRED")
                if conn.info.get("no_wait"):
                    _set_busy_timeout(conn, 0)
                conn.exec_driver_sql(f"BEGIN {mode}")

            return engine
        return sa.create_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        from governance import migrations

        with self._translate():
            migrations.upgrade(self.engine)

    def close(self) -> None:
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
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

        PASSIVE never blocks readers or writers; a checkpoint that fails (the file went
        away, the store is closing) is tried again on the next round."""
        while not self._closed.wait(self.checkpoint_interval_s):
            try:
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a background chore must never die loudly
                log.debug("WAL checkpoint failed; retrying next round", exc_info=True)

    @contextmanager
    def _translate(self, *, busy: bool = False) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (DBAPIError, OSError) as exc:
            if _is_conflict(exc):
                raise StoreConflict(
                    f"the governance store ({self.safe_url}) rolled this transaction back to "
                    f"let a concurrent one through: {_first_line(exc)}. Nothing was "
                    "recorded; it can run again."
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
                    f"writer for the whole busy timeout ({BUSY_TIMEOUT_MS / 1000:g} s): "
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
                    _set_busy_timeout(conn, BUSY_TIMEOUT_MS)

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
