"""Alembic migrations of the governance store, run programmatically by Store.migrate.

Several replicas may start at once against a fresh database, so an upgrade runs under a
lock: a PostgreSQL advisory lock, or an exclusive ``flock`` on the directory that holds a
SQLite database (a lock file beside it would be left behind; and a lock on the
database file itself would be released by closing it, with every POSIX lock SQLite
holds on that file in this process).
``alembic -c governance/storage/migrations/alembic.ini revision -m "..."`` adds a revision.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

HERE = Path(__file__).parent
_ADVISORY_LOCK_KEY = 0x67707570  # "gpup"


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["engine"] = engine
    return cfg


def head(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    directory = os.open(Path(database).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(directory, fcntl.LOCK_UN)
    finally:
        os.close(directory)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; cheap when it is already there."""
    if revision == "head" and current(engine) == head(engine):
        return
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)
