"""Under CI a service that .ci/run set up and that does not answer fails the run;
locally its tests skip with the reason (tests/conftest.py).

Each case runs pytest in a process of its own on a small suite that uses this
project's conftest, with PostgreSQL refusing connections (a port nothing listens on).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest


def test_on_each_store(store_url):
    assert store_url


def test_with_a_database_of_its_own(pg_database):  # no postgres marker written
    assert pg_database


@pytest.mark.prometheus
@pytest.mark.skipif(True, reason="/usr/bin/prometheus is not installed")
def test_needs_prometheus():
    pass


@pytest.mark.browser
def test_needs_chromium():
    pytest.skip("needs Debian's chromium and chromium-driver")


@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no NVIDIA GPU here")


@pytest.mark.postgres
@pytest.mark.xfail(reason="a known failure is not a missing service")
def test_expected_to_fail():
    raise AssertionError
"""

INI = """
[pytest]
addopts = --strict-markers -rA -p no:cacheprovider -p no:dash
markers =
    postgres: needs PostgreSQL
    prometheus: needs prometheus
    browser: needs chromium
    gpu: needs a GPU
"""


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/gpupool"


def _run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    *,
    ci: str | None,
    pg_url: str | None,
) -> pytest.RunResult:
    pytester.makeconftest("from tests.conftest import *  # noqa: F403\n")
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for name, value in (("CI", ci), ("GPUPOOL_TEST_PG_URL", pg_url)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return pytester.runpytest_subprocess()


def test_under_ci_every_test_whose_service_does_not_answer_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, ci="true", pg_url=_refused_url())
    # setup-time skips (the fixtures, skipif) become errors, a skip in the test a failure
    result.assert_outcomes(passed=1, errors=3, failed=1, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [  # the short summary, in its order
            "SKIPPED*no NVIDIA GPU here",
            "ERROR *test_on_each_store?postgresql? - CI is set and this test needs postgres*"
            "not reachable*",
            "ERROR *test_with_a_database_of_its_own - CI is set and this test needs postgres*",
            "ERROR *test_needs_prometheus - CI is set and this test needs prometheus*"
            "prometheus is not installed",
            "FAILED *test_needs_chromium - CI is set and this test needs browser*chromium*",
        ]
    )


def test_under_ci_a_postgresql_url_that_is_not_set_fails_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, ci="true", pg_url=None)
    result.assert_outcomes(passed=1, errors=3, failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*needs postgres*no PostgreSQL server: set GPUPOOL_TEST_PG_URL*"])


@pytest.mark.parametrize("ci", [None, "false"], ids=["unset", "false"])
def test_outside_ci_they_skip_and_say_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = _run(pytester, monkeypatch, ci=ci, pg_url=_refused_url())
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*SKIPPED*PostgreSQL at GPUPOOL_TEST_PG_URL is not reachable*"])
