"""Several OS processes race reservations against a small quota on one database:
exactly the quota is admitted, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest

from governance import quotas, scopes
from governance.contract import SliceGrant
from governance.model import Department, Org, Pool, Queue, Quota, Sku
from governance.resources import Limits
from governance.storage import ledger, schema
from governance.storage.store import Store

pytestmark = pytest.mark.integration

PROCESSES = 6
ATTEMPTS_PER_PROCESS = 8
QUEUE_SLICES = 5  # nominal 5 + borrowing 2 = 7 in queue "train"
DEPT_SLICES = 9  # queue "serve" reserves 2 of the department's 9


def race_org() -> Org:
    pool = Pool(
        name="a100",
        vendor="nvidia",
        model="A100-80GB",
        backend="hami",
        gpus=64,
        memory_mib_per_gpu=81920,
    )
    sku = Sku(name="a100-20g", compute_pct=25, memory_mib=20480, pools=("a100",))
    return Org(
        skus={sku.name: sku},
        pools={pool.name: pool},
        departments={
            "ml": Department(
                name="ml",
                namespaces=("ml",),
                default_queue="train",
                quota=Quota(total=Limits.of(slices=DEPT_SLICES)),
            )
        },
        queues={
            ("ml", "train"): Queue(
                name="train",
                department="ml",
                pool="a100",
                nominal=Quota(total=Limits.of(slices=QUEUE_SLICES)),
                borrowing_limit=Limits.of(slices=2),
            ),
            ("ml", "serve"): Queue(
                name="serve", department="ml", pool="a100", nominal=Quota(total=Limits.of(slices=2))
            ),
        },
    )


def _worker(
    url: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    org = race_org()
    store = Store(url, migrate=False)
    sku, pool = org.skus["a100-20g"], org.pools["a100"]
    grant = SliceGrant(
        count=1, memory_mib=20480, compute_pct=25, backend="hami", pool="a100", sku="a100-20g"
    )
    demand = quotas.Demand(
        department="ml", queue="train", sku=sku.name, pool=pool.name, amount=sku.demand(1, pool)
    )
    barrier.wait(timeout=60)
    admitted = 0
    for _ in range(ATTEMPTS_PER_PROCESS):
        result = ledger.reserve(
            store,
            org,
            demand=demand,
            request_uid=str(uuid.uuid4()),
            namespace="ml",
            grants={"main": grant},
        )
        admitted += result.allowed
    store.close()
    out.put(admitted)


def test_processes_racing_admit_exactly_the_quota(store_url: str) -> None:
    Store(store_url).close()  # migrate once, before the race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(store_url, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ceiling = QUEUE_SLICES + 2
    assert sum(results) == ceiling
    store = Store(store_url, migrate=False)
    try:
        live = ledger.list_allocations(store, states=[ledger.State.RESERVED])
        assert len(live) == ceiling
        assert ledger.usage(store)[scopes.queue("ml", "train")].slices == ceiling
        assert ledger.usage(store)[scopes.department("ml")].slices == ceiling
        denials = ledger.recent_denials(store, limit=1000)
        assert len(denials) == PROCESSES * ATTEMPTS_PER_PROCESS - ceiling
        assert {d.reason for d in denials} == {"BorrowingLimitExceeded"}
        # the usage counters agree with the allocations they count
        with store.read() as conn:
            before = {r.scope: r.slices for r in conn.execute(schema.usage.select())}
        ledger.rebuild_usage(store)
        with store.read() as conn:
            after = {r.scope: r.slices for r in conn.execute(schema.usage.select())}
        assert {k: v for k, v in before.items() if v} == after
    finally:
        store.close()
