"""The store's tables (SQLAlchemy Core). Migrations in ``governance/storage/migrations`` create
them; this module is the single description the code reads and writes through."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

from governance.resources import RESOURCE_NAMES


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back timezone-aware, on every database.

    SQLite keeps no offset: an aware value in another zone would be stored as its wall
    clock and read back as if it were UTC. Converting on the way in and tagging on the
    way out keeps the instant on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC instants")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

config_revisions = Table(
    "config_revisions",
    metadata,
    Column("revision", Integer, primary_key=True, autoincrement=True),
    Column("applied_at", UTCDateTime(), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("document", JSON, nullable=False),
    # who applied it: ``user:NAME`` (gpupool apply/set --as) or ``local:login@host``
    Column("applied_by", String(512), nullable=False, default="", server_default=""),
)

BORROWED_PREFIX = "borrowed_"
"""An allocation's borrowed amount of resource R is in column ``borrowed_R``."""


def resource_columns(prefix: str = "") -> list[Column[int]]:
    """One count per quota resource (:data:`governance.resources.RESOURCES`): a new
    resource is a new column here, added to existing stores by a migration."""
    return [
        Column(f"{prefix}{name}", BigInteger, nullable=False, default=0) for name in RESOURCE_NAMES
    ]


usage = Table(
    "usage",
    metadata,
    Column("scope", String(512), primary_key=True),
    *resource_columns(),
    # clustered on the scope key in SQLite (migration 0002): a reservation's seven
    # scopes share prefixes, so its updates touch few pages
    sqlite_with_rowid=False,
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("request_uid", String(128), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("pod_name", String(253), nullable=False, default=""),
    Column("pod_uid", String(64), nullable=False, default=""),
    Column("department", String(253), nullable=False),
    Column("queue", String(253), nullable=False),
    Column("sku", String(253), nullable=False),
    Column("pool", String(253), nullable=False),
    *resource_columns(),
    *resource_columns(BORROWED_PREFIX),
    Column("subject", String(512), nullable=False, default=""),
    Column("grants", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("bound_at", UTCDateTime(), nullable=True),
    Column("ended_at", UTCDateTime(), nullable=True),
    # what identified the pod at admission (admission/fingerprint.py; migration 0004):
    # a reinvocation under a new request uid is recognised by it
    Column("fingerprint", String(64), nullable=False, server_default=""),
    Index("ix_allocations_state", "state"),
    Index("ix_allocations_department", "department", "state"),
    Index("ix_allocations_pod_uid", "pod_uid"),
)

denials = Table(
    "denials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("department", String(253), nullable=False, default=""),
    Column("queue", String(253), nullable=False, default=""),
    Column("sku", String(253), nullable=False, default=""),
    Column("subject", String(512), nullable=False, default=""),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_denials_department_at", "department", "at"),
)
