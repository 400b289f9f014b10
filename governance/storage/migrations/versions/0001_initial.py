"""Initial schema: configuration revisions, usage, allocations, denials, casbin rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "config_revisions",
        sa.Column("revision", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("scope", sa.String(512), primary_key=True),
        sa.Column("slices", sa.BigInteger, nullable=False),
        sa.Column("memory_mib", sa.BigInteger, nullable=False),
        sa.Column("compute_pct", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "allocations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_uid", sa.String(128), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("pod_name", sa.String(253), nullable=False),
        sa.Column("pod_uid", sa.String(64), nullable=False),
        sa.Column("department", sa.String(253), nullable=False),
        sa.Column("queue", sa.String(253), nullable=False),
        sa.Column("sku", sa.String(253), nullable=False),
        sa.Column("pool", sa.String(253), nullable=False),
        sa.Column("slices", sa.BigInteger, nullable=False),
        sa.Column("memory_mib", sa.BigInteger, nullable=False),
        sa.Column("compute_pct", sa.BigInteger, nullable=False),
        sa.Column("borrowed_slices", sa.BigInteger, nullable=False),
        sa.Column("borrowed_memory_mib", sa.BigInteger, nullable=False),
        sa.Column("borrowed_compute_pct", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("grants", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_allocations_state", "allocations", ["state"])
    op.create_index("ix_allocations_department", "allocations", ["department", "state"])
    op.create_index("ix_allocations_pod_uid", "allocations", ["pod_uid"])
    op.create_table(
        "denials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("department", sa.String(253), nullable=False),
        sa.Column("queue", sa.String(253), nullable=False),
        sa.Column("sku", sa.String(253), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_denials_department_at", "denials", ["department", "at"])
    op.create_table(
        "casbin_rule",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ptype", sa.String(8), nullable=False),
        sa.Column("v0", sa.String(512), nullable=False),
        sa.Column("v1", sa.String(512), nullable=False),
        sa.Column("v2", sa.String(512), nullable=False),
        sa.Column("v3", sa.String(512), nullable=False),
        sa.Column("v4", sa.String(512), nullable=False),
        sa.Column("v5", sa.String(512), nullable=False),
    )


def downgrade() -> None:
    for table in ("casbin_rule", "denials", "allocations", "usage", "config_revisions"):
        op.drop_table(table)
