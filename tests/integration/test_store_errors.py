"""Store errors are told apart by their codes (SQLSTATE, SQLite's result codes), and a
transaction that PostgreSQL rolls back to break a deadlock is run again by the ledger."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from governance.errors import StoreBusy, StoreConflict
from governance.storage import ledger, schema
from governance.storage.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_store(pg_database: str) -> Iterator[Store]:
    store = Store(pg_database)
    with store.write() as conn:
        conn.execute(
            sa.insert(schema.usage),
            [{"scope": s, "slices": 0, "memory_mib": 0, "compute_pct": 0} for s in "ab"],
        )
    yield store
    store.close()


def _lock(conn: Connection, scope: str) -> None:
    conn.exec_driver_sql("SELECT scope FROM usage WHERE scope = %s FOR UPDATE", (scope,))


def _hold_then_cross(store: Store, started: threading.Event, first: str, second: str) -> None:
    """In a transaction of its own: lock ``first``, wait, then ``second``."""
    with store.engine.begin() as conn:
        _lock(conn, first)
        started.set()
        time.sleep(0.3)
        _lock(conn, second)


@pytest.mark.postgres
def test_a_deadlock_is_a_conflict_not_a_lock_timeout_nor_an_outage(pg_store: Store) -> None:
    """PostgreSQL's report reads "Process 1 waits for ShareLock ...; blocked by process
    2": a test for the word "locked" took it for a busy timeout (issue 12.3)."""
    started = threading.Event()
    other = threading.Thread(target=_hold_then_cross, args=(pg_store, started, "b", "a"))
    other.start()
    started.wait(5)
    with pytest.raises(StoreConflict) as caught, pg_store.write() as conn:
        _lock(conn, "a")  # waits first, so the detector picks this transaction
        _lock(conn, "b")
    other.join(10)
    assert "deadlock detected" in str(caught.value)
    assert "can run again" in str(caught.value)
    assert "locked by another writer" not in str(caught.value)


@pytest.mark.postgres
def test_the_ledger_runs_a_transaction_again_after_losing_a_deadlock(pg_store: Store) -> None:
    started = threading.Event()
    other = threading.Thread(target=_hold_then_cross, args=(pg_store, started, "b", "a"))
    runs: list[int] = []

    def work(conn: Connection) -> str:
        runs.append(1)
        if len(runs) == 1:
            other.start()
            started.wait(5)
        _lock(conn, "a")
        _lock(conn, "b")
        return "done"

    assert ledger._write(pg_store, work) == "done"
    other.join(10)
    assert len(runs) == 2  # lost the deadlock once, then ran through


def test_sqlite_lock_is_told_by_its_result_code(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = Store(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's writer
        with pytest.raises(StoreBusy, match="locked by another writer"):  # noqa: SIM117
            with store.write(wait=False) as conn:
                conn.exec_driver_sql("SELECT 1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        store.close()
