"""Shared fixtures: a fresh SQLite store and a PostgreSQL one (skipped without a server),
and the rule that CI runs every test its services allow.

Set GPUPOOL_TEST_PG_URL (``scripts/dev-postgres.sh`` starts one and prints it) to run
the PostgreSQL tests; CI always sets it.

Locally, a test that needs a service which is absent (PostgreSQL, the prometheus and
promtool binaries, Chromium and chromedriver) skips and says why. Under CI (``CI`` set
to true, as ``.ci/run``, GitHub Actions and GitLab set it) those services were set up
on purpose, and a test that skips for want of one would hide a broken setup behind a
green run (with PostgreSQL down, 71 tests skipped and pytest exited 0): there, the skip
of a test that needs one of them is reported as a failure, with the skip's reason. A
test needs a service when it carries its marker (``postgres``, ``prometheus``,
``browser``); a test that uses the ``pg_database`` fixture is given ``postgres``. Other
skips (the ``gpu`` marker: CI has no GPU) stay skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path

import hypothesis  # noqa: F401 - see below
import pytest

# hypothesis runs its entry-point plugins when first imported, and trio's (selenium pulls
# trio in) warns there. Importing it while conftest loads keeps that warning out of the
# run; otherwise a run whose tests never import hypothesis fails at its very end, when
# hypothesis' pytest plugin imports it for the summary with warnings as errors.

pytest_plugins = ["pytester"]  # tests/e2e/test_ci_gate.py runs pytest on small suites

PG_URL_ENV = "GPUPOOL_TEST_PG_URL"
CI_SERVICE_MARKERS = ("postgres", "prometheus", "browser")
"""Markers of the services .ci/run sets up: under CI their tests must not skip."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_report_header(config: pytest.Config) -> str:
    if in_ci():
        return (
            "CI=true: a test marked " + ", ".join(CI_SERVICE_MARKERS) + " that skips fails "
            "(the service it needs was set up and does not answer)"
        )
    return "not CI: tests whose service is absent skip with the reason"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_database" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "postgres"
        ):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return report
    needs = [m for m in CI_SERVICE_MARKERS if item.get_closest_marker(m)]
    if not needs:
        return report
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (
        f"CI is set and this test needs {' and '.join(needs)}, which the CI setup "
        f"(.ci/run) provides, but it skipped: {reason}"
    )
    return report


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

    from tests.support.databases import fresh_database

    with ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_database(base))
        except sa.exc.OperationalError as exc:
            pytest.skip(f"PostgreSQL at {PG_URL_ENV} is not reachable: {exc.orig}")
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL of each kind: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gpupool.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url
