"""Ledger benchmark: reserve and release against a large organisation.

Builds 1,000 departments, 5,000 queues and 30,000 live allocations in a fresh store,
then times ``ledger.reserve`` and ``ledger.release`` one at a time, and, in the same
run on the same database, the floor: a bare write transaction through the same Store
that updates one usage row. Runs on SQLite, and on
PostgreSQL when GPUPOOL_TEST_PG_URL (or --pg URL) points at a server.

Prints a table, then one JSON object as the last line.

Budgets (from the issue): one reserve p99 <= 2 ms on SQLite; reserves/s >= 0.3 x the
floor's transactions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from bench import stats
from governance import quotas, scopes
from governance.contract import SliceGrant
from governance.model import Department, Org, Pool, Queue, Quota, Sku
from governance.resources import Limits
from governance.storage import ledger, schema
from governance.storage.store import Store, utcnow

DEPARTMENTS = 1000
QUEUES_PER_DEPARTMENT = 5
LIVE_ALLOCATIONS = 30_000


def build_org() -> Org:
    pools = {
        "a100": Pool(
            name="a100",
            vendor="nvidia",
            model="A100-80GB",
            backend="hami",
            gpus=12000,
            memory_mib_per_gpu=81920,
            memory_oversubscription=1.5,
            compute_oversubscription=2.0,
        ),
        "h100": Pool(
            name="h100",
            vendor="nvidia",
            model="H100-80GB",
            backend="nvidia-mig",
            gpus=4000,
            memory_mib_per_gpu=81920,
        ),
    }
    skus = {
        "a100-10g": Sku(name="a100-10g", memory_mib=10240, compute_pct=12, pools=("a100",)),
        "a100-20g": Sku(name="a100-20g", memory_mib=20480, compute_pct=25, pools=("a100",)),
        "a100-40g": Sku(name="a100-40g", memory_mib=40960, compute_pct=50, pools=("a100",)),
        "h100-1g": Sku(name="h100-1g", memory_mib=10240, compute_pct=14, pools=("h100",)),
    }
    departments: dict[str, Department] = {}
    queues: dict[tuple[str, str], Queue] = {}
    for d in range(DEPARTMENTS):
        name = f"dept-{d:04d}"
        departments[name] = Department(
            name=name,
            namespaces=(f"{name}-*",),
            default_queue="q0",
            quota=Quota(
                total=Limits.of(slices=400, memory_mib=400 * 40960),
                per_pool={"h100": Limits.of(slices=100)},
            ),
        )
        for q in range(QUEUES_PER_DEPARTMENT):
            queues[(name, f"q{q}")] = Queue(
                name=f"q{q}",
                department=name,
                pool="a100" if q < 4 else "h100",
                nominal=Quota(
                    total=Limits.of(slices=60, memory_mib=60 * 40960),
                    per_sku={"a100-40g": Limits.of(slices=40)},
                ),
                borrowing_limit=Limits.of(slices=20, memory_mib=20 * 40960),
                default_sku="a100-20g" if q < 4 else "h100-1g",
            )
    return Org(skus=skus, pools=pools, departments=departments, queues=queues)


def demand_for(org: Org, dept: str, queue: str) -> tuple[quotas.Demand, SliceGrant]:
    q = org.queues[(dept, queue)]
    sku = org.skus[q.default_sku or ""]
    pool = org.pools[q.pool]
    grant = SliceGrant(
        count=1,
        memory_mib=sku.memory_mib_on(pool),
        compute_pct=sku.compute_pct,
        backend=pool.backend,
        pool=pool.name,
        sku=sku.name,
    )
    return (
        quotas.Demand(
            department=dept, queue=queue, sku=sku.name, pool=pool.name, amount=sku.demand(1, pool)
        ),
        grant,
    )


def populate(store: Store, org: Org, rng: random.Random) -> None:
    now = utcnow()
    rows = []
    names = list(org.departments)
    for i in range(LIVE_ALLOCATIONS):
        dept = names[i % DEPARTMENTS]
        queue = f"q{rng.randrange(QUEUES_PER_DEPARTMENT)}"
        demand, grant = demand_for(org, dept, queue)
        rows.append(
            {
                "id": f"alloc-{uuid.uuid4().hex}",
                "request_uid": str(uuid.uuid4()),
                "state": "bound",
                "namespace": f"{dept}-ns",
                "pod_name": f"pod-{i}",
                "pod_uid": str(uuid.uuid4()),
                "department": dept,
                "queue": queue,
                "sku": demand.sku,
                "pool": demand.pool,
                "slices": 1,
                "memory_mib": demand.amount.memory_mib,
                "compute_pct": demand.amount.compute_pct,
                "borrowed_slices": 0,
                "borrowed_memory_mib": 0,
                "borrowed_compute_pct": 0,
                "subject": "system:serviceaccount:x:y",
                "grants": {
                    "main": {
                        "count": 1,
                        "memory_mib": grant.memory_mib,
                        "compute_pct": grant.compute_pct,
                        "backend": grant.backend,
                        "pool": grant.pool,
                        "sku": grant.sku,
                        "gpus_per_slice": 1,
                    }
                },
                "created_at": now,
                "expires_at": now + timedelta(minutes=10),
                "bound_at": now,
                "ended_at": None,
            }
        )
    with store.write() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(schema.allocations.insert(), rows[start : start + 5000])
    ledger.rebuild_usage(store)


def percentile(values: list[float], pct: float) -> float:
    return stats.percentile(values, pct / 100)


def time_calls(n: int, fn: Callable[[int], object]) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def run(
    label: str, store: Store, org: Org, iterations: int, rng: random.Random
) -> dict[str, float]:
    names = list(org.departments)
    plan = [
        demand_for(org, rng.choice(names), f"q{rng.randrange(QUEUES_PER_DEPARTMENT)}")
        for _ in range(iterations)
    ]
    reserved: list[str] = []

    def do_reserve(i: int) -> None:
        demand, grant = plan[i]
        r = ledger.reserve(
            store,
            org,
            demand=demand,
            request_uid=str(uuid.uuid4()),
            namespace=f"{demand.department}-ns",
            grants={"main": grant},
        )
        assert r.allocation is not None, r.decision
        reserved.append(r.allocation.id)

    def do_release(i: int) -> None:
        ledger.release(store, reserved[i])

    scope = scopes.department(names[0]).key

    def do_floor(_: int) -> None:
        with store.write() as conn:
            conn.execute(
                schema.usage.update()
                .where(schema.usage.c.scope == scope)
                .values(slices=schema.usage.c.slices + 0)
            )

    # warm up the pool, caches and statement compilation
    time_calls(min(50, iterations), do_floor)
    floor = time_calls(iterations, do_floor)
    reserve = time_calls(iterations, do_reserve)
    release = time_calls(iterations, do_release)
    floor2 = time_calls(iterations, do_floor)  # the floor again: the machine is noisy
    floor_all = floor + floor2
    cycle = [a + b for a, b in zip(reserve, release, strict=True)]
    reserves_per_s = 1000 / statistics.fmean(reserve)
    floor_per_s = 1000 / statistics.fmean(floor_all)
    return {
        f"{label}_reserve_p50_ms": percentile(reserve, 50),
        f"{label}_reserve_p99_ms": percentile(reserve, 99),
        f"{label}_release_p99_ms": percentile(release, 99),
        f"{label}_cycle_p50_ms": percentile(cycle, 50),
        f"{label}_cycle_p99_ms": percentile(cycle, 99),
        f"{label}_reserves_per_s": reserves_per_s,
        f"{label}_floor_p99_ms": percentile(floor_all, 99),
        f"{label}_floor_per_s": floor_per_s,
        f"{label}_floor_ratio": reserves_per_s / floor_per_s,
    }


def wal_sustained(
    path: Path, org: Org, seconds: float, *, truncate_bytes: int | None, rng: random.Random
) -> dict[str, float]:
    """SQLite's WAL after ``seconds`` of sustained admissions on a copy of the populated
    database: groups of 16 reservations (``ledger.reserve_many``, as the webhook's group
    commit writes them), each then released one by one (as the reconciler does), while
    another thread reads about every millisecond. ``truncate_bytes`` None is the baseline, PASSIVE
    checkpoints only (the store before TRUNCATE checkpoints)."""
    import threading

    store = Store(f"sqlite:///{path}", migrate=False, wal_truncate_bytes=truncate_bytes)
    names = list(org.departments)
    stop = threading.Event()
    probe = ledger.list_allocations(store)[0].id

    def reader() -> None:  # a read every millisecond or so, each its own snapshot
        while not stop.wait(0.001):
            ledger.get(store, probe)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples: list[float] = []
    largest = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            group = []
            for _ in range(16):
                demand, grant = demand_for(
                    org, rng.choice(names), f"q{rng.randrange(QUEUES_PER_DEPARTMENT)}"
                )
                group.append(
                    ledger.ReserveRequest(
                        demand=demand,
                        request_uid=str(uuid.uuid4()),
                        namespace=f"{demand.department}-ns",
                        grants={"main": grant},
                    )
                )
            t0 = time.perf_counter()
            reserved = ledger.reserve_many(store, org, group)
            samples.append((time.perf_counter() - t0) * 1000)
            for r in reserved:
                if r.allocation is not None:
                    t0 = time.perf_counter()
                    ledger.release(store, r.allocation.id)
                    samples.append((time.perf_counter() - t0) * 1000)
            largest = max(largest, store.wal_bytes())
    finally:
        stop.set()
        thread.join(10)
    wal_end = store.wal_bytes()
    store.close()
    return {
        "wal_mib_end": wal_end / 2**20,
        "wal_mib_max": largest / 2**20,
        "transactions_per_s": len(samples) / seconds,
        "transaction_p99_ms": percentile(samples, 99),
        "transaction_max_ms": max(samples),
    }


def wal_section(db: Path, org: Org, seconds: float, rng: random.Random) -> dict[str, float]:
    """:func:`wal_sustained` with the store's TRUNCATE checkpoints and, as the baseline
    in the same run, with PASSIVE ones only, each on its own copy of ``db``. A quick run
    is too short to reach the default truncation size: it uses 16 MiB."""
    import shutil

    from governance.storage.store import DEFAULT_WAL_TRUNCATE_BYTES

    limit = 16 * 2**20 if seconds < 10 else DEFAULT_WAL_TRUNCATE_BYTES
    out: dict[str, float] = {"wal_truncate_mib": limit / 2**20, "wal_run_s": seconds}
    for label, truncate in (("wal", limit), ("wal_baseline_passive", None)):
        copy = db.with_name(f"{label}.db")
        shutil.copyfile(db, copy)
        for key, value in wal_sustained(
            copy, org, seconds, truncate_bytes=truncate, rng=rng
        ).items():
            out[f"{label}_{key}"] = value
    out["wal_end_ratio_to_baseline"] = (
        out["wal_wal_mib_end"] / out["wal_baseline_passive_wal_mib_end"]
    )
    out["wal_p99_ratio_to_baseline"] = (
        out["wal_transaction_p99_ms"] / out["wal_baseline_passive_transaction_p99_ms"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (< 30 s)")
    parser.add_argument(
        "--pg",
        default=os.environ.get("GPUPOOL_TEST_PG_URL"),
        help="PostgreSQL URL (default: GPUPOOL_TEST_PG_URL)",
    )
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args()
    iterations = args.iterations or (400 if args.quick else 3000)
    rng = random.Random(7)
    org = build_org()
    results: dict[str, float] = {}
    setup: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("sqlite", f"sqlite:///{tmp}/bench.db")]
        if args.pg:
            targets.append(("postgresql", _fresh_pg(args.pg)))
        for label, url in targets:
            store = Store(url)
            t0 = time.perf_counter()
            populate(store, org, rng)
            setup[f"{label}_populate_s"] = time.perf_counter() - t0
            results.update(run(label, store, org, iterations, rng))
            store.close()
        wal = wal_section(Path(tmp) / "bench.db", org, 4.0 if args.quick else 30.0, rng)
    print(
        f"ledger benchmark: {DEPARTMENTS} departments, {DEPARTMENTS * QUEUES_PER_DEPARTMENT} "
        f"queues, {LIVE_ALLOCATIONS} live allocations, "
        f"{iterations} reserve+release per database"
    )
    print(
        f"{'database':<11} {'reserve p50':>12} {'reserve p99':>12} {'cycle p99':>10} "
        f"{'reserves/s':>11} {'floor/s':>9} {'ratio':>6}"
    )
    for label, _ in targets:
        r = {k.removeprefix(label + "_"): v for k, v in results.items() if k.startswith(label)}
        print(
            f"{label:<11} {r['reserve_p50_ms']:>10.3f}ms {r['reserve_p99_ms']:>10.3f}ms "
            f"{r['cycle_p99_ms']:>8.3f}ms {r['reserves_per_s']:>11.0f} "
            f"{r['floor_per_s']:>9.0f} {r['floor_ratio']:>6.2f}"
        )
    print(
        f"\nSQLite WAL after {wal['wal_run_s']:.0f} s of sustained admissions (groups of 16 "
        "reserved, then released) beside a reader:"
    )
    print(f"{'checkpoints':<26} {'WAL end':>9} {'WAL max':>9} {'tx/s':>7} {'tx p99':>9}")
    for label, name in (
        ("wal", f"TRUNCATE past {wal['wal_truncate_mib']:.0f} MiB"),
        ("wal_baseline_passive", "baseline: PASSIVE only"),
    ):
        r = {k.removeprefix(label + "_"): v for k, v in wal.items() if k.startswith(label)}
        print(
            f"{name:<26} {r['wal_mib_end']:>7.1f}Mi {r['wal_mib_max']:>7.1f}Mi "
            f"{r['transactions_per_s']:>7.0f} {r['transaction_p99_ms']:>7.2f}ms"
        )
    out = {k: round(v, 4) for k, v in {**results, **setup, **wal}.items()}
    out["iterations"] = iterations
    # how many calls each percentile rests on (the floor's: its two runs together)
    out["samples"] = {
        k: 2 * iterations if "_floor_" in k else iterations
        for k in results
        if re.search(r"_p\d+_ms$", k)
    }
    out["targets"] = {"sqlite_reserve_p99_ms": 2.0, "sqlite_floor_ratio": 0.3}
    print(json.dumps(out, sort_keys=True))


def _fresh_pg(base: str) -> str:
    """A new database on the server for this run (dropped on the next run's cleanup)."""
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = "gpupool_bench_ledger"
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    main()
