"""Configuration revisions record who applied them (``applied_by``).

``gpupool apply`` and ``gpupool set quota`` name their caller (``--as``, else the
local login and host); department admins change their queues' quotas, so a
revision must say who made it. Existing rows get "" (unknown).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("config_revisions") as batch:
        batch.add_column(sa.Column("applied_by", sa.String(512), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("config_revisions") as batch:
        batch.drop_column("applied_by")
