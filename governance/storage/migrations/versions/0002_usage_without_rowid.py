"""SQLite: the usage table clustered on its scope key (WITHOUT ROWID).

A reservation updates seven usage rows: its department's three scopes (the
department, and its SKU and pool sub-scopes), its queue's three and its pool's. Their
keys share a prefix, so in a table clustered on the key they sit side by side, and an
update finds its row in one b-tree. With a rowid, SQLite kept the rows in insertion
order behind a separate key index, and each update read the index and then the row.
Group commits of 32 reservations took about a tenth less time (median 294 -> 262 us
per reservation, two stores interleaved in one process). PostgreSQL keeps its heap
and primary-key index: nothing changes there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = "scope, slices, memory_mib, compute_pct"


def _rebuild(without_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        "CREATE TABLE usage_rebuilt (scope VARCHAR(512) NOT NULL PRIMARY KEY, "
        "slices BIGINT NOT NULL, memory_mib BIGINT NOT NULL, compute_pct BIGINT NOT NULL)"
        f"{suffix}"
    )
    op.execute(f"INSERT INTO usage_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM usage")
    op.execute("DROP TABLE usage")
    op.execute("ALTER TABLE usage_rebuilt RENAME TO usage")


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)
