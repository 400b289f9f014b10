"""A fresh PostgreSQL database per test (and per bench run), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def fresh_database(
    server_url: str, *, prefix: str = "gpupool_t_", create_options: str = ""
) -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server at ``server_url``
    (``CREATE DATABASE`` with ``create_options``: a template, a locale); afterwards its
    sessions are ended and it is dropped. No connection stays open in between (a
    process forked meanwhile inherits none). Raises SQLAlchemy's OperationalError when
    the server does not answer, its DBAPIError when it refuses the options."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" {create_options}'.rstrip()))
    try:
        yield (
            sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
