"""A PostgreSQL that stops answering (SIGSTOP: connections stay open, nothing replies)
must not take the webhook with it: /healthz keeps answering, /readyz says not ready,
non-GPU pods are admitted, GPU pods are denied with StoreUnavailable within the
request budget, and a reservation that the stopped server commits once it resumes,
after its request was already denied, is released. A server of the test's own is
stopped, never the shared one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from admission.admitter import Settings
from governance.contract import Reason
from governance.storage import ledger, schema
from governance.storage.store import Store, Timeouts
from tests.support import admission as A
from tests.support import ledger as L
from tests.support.pgserver import Server, throwaway_postgres

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BUDGET_S = 1.5
GPU_REQUESTS = 6


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with throwaway_postgres() as pg:
        yield pg


def _store(server: Server) -> Store:
    """A store in a new database of ``server``, as the webhook opens it, organised."""
    url = server.create_database(f"hang_{uuid.uuid4().hex[:8]}")
    store = Store(url, timeouts=Timeouts.within(BUDGET_S))
    A.apply_org(store)
    return store


def _live(store: Store) -> int:
    t = schema.allocations
    with store.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    t.c.state.in_([ledger.State.RESERVED.value, ledger.State.BOUND.value])
                )
            ).scalar_one()
        )


def _wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_a_stopped_postgres_never_blocks_the_loop_and_leaves_no_reservation(
    server: Server, tmp_path: Path
) -> None:
    store = _store(server)
    settings = Settings(request_budget_s=BUDGET_S)
    try:
        with A.serve(store, tmp_path, settings=settings, refresh_s=0.2) as hook:
            with hook.client() as client:
                first = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
                assert first["allowed"], first
            server.stop()
            try:
                _while_stopped(hook)
            finally:
                server.resume()
            with hook.client() as client:
                assert _wait_for(lambda: client.get("/readyz").status_code == 200, 20)
                after = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
                assert after["allowed"], after
            # the reservations committed once the server resumed, for requests denied at
            # their budget, are released: only the two admitted pods hold quota
            assert _wait_for(lambda: _live(store) == 2, 20), _live(store)
            L.assert_usage_matches_allocations(store)
    finally:
        _close_when_idle(store)


def _while_stopped(hook: A.Served) -> None:
    gpu_bodies = [A.review(A.pod(A.container(limits=A.gpu(1)))) for _ in range(GPU_REQUESTS)]

    def ask(body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        with hook.client(timeout=BUDGET_S + 5) as client:
            return time.monotonic() - started, hook.mutate(body, client)

    with ThreadPoolExecutor(GPU_REQUESTS) as pool:
        answers = pool.map(ask, gpu_bodies)
        # meanwhile the loop serves everyone else at once, the refresh of the
        # organisation (every 0.2 s) included
        with hook.client(timeout=1.0) as client:
            for _ in range(10):
                assert client.get("/healthz").status_code == 200
                plain = hook.mutate(A.review(A.pod(A.container())), client)
                assert plain["allowed"] and "patch" not in plain
                time.sleep(0.1)
        with hook.client(timeout=5.0) as client:
            started = time.monotonic()
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert time.monotonic() - started < 4.0
        for elapsed, answer in answers:
            assert not answer["allowed"]
            assert answer["status"]["reason"] == Reason.STORE_UNAVAILABLE.value
            assert "within the request budget" in answer["status"]["message"]
            assert elapsed < BUDGET_S + 3.0, elapsed


def test_the_webhook_answers_within_its_budget_when_the_org_was_never_loaded(
    server: Server, tmp_path: Path
) -> None:
    """Started while the store hangs: nothing to serve from, every GPU pod denied in time."""
    store = _store(server)
    try:
        server.stop()
        try:
            with (
                A.serve(
                    store, tmp_path, settings=Settings(request_budget_s=BUDGET_S), refresh_s=0.2
                ) as hook,
                hook.client(timeout=BUDGET_S + 5) as client,
            ):
                answer = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
                assert answer["status"]["reason"] == Reason.STORE_UNAVAILABLE.value
                assert client.get("/healthz").status_code == 200
        finally:
            server.resume()
    finally:
        _close_when_idle(store)


def _close_when_idle(store: Store) -> None:
    """Close once the threads that waited on the stopped server have given their
    connections back (closing first would leave those to the garbage collector)."""
    _wait_for(lambda: store.engine.pool.checkedout() == 0, 20)  # type: ignore[attr-defined]
    store.close()
