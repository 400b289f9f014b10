"""Drop ``casbin_rule``: the RBAC policy is compiled from each revision's role bindings.

Every reader (the webhook, ``gpupool check``, ``gpupool set quota``, the console) asks
the policy of the configuration revision it holds (:mod:`governance.snapshot`), compiled
from that revision's ``role_bindings``. A second copy of the rules in their own table
could only disagree with the revision beside it, so it is no longer written nor read.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("casbin_rule")


def downgrade() -> None:
    # An empty table: a downgraded gpupool rewrites its rules on its next apply.
    op.create_table(
        "casbin_rule",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ptype", sa.String(8), nullable=False),
        *(sa.Column(f"v{i}", sa.String(512), nullable=False) for i in range(6)),
    )
