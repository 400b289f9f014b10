"""Migration 0005 (``casbin_rule`` dropped) on a store that earlier versions filled, on
SQLite and PostgreSQL: the rules they wrote beside each revision go, the revisions and
the ledger stay, and the policy every reader now compiles from the newest revision's
role bindings answers as those bindings say, whatever the old table held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from governance import config
from governance.rbac import Identity
from governance.storage import ledger, migrations, revisions, source
from governance.storage.store import Store

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _tables(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_0005_drops_the_stored_rules_and_the_revisions_bindings_decide(store_url: str) -> None:
    store = Store(store_url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0004")
        assert "casbin_rule" in _tables(store)
        applied = revisions.apply(store, config.load_file(EXAMPLE), source=str(EXAMPLE))
        # What an earlier gpupool wrote beside that revision, plus a rule the revision does
        # not have (a stale copy, the reason there is one truth now): a grant of the
        # platform-admin role to "user:mallory".
        rules = [
            ("g", "user:alice@northwind.example", "platform-admin", "*", "", "", ""),
            ("g", "user:mallory", "platform-admin", "*", "", "", ""),
        ]
        allocation = {
            "id": "alloc-kept",
            "request_uid": "uid-kept",
            "state": "bound",
            "namespace": "research",
            "pod_name": "p",
            "pod_uid": "pod-1",
            "department": "research",
            "queue": "experiments",
            "sku": "h100-1g.10gb",
            "pool": "h100",
            "slices": 1,
            "memory_mib": 10240,
            "compute_pct": 14,
            "borrowed_slices": 0,
            "borrowed_memory_mib": 0,
            "borrowed_compute_pct": 0,
            "subject": "user:ravi",
            "grants": "{}",
            "created_at": T0,
            "expires_at": T0 + timedelta(minutes=10),
            "fingerprint": "",
        }
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4, v5) "
                    "VALUES (:p, :v0, :v1, :v2, :v3, :v4, :v5)"
                ),
                [
                    dict(zip(("p", "v0", "v1", "v2", "v3", "v4", "v5"), r, strict=True))
                    for r in rules
                ],
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO allocations ({', '.join(allocation)}) "
                    f"VALUES ({', '.join(':' + k for k in allocation)})"
                ),
                allocation,
            )

        migrations.upgrade(store.engine)

        assert migrations.current(store.engine) == migrations.head(store.engine) == "0005"
        assert "casbin_rule" not in _tables(store)
        snapshot = source.load(store)
        assert snapshot is not None and snapshot.revision == applied.revision
        policy = snapshot.policy
        assert policy.can_edit_quota(Identity(user="alice@northwind.example"), "ml").allowed
        assert not policy.can_view(Identity(user="mallory"), "ml").allowed
        kept = ledger.get(store, "alloc-kept")
        assert kept is not None and (kept.state, kept.amount.slices) == (ledger.State.BOUND, 1)

        # Down and up again: the table comes back empty (a downgraded gpupool rewrites
        # its rules on its next apply) and goes again.
        command.downgrade(migrations.alembic_config(store.engine), "0004")
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM casbin_rule")).scalar() == 0
        migrations.upgrade(store.engine)
        assert "casbin_rule" not in _tables(store)
    finally:
        store.close()
