"""allocations.fingerprint: what identified the pod at admission.

kube-apiserver calls a webhook again under a new request uid when another mutating
webhook changed the pod (reinvocation). The ledger keyed a reservation by the request
uid only, so a reinvocation reserved a second allocation. Each reservation now records
a SHA-256 digest of the requester, the pod's identity and its GPU resources as gpupool
wrote them (admission/fingerprint.py); a presented allocation id is honoured only for a
pod with the same digest, while the entry is still reserved and within its TTL
(docs/protocol.md, "Reinvocation"). Entries made before have no digest ("") and are
never matched: their reinvocations are charged anew, as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite adds a NOT NULL column in place when it has a default: no table rebuild
    op.add_column(
        "allocations",
        sa.Column("fingerprint", sa.String(64), nullable=False, server_default=""),
    )


def downgrade() -> None:
    with op.batch_alter_table("allocations") as batch:
        batch.drop_column("fingerprint")
