"""The first burst into a department: two webhook processes on one PostgreSQL, 60 pods at
once into a department that has no usage rows yet, on a pool that other departments
already use (issue 12.3: the rows were created and locked out of the sorted order, and
PostgreSQL's deadlock detector failed 3-10 pods of 60 with 503)."""

from __future__ import annotations

import contextlib
import ssl
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from governance import quotas, scopes
from governance.resources import ZERO, Resources
from governance.storage import ledger
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROUNDS = 3
PODS = 60
QUOTA = 10


def burst_org() -> dict[str, Any]:
    """The test organisation plus ROUNDS fresh departments on the shared a100 pool."""
    document = A.org_document()
    for k in range(ROUNDS):
        name = f"fresh{k}"
        document["departments"].append(
            {
                "name": name,
                "namespaces": [name],
                "default_queue": "main",
                "quota": {"slices": QUOTA},
                "queues": [{"name": "main", "pool": "a100", "default_sku": "small"}],
            }
        )
        document["role_bindings"].append(
            {"role": "member", "department": name, "subjects": ["group:fresh-team"]}
        )
    return document


def usage_of_live_allocations(store: Store) -> dict[str, Resources]:
    totals: dict[str, Resources] = {}
    for a in ledger.list_allocations(store, states=[ledger.State.RESERVED, ledger.State.BOUND]):
        demand = quotas.Demand(
            department=a.department, queue=a.queue, sku=a.sku, pool=a.pool, amount=a.amount
        )
        for key in demand.path.locked:
            totals[key] = totals.get(key, ZERO) + a.amount
    return totals


def test_sixty_pods_into_a_fresh_department_from_two_webhooks_admit_exactly_the_quota(
    pg_database: str, tmp_path: Path
) -> None:
    store = Store(pg_database)
    A.apply_org(store, burst_org())
    with (
        A.webhook_processes(pg_database, tmp_path) as (urls, cert),
        contextlib.ExitStack() as stack,
    ):
        ctx = ssl.create_default_context(cafile=str(cert))
        clients = [
            stack.enter_context(httpx.Client(verify=ctx, timeout=30, base_url=url)) for url in urls
        ]
        # the shared pool already has its usage row: another department uses it
        first = clients[0].post("/mutate", json=A.review(A.pod(A.container(limits=A.gpu(1)))))
        assert first.json()["response"]["allowed"], first.text
        for k in range(ROUNDS):
            namespace = f"fresh{k}"
            bodies = [
                A.review(
                    A.pod(A.container(limits=A.gpu(1)), namespace=namespace, name=f"b-{i}"),
                    groups=("fresh-team",),
                )
                for i in range(PODS)
            ]

            def post(i: int, bodies: list[dict[str, Any]] = bodies) -> tuple[int, dict[str, Any]]:
                r = clients[i % 2].post("/mutate", json=bodies[i])
                return r.status_code, r.json()["response"] if r.status_code == 200 else {}

            with ThreadPoolExecutor(max_workers=PODS) as pool:
                answers = list(pool.map(post, range(PODS)))
            assert [code for code, _ in answers] == [200] * PODS
            outcomes = Counter(
                "allowed" if a["allowed"] else a["status"]["reason"] for _, a in answers
            )
            assert outcomes["allowed"] == QUOTA, outcomes
            assert set(outcomes) <= {"allowed", "DepartmentQuotaExceeded"}, outcomes
            assert all(a["allowed"] or a["status"]["code"] < 500 for _, a in answers)
            used = ledger.usage(store)[scopes.department(namespace)]
            assert used.slices == QUOTA
    live = usage_of_live_allocations(store)
    assert {k: v for k, v in ledger.usage(store).items() if not v.is_zero()} == live
    assert len(ledger.list_allocations(store)) == 1 + ROUNDS * QUOTA
    store.close()
