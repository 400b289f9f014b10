"""Migration 0004 (allocations.fingerprint) on SQLite and PostgreSQL: entries made before
keep their figures and get an empty fingerprint, and the downgrade gives them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from governance.storage import ledger, migrations
from governance.storage.store import Store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def _columns(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns("allocations")}


def test_0004_adds_an_empty_fingerprint_to_the_entries_made_before(store_url: str) -> None:
    store = Store(store_url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0003")
        assert "fingerprint" not in _columns(store)
        old = {
            "id": "alloc-before",
            "request_uid": "uid-before",
            "state": "reserved",
            "namespace": "ml",
            "pod_name": "p",
            "pod_uid": "",
            "department": "ml",
            "queue": "train",
            "sku": "small",
            "pool": "a100",
            "slices": 2,
            "memory_mib": 40960,
            "compute_pct": 50,
            "borrowed_slices": 0,
            "borrowed_memory_mib": 0,
            "borrowed_compute_pct": 0,
            "subject": "user:ana",
            "grants": "{}",
            "created_at": T0,
            "expires_at": T0 + timedelta(minutes=10),
        }
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO allocations ({', '.join(old)}) "
                    f"VALUES ({', '.join(':' + k for k in old)})"
                ),
                old,
            )
        migrations.upgrade(store.engine)
        assert migrations.current(store.engine) == migrations.head(store.engine)
        entry = ledger.get(store, "alloc-before")
        assert entry is not None
        assert (entry.fingerprint, entry.amount.slices, entry.request_uid) == ("", 2, "uid-before")

        command.downgrade(migrations.alembic_config(store.engine), "0003")
        assert "fingerprint" not in _columns(store)
        with store.engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT id, slices FROM allocations")).all()
        assert [tuple(r) for r in kept] == [("alloc-before", 2)]
        migrations.upgrade(store.engine)
        assert "fingerprint" in _columns(store)
    finally:
        store.close()
