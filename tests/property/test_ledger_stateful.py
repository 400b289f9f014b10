"""A hypothesis state machine drives the ledger on SQLite through reserve, replay, dry
run, bind (also of expired entries: a late pod), release, and expire with a moving
clock, against a model of every entry's state.

Invariants after every step: the usage rows equal the model's usage and what
rebuild_usage recomputes from the live allocations; no limit is ever passed (except by
late pods, which are charged whatever the quota: a running pod is always counted);
every entry is in a legal state with timestamps to match, and the same state as the
model's. Every admission decision equals quotas.evaluate on the model's usage.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from governance import quotas, scopes
from governance.quotas import Demand
from governance.resources import RESOURCE_NAMES, ZERO, Limits, Resources
from governance.storage import ledger
from governance.storage.ledger import State
from governance.storage.store import Store
from tests.support.core import (
    GIB,
    make_department,
    make_org,
    make_pool,
    make_queue,
    make_sku,
    sku_demand,
)

pytestmark = pytest.mark.property

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TTL = timedelta(seconds=300)

# Small enough that every limit binds within a few steps; cv shares the pool.
ORG = make_org(
    pools=[make_pool("a100", gpus=3, memory_mib_per_gpu=80 * GIB)],
    skus=[
        make_sku("small", memory_mib=20 * GIB, compute_pct=25),
        make_sku("big", memory_mib=80 * GIB, compute_pct=100),
        make_sku("x2", memory_mib=40 * GIB, compute_pct=50, gpus_per_slice=2),
    ],
    departments=[
        make_department(
            "ml",
            quota=Limits.of(slices=6, memory_mib=200 * GIB),
            per_sku={"big": Limits.of(slices=1)},
        ),
        make_department("cv", default_queue="main"),
    ],
    queues=[
        # train reaches 2 + min(2, 6 - max(serve, 2) - eval): its borrowing limit or the
        # department binds, depending on the other queues.
        make_queue(
            "train",
            department="ml",
            nominal=Limits.of(slices=2),
            borrowing_limit=Limits.of(slices=2),
        ),
        make_queue(
            "serve",
            department="ml",
            nominal=Limits.of(slices=2, compute_pct=100),
            borrowing_limit=Limits.of(slices=0, compute_pct=50),
            per_pool={"a100": Limits.of(memory_mib=60 * GIB)},
        ),
        make_queue("eval", department="ml"),
        make_queue("main", department="cv"),
    ],
)
QUEUES = [("ml", "train"), ("ml", "train"), ("ml", "serve"), ("ml", "eval"), ("cv", "main")]


@dataclass
class Entry:
    """The model of one ledger entry."""

    id: str
    demand: Demand
    state: State
    expires_at: datetime
    late: bool = False
    """Bound after it had expired: charged again whatever the quota."""


def _limits_on_path(demand: Demand) -> list[tuple[str, Limits]]:
    """Every (scope, limits) pair that caps the scopes of ``demand``'s path."""
    d, q, s, p = demand.department, demand.queue, demand.sku, demand.pool
    dept = ORG.departments[d]
    queue = ORG.queues[(d, q)]
    caps = [
        (scopes.department(d), dept.quota.total),
        (scopes.queue(d, q), quotas.borrowing_ceiling(queue)),
        (scopes.pool(p), ORG.pools[p].capacity_limits),
    ]
    if s in dept.quota.per_sku:
        caps.append((scopes.department_sku(d, s), dept.quota.per_sku[s]))
    if p in dept.quota.per_pool:
        caps.append((scopes.department_pool(d, p), dept.quota.per_pool[p]))
    if s in queue.nominal.per_sku:
        caps.append((scopes.queue_sku(d, q, s), queue.nominal.per_sku[s]))
    if p in queue.nominal.per_pool:
        caps.append((scopes.queue_pool(d, q, p), queue.nominal.per_pool[p]))
    return caps


class LedgerMachine(RuleBasedStateMachine):
    allocations = Bundle("allocations")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-sm-"))
        self.store = Store(f"sqlite:///{self.dir / 'gpupool.db'}")
        self.now = T0
        self.entries: dict[str, Entry] = {}
        self.uid_of: dict[str, str] = {}
        self.serial = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model --------------------------------------------------------------------------

    def model_usage(self, *, include_late: bool = True) -> dict[str, Resources]:
        totals: dict[str, Resources] = {}
        for e in self.entries.values():
            if e.state.live and (include_late or not e.late):
                for key in e.demand.path.locked:
                    totals[key] = totals.get(key, ZERO) + e.demand.amount
        return {k: v for k, v in totals.items() if not v.is_zero()}

    def store_usage(self) -> dict[str, Resources]:
        return {k: v for k, v in ledger.usage(self.store).items() if not v.is_zero()}

    # -- rules -------------------------------------------------------------------------------

    @initialize(
        target=allocations,
        picks=st.lists(
            st.tuples(st.sampled_from(QUEUES), st.sampled_from(sorted(ORG.skus))),
            min_size=1,
            max_size=4,
        ),
    )
    def some_reservations(self, picks: list[tuple[tuple[str, str], str]]) -> object:
        """Start from a few reservations, so that short runs bind and release too."""
        ids = [self.reserve(queue, sku, 1) for queue, sku in picks]
        return multiple(*[i for i in ids if isinstance(i, str)])

    @rule(
        target=allocations,
        queue=st.sampled_from(QUEUES),
        sku=st.sampled_from(sorted(ORG.skus)),
        count=st.integers(1, 2),
    )
    def reserve(self, queue: tuple[str, str], sku: str, count: int) -> object:
        department, name = queue
        demand = sku_demand(ORG, department=department, queue=name, sku=sku, count=count)
        expected = quotas.evaluate(ORG, demand, self.model_usage())
        self.serial += 1
        uid = f"req-{self.serial}"
        result = ledger.reserve(
            self.store,
            ORG,
            demand=demand,
            request_uid=uid,
            namespace=department,
            grants={},
            ttl=TTL,
            now=self.now,
        )
        assert result.decision == expected
        assert not result.replayed
        event(f"reserve: {result.decision.reason.value}")
        if not result.allowed:
            assert result.allocation is None
            return multiple()
        alloc = result.allocation
        assert alloc is not None
        self.entries[alloc.id] = Entry(
            id=alloc.id, demand=demand, state=State.RESERVED, expires_at=self.now + TTL
        )
        self.uid_of[alloc.id] = uid
        return alloc.id

    @rule(allocation_id=allocations)
    def replay(self, allocation_id: str) -> None:
        """The same admission request again (the API server reinvokes webhooks), in
        whatever state its entry is now: nothing is charged."""
        before = self.store_usage()
        uid = self.uid_of[allocation_id]
        prior = ledger.by_request(self.store, uid)
        assert prior is not None and prior.id == allocation_id
        again = ledger.reserve(
            self.store,
            ORG,
            demand=self.entries[prior.id].demand,
            request_uid=uid,
            namespace=prior.namespace,
            grants={},
            ttl=TTL,
            now=self.now,
        )
        assert again.replayed and again.allowed
        assert again.allocation == prior
        assert self.store_usage() == before

    @rule(queue=st.sampled_from(QUEUES), sku=st.sampled_from(sorted(ORG.skus)))
    def dry_run(self, queue: tuple[str, str], sku: str) -> None:
        department, name = queue
        demand = sku_demand(ORG, department=department, queue=name, sku=sku, count=1)
        before = len(ledger.list_allocations(self.store))
        denials = len(ledger.recent_denials(self.store))
        result = ledger.reserve(
            self.store,
            ORG,
            demand=demand,
            request_uid=f"dry-{self.serial}",
            namespace=department,
            grants={},
            dry_run=True,
            now=self.now,
        )
        assert result.decision == quotas.evaluate(ORG, demand, self.model_usage())
        assert result.allocation is None
        assert len(ledger.list_allocations(self.store)) == before
        assert len(ledger.recent_denials(self.store)) == denials

    @rule(allocation_id=allocations)
    def bind(self, allocation_id: str) -> None:
        entry = self.entries[allocation_id]
        got = ledger.bind(self.store, allocation_id, pod_uid=f"pod-{allocation_id}", now=self.now)
        if entry.state is State.EXPIRED:
            entry.late = True
            event("bind: a late pod")
        if entry.state in (State.RESERVED, State.EXPIRED):
            entry.state = State.BOUND
            assert got.bound_at == self.now
        assert got.state is entry.state

    @rule(allocation_id=consumes(allocations))
    def release(self, allocation_id: str) -> None:
        entry = self.entries[allocation_id]
        got = ledger.release(self.store, allocation_id, now=self.now)
        if entry.state.live:
            entry.state = State.RELEASED
            assert got.ended_at == self.now
        assert got.state is entry.state

    @rule(allocation_id=allocations)
    def release_again(self, allocation_id: str) -> None:
        """Release without consuming: a second release is a no-op."""
        self.release(allocation_id)
        before = ledger.get(self.store, allocation_id)
        self.release(allocation_id)
        assert ledger.get(self.store, allocation_id) == before

    @rule(seconds=st.sampled_from([1, 30, 120, 299, 300, 301, 600]))
    def tick_and_expire(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        got = ledger.expire(self.store, now=self.now)
        due = sorted(
            e.id
            for e in self.entries.values()
            if e.state is State.RESERVED and e.expires_at < self.now
        )
        assert sorted(a.id for a in got) == due
        for allocation_id in due:
            self.entries[allocation_id].state = State.EXPIRED

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def usage_rows_equal_the_model_and_a_rebuild(self) -> None:
        rows = self.store_usage()
        assert rows == self.model_usage()
        live = sum(1 for e in self.entries.values() if e.state.live)
        assert ledger.rebuild_usage(self.store) == live
        assert self.store_usage() == rows

    @invariant()
    def no_limit_is_passed_except_by_late_pods(self) -> None:
        usage = self.model_usage(include_late=False)
        for entry in self.entries.values():
            for scope, limits in _limits_on_path(entry.demand):
                used = usage.get(scope, ZERO)
                for r in RESOURCE_NAMES:
                    assert limits.get(r).admits(used.get(r)), (scope, r, used, limits)

    @invariant()
    def every_entry_is_legal_and_as_modelled(self) -> None:
        stored = {a.id: a for a in ledger.list_allocations(self.store)}
        assert set(stored) == set(self.entries), "entries are never deleted"
        for allocation_id, a in stored.items():
            entry = self.entries[allocation_id]
            assert a.state is entry.state
            assert a.request_uid == self.uid_of[allocation_id]
            assert a.amount == entry.demand.amount
            assert a.expires_at == a.created_at + TTL
            if a.state is State.RESERVED:
                assert a.bound_at is None and a.ended_at is None and a.pod_uid == ""
            elif a.state is State.BOUND:
                assert a.bound_at is not None and a.ended_at is None
                assert a.bound_at >= a.created_at
                assert a.pod_uid == f"pod-{allocation_id}"
            else:
                assert a.state in (State.RELEASED, State.EXPIRED)
                assert a.ended_at is not None and a.ended_at >= a.created_at
                if a.state is State.EXPIRED:
                    assert a.bound_at is None and a.ended_at > a.expires_at


LedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerStateMachine = LedgerMachine.TestCase
