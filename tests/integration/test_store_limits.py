"""The store bounds what it holds and how long it makes callers wait: SQLite's WAL stays
bounded under a steady stream of writes and is emptied at close; statements, lock waits
and connection attempts end in StoreUnavailable at their timeouts, on SQLite and on
PostgreSQL (real servers; a socket that never answers stands for a stopped one)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from governance.errors import StoreUnavailable
from governance.storage import schema
from governance.storage.store import Store, Timeouts

pytestmark = pytest.mark.integration

WAL_LIMIT = 256 * 1024
WRITES = 6000


def _sustained(store: Store, writes: int = WRITES) -> int:
    """``writes`` small write transactions back to back while another thread reads
    without pause; the largest WAL seen, in bytes."""
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with store.read() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(schema.usage)).scalar()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    largest = 0
    try:
        for i in range(writes):
            with store.write() as conn:
                conn.execute(
                    sa.insert(schema.usage).values(
                        scope=f"s/{i}", slices=i, memory_mib=0, compute_pct=0
                    )
                )
            if i % 50 == 0:
                largest = max(largest, store.wal_bytes())
    finally:
        stop.set()
        thread.join(10)
    return largest


def _settled_wal_bytes(store: Store, below: int, rounds: int = 100) -> int:
    """The WAL once the checkpointer had up to ``rounds`` turns with no writes."""
    for _ in range(rounds):
        size = store.wal_bytes()
        if size <= below:
            return size
        time.sleep(store.checkpoint_interval_s)
    return store.wal_bytes()


def test_sqlite_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    passive = Store(
        f"sqlite:///{tmp_path / 'passive.db'}", checkpoint_interval_s=0.01, wal_truncate_bytes=None
    )
    try:
        _sustained(passive)
        passive_settled = _settled_wal_bytes(passive, below=WAL_LIMIT, rounds=20)
    finally:
        passive.close()
    store = Store(
        f"sqlite:///{tmp_path / 'bounded.db'}",
        checkpoint_interval_s=0.01,
        wal_truncate_bytes=WAL_LIMIT,
    )
    try:
        _sustained(store)
        truncated_while_writing = store.wal_truncations
        settled = _settled_wal_bytes(store, below=WAL_LIMIT)
        with store.read() as conn:  # every write is there
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.usage)).scalar() == (
                WRITES
            )
    finally:
        store.close()
    # PASSIVE checkpoints never shrink the file: it keeps the size the writes gave it
    # (2.7 to 10.8 MB in runs here, 6.6 MB of frames written)
    assert passive_settled > 2 * WAL_LIMIT, passive_settled
    # truncated while the writes came, and down to the limit once they stopped
    assert truncated_while_writing > 0
    assert settled <= WAL_LIMIT, settled


def test_a_wal_grown_behind_a_long_reader_is_truncated_once_the_reader_ends(
    tmp_path: Path,
) -> None:
    """A reader that holds its snapshot (a long report, a backup) keeps any checkpoint
    from completing; once it ends, only TRUNCATE gives the space back."""
    sizes = {}
    for name, limit in (("passive", None), ("bounded", WAL_LIMIT)):
        path = tmp_path / f"{name}.db"
        store = Store(f"sqlite:///{path}", checkpoint_interval_s=0.01, wal_truncate_bytes=limit)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM usage").fetchone()  # holds its snapshot
            _sustained(store, writes=1500)
            assert store.wal_bytes() > 4 * WAL_LIMIT  # nothing could be checkpointed
            reader.execute("COMMIT")
            sizes[name] = _settled_wal_bytes(store, below=WAL_LIMIT)
        finally:
            reader.close()
            store.close()
    assert sizes["passive"] > 4 * WAL_LIMIT, sizes
    assert sizes["bounded"] <= WAL_LIMIT, sizes


def test_closing_the_store_truncates_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = Store(f"sqlite:///{path}", checkpoint_interval_s=3600)
    other = Store(f"sqlite:///{path}", migrate=False)  # another process keeps it open
    try:
        for i in range(200):
            with store.write() as conn:
                conn.execute(
                    sa.insert(schema.usage).values(
                        scope=f"s/{i}", slices=i, memory_mib=0, compute_pct=0
                    )
                )
        with other.read() as conn:
            conn.execute(sa.text("SELECT 1"))
        assert store.wal_bytes() > 100_000
    finally:
        store.close()
    try:
        assert other.wal_bytes() == 0  # the file is kept (other has it open) but empty
        with other.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.usage)).scalar() == (
                200
            )
    finally:
        other.close()


_FOREVER_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
    "SELECT count(*) FROM n"
)


def test_a_sqlite_transaction_past_the_statement_timeout_is_interrupted(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}", timeouts=Timeouts(statement_s=0.2))
    try:
        timed_out = pytest.raises(StoreUnavailable, match=r"statement timeout \(0\.2 s\)")
        with timed_out, store.read() as conn:
            conn.exec_driver_sql(_FOREVER_SQL).scalar()
        # the connection goes back to the pool usable, with no deadline left on it
        with store.read() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        raw = store.engine.raw_connection()
        try:
            assert raw.cursor().execute("SELECT 2").fetchone() == (2,)
        finally:
            raw.close()
    finally:
        store.close()


def test_a_sqlite_writer_waits_for_the_lock_only_its_lock_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    holder = Store(url)
    store = Store(url, migrate=False, timeouts=Timeouts(lock_s=0.1))
    try:
        locked = pytest.raises(StoreUnavailable, match=r"stayed locked.*0\.1 s")
        with holder.write(), locked, store.write() as conn:
            conn.execute(sa.delete(schema.denials))
    finally:
        store.close()
        holder.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose kernel accepts connections that nobody ever answers: what a
    PostgreSQL stopped by SIGSTOP (or a frozen VM) looks like to a client."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_connecting_to_a_server_that_never_answers_ends_at_the_connect_timeout(
    silent_server: int,
) -> None:
    store = Store(
        f"postgresql+psycopg://gpupool@127.0.0.1:{silent_server}/gpupool",
        migrate=False,
        timeouts=Timeouts(connect_s=2),
    )
    try:
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.ping()
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_statements_and_lock_waits_end_at_their_timeouts(pg_database: str) -> None:
    Store(pg_database).close()  # the schema
    holder = Store(pg_database, migrate=False)
    store = Store(pg_database, migrate=False, timeouts=Timeouts(statement_s=0.3, lock_s=0.2))
    try:
        timed_out = pytest.raises(StoreUnavailable, match=r"statement timeout \(0\.3 s\)")
        with timed_out, store.read() as conn:
            conn.execute(sa.text("SELECT pg_sleep(5)"))
        with holder.write() as conn:
            conn.execute(
                sa.insert(schema.usage).values(scope="s", slices=0, memory_mib=0, compute_pct=0)
            )
        with holder.write() as locked:
            locked.execute(
                sa.select(schema.usage).where(schema.usage.c.scope == "s").with_for_update()
            )
            waited = pytest.raises(StoreUnavailable, match=r"lock timeout \(0\.2 s\)")
            with waited, store.write() as conn:
                conn.execute(
                    schema.usage.update().where(schema.usage.c.scope == "s").values(slices=1)
                )
        store.ping()  # the pool's connections are usable again
    finally:
        store.close()
        holder.close()


@pytest.mark.postgres
def test_a_replica_waits_for_another_ones_migration_past_its_lock_timeout(
    pg_database: str,
) -> None:
    """Replicas starting together: one migrates under an advisory lock while the others
    wait for it, longer than a lock timeout meant for admissions."""
    from governance.storage import migrations

    admin = sa.create_engine(pg_database)
    with admin.connect() as conn:
        key = migrations._ADVISORY_LOCK_KEY
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        unlock = threading.Timer(
            0.6, lambda: conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        )
        unlock.start()
        try:
            store = Store(pg_database, timeouts=Timeouts(statement_s=0.5, lock_s=0.1))
        finally:
            unlock.join()
    admin.dispose()
    try:
        with store.read() as conn:  # the timeouts hold for everything else
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "100ms"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "500ms"
    finally:
        store.close()
