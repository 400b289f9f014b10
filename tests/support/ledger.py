"""Builders and helpers for ledger and group-commit tests: reservation requests as
values, the usage a test checks, and another connection that holds the store's write
lock (what a second webhook replica or a CLI command in the middle of a write looks
like to this one)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime

import sqlalchemy as sa

from governance import scopes
from governance.contract import SliceGrant
from governance.model import Org
from governance.resources import Resources
from governance.storage import ledger, schema
from governance.storage.store import Store
from tests.support.core import sku_demand

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def grant_of(org: Org, *, queue: tuple[str, str], sku: str, count: int) -> dict[str, SliceGrant]:
    """The grant of ``count`` slices of ``sku`` for one container named ``main``."""
    s = org.skus[sku]
    pool = org.pools[org.queues[queue].pool]
    return {
        "main": SliceGrant(
            count=count,
            memory_mib=s.memory_mib_on(pool),
            compute_pct=s.compute_pct,
            backend=pool.backend,
            pool=pool.name,
            sku=sku,
            gpus_per_slice=s.gpus_per_slice,
        )
    }


def reserve_request(
    org: Org,
    uid: str,
    *,
    department: str = "ml",
    queue: str = "train",
    sku: str = "a100-1g",
    count: int = 1,
    allocation_id: str | None = None,
    now: datetime = T0,
) -> ledger.ReserveRequest:
    """A :class:`ledger.ReserveRequest` for ``count`` slices of ``sku`` in a queue."""
    return ledger.ReserveRequest(
        demand=sku_demand(org, department=department, queue=queue, sku=sku, count=count),
        request_uid=uid,
        namespace=department,
        grants=grant_of(org, queue=(department, queue), sku=sku, count=count),
        subject="user:alice",
        pod_name=f"pod-{uid}",
        allocation_id=allocation_id,
        now=now,
    )


def reserve_one(store: Store, org: Org, r: ledger.ReserveRequest) -> ledger.Reservation:
    """``r`` through :func:`ledger.reserve`, the one-request path."""
    return ledger.reserve(
        store,
        org,
        demand=r.demand,
        request_uid=r.request_uid,
        namespace=r.namespace,
        grants=r.grants,
        subject=r.subject,
        pod_name=r.pod_name,
        allocation_id=r.allocation_id,
        ttl=r.ttl,
        now=r.now,
    )


def live_usage(store: Store) -> dict[str, Resources]:
    """Usage rows that are not zero (a denial leaves zero rows behind)."""
    return {k: v for k, v in ledger.usage(store).items() if not v.is_zero()}


def assert_usage_matches_allocations(store: Store) -> None:
    """The usage rows equal what rebuild_usage recomputes from the live allocations."""
    before = live_usage(store)
    ledger.rebuild_usage(store)
    assert live_usage(store) == before


class WriteLock:
    """Another connection holding the write lock that a reservation in department
    ``department`` needs, until :meth:`release` (callable from any thread, once or more).

    On SQLite that is the database's write lock (``BEGIN IMMEDIATE`` on a plain
    ``sqlite3`` connection); on PostgreSQL the department's usage row
    (``SELECT ... FOR UPDATE``), which every reservation in the department locks first.
    """

    def __init__(self, store: Store, department: str = "ml") -> None:
        self._mutex = threading.Lock()
        self._released = False
        self._sqlite: sqlite3.Connection | None = None
        self._pg: sa.Connection | None = None
        self._engine: sa.Engine | None = None
        if store.is_sqlite:
            path = sa.engine.make_url(store.url).database
            assert path
            self._sqlite = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._sqlite.execute("BEGIN IMMEDIATE")
            return
        scope = scopes.department(department).key
        usage = schema.usage
        with store.write() as conn:
            if conn.execute(sa.select(usage.c.scope).where(usage.c.scope == scope)).first() is None:
                conn.execute(
                    usage.insert().values(scope=scope, slices=0, memory_mib=0, compute_pct=0)
                )
        self._engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
        self._pg = self._engine.connect()
        self._pg.begin()
        self._pg.execute(sa.select(usage.c.scope).where(usage.c.scope == scope).with_for_update())

    def release(self) -> None:
        with self._mutex:
            if self._released:
                return
            self._released = True
            if self._sqlite is not None:
                self._sqlite.execute("ROLLBACK")
                self._sqlite.close()
            if self._pg is not None:
                self._pg.rollback()
                self._pg.close()
            if self._engine is not None:
                self._engine.dispose()
