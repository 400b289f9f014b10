"""Shared fixtures: a fresh SQLite store and a PostgreSQL one (skipped without a server).

Set GPUPOOL_TEST_PG_URL (``scripts/dev-postgres.sh`` starts one and prints it) to run
the PostgreSQL tests; CI always sets it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - see below
import pytest

# hypothesis runs its entry-point plugins when first imported, and trio's (selenium pulls
# trio in) warns there. Importing it while conftest loads keeps that warning out of the
# run; otherwise a run whose tests never import hypothesis fails at its very end, when
# hypothesis' pytest plugin imports it for the summary with warnings as errors.

PG_URL_ENV = "GPUPOOL_TEST_PG_URL"


def pg_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gpupool.db'}"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the test server; dropped afterwards."""
    base = pg_url()
    if base is None:
        pytest.skip(f"no PostgreSQL server: set {PG_URL_ENV} (see scripts/dev-postgres.sh)")
    import sqlalchemy as sa

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"gpupool_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL_ENV} is not reachable: {exc.orig}")
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each kind: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gpupool.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url
