"""Quota and borrowing arithmetic: a pure function from (org, demand, usage) to a decision.

Scopes. Usage is kept per *scope*, a string key (see :func:`scope_keys`): the
department, the department per SKU and per pool, the queue, the queue per SKU and per
pool, and the pool as a whole. The ledger locks and updates exactly these rows.

Borrowing (Kueue's semantics, adapted to admission without preemption). A queue has a
nominal quota and may go above it by borrowing its department's unused quota, up to
its borrowing limit. Because gpupool cannot preempt, a borrowing queue never takes the
part of the department's quota that other queues' nominal quotas reserve: for each
resource, a request that takes queue *q* above its nominal quota is admitted only if

    sum over the department's other queues i of max(used_i, nominal_i)
      + (used_q + requested)  <=  department limit

so every queue can always reach its nominal quota (provided the department quota
covers the sum of the nominal quotas). Requests within the nominal quota are checked
against the department limit alone. Per-SKU and per-pool limits are hard caps: nothing
is borrowed past them. Pool capacity is the pool's *sellable* capacity (physical x
over-subscription), shared by every department.

Worked example (memory, GiB): department ``ml`` has 100; queue ``train`` nominal 60
with a borrowing limit of 30, queue ``serve`` nominal 30 (10 are unreserved). With
``serve`` using 10, ``train`` may reach 60 + min(30, 100 - 60 - max(10, 30)) = 70.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from governance.contract import Reason
from governance.model import Org, Queue
from governance.resources import (
    RESOURCE_NAMES,
    RESOURCE_UNITS,
    ZERO,
    Limits,
    ResourceName,
    Resources,
)


@dataclass(frozen=True, kw_only=True)
class Demand:
    """What one admission asks of the quota: resolved department, queue, SKU, pool."""

    department: str
    queue: str
    sku: str
    pool: str
    amount: Resources


def department_scope(department: str) -> str:
    return f"department/{department}"


def queue_scope(department: str, queue: str) -> str:
    return f"queue/{department}/{queue}"


def pool_scope(pool: str) -> str:
    return f"pool/{pool}"


def scope_keys(demand: Demand) -> list[str]:
    """The usage rows that an allocation of ``demand`` counts against, sorted.

    Sorted so that every transaction locks rows in one order (no deadlocks); the
    department row sorts first and serialises every change inside the department.
    """
    d, q, s, p = demand.department, demand.queue, demand.sku, demand.pool
    return sorted(
        [
            department_scope(d),
            f"department/{d}/sku/{s}",
            f"department/{d}/pool/{p}",
            queue_scope(d, q),
            f"queue/{d}/{q}/sku/{s}",
            f"queue/{d}/{q}/pool/{p}",
            pool_scope(p),
        ]
    )


@dataclass(frozen=True, kw_only=True)
class Violation:
    """Which limit a request would break, with the figures a person needs."""

    reason: Reason
    scope: str
    """Human name of the limit's owner, e.g. ``queue ml/train`` or ``pool a100``."""
    limit_name: str
    """e.g. ``nominal quota``, ``borrowing limit``, ``quota for SKU a100-1g``."""
    resource: ResourceName
    in_use: int
    requested: int
    limit: int
    advice: str

    def message(self) -> str:
        unit = RESOURCE_UNITS[self.resource]
        over = self.in_use + self.requested - self.limit
        return (
            f"{self.scope} {self.limit_name} for {self.resource} is {self.limit} {unit}: "
            f"{self.in_use} in use + {self.requested} requested would exceed it by "
            f"{over}. {self.advice}"
        )


@dataclass(frozen=True, kw_only=True)
class QuotaDecision:
    allowed: bool
    reason: Reason
    violation: Violation | None = None
    borrowed: Resources = ZERO
    """How far above its nominal quota the queue goes with this request."""


ADVICE_WAIT = (
    "Ask your department admin to raise the limit, request fewer or smaller slices, "
    "or wait for running GPU pods in this scope to finish."
)


def _check(
    reason: Reason,
    scope: str,
    limit_name: str,
    limits: Limits,
    used: Resources,
    amount: Resources,
    advice: str = ADVICE_WAIT,
) -> Violation | None:
    for name in RESOURCE_NAMES:
        limit = limits.get(name)
        if limit.value is None or amount.get(name) == 0:
            continue
        if not limit.admits(used.get(name) + amount.get(name)):
            return Violation(
                reason=reason,
                scope=scope,
                limit_name=limit_name,
                resource=name,
                in_use=used.get(name),
                requested=amount.get(name),
                limit=limit.value,
                advice=advice,
            )
    return None


def _reserved_by_others(
    org: Org, queue: Queue, usage: Mapping[str, Resources], name: ResourceName
) -> int | None:
    """Sum over the department's other queues of max(used, nominal); None if unbounded."""
    total = 0
    for other in org.queues_of(queue.department):
        if other.name == queue.name:
            continue
        used = usage.get(queue_scope(other.department, other.name), ZERO).get(name)
        nominal = other.nominal.total.get(name)
        total += used if nominal.value is None else max(used, nominal.value)
    return total


def borrows(org: Org, demand: Demand, usage: Mapping[str, Resources]) -> bool:
    """Whether ``demand`` takes its queue past its nominal quota, given the queue's
    usage: only then does :func:`evaluate` read the department's other queues (to
    know what they hold back), so only then must ``usage`` hold their rows."""
    queue = org.queues[(demand.department, demand.queue)]
    queue_used = usage.get(queue_scope(demand.department, demand.queue), ZERO)
    for name in RESOURCE_NAMES:
        nominal = queue.nominal.total.get(name).value
        want = demand.amount.get(name)
        if nominal is not None and want and queue_used.get(name) + want > nominal:
            return True
    return False


def evaluate(org: Org, demand: Demand, usage: Mapping[str, Resources]) -> QuotaDecision:
    """Decide whether ``demand`` fits, given the usage of every scope it touches.

    ``usage`` must hold the rows of :func:`scope_keys` and, when the demand
    :func:`borrows`, the rows of all the department's queues; a missing row means
    nothing in use.
    """
    dept = org.departments[demand.department]
    queue = org.queues[(demand.department, demand.queue)]
    pool = org.pools[demand.pool]
    amount = demand.amount
    d, q, s, p = demand.department, demand.queue, demand.sku, demand.pool

    def used(key: str) -> Resources:
        return usage.get(key, ZERO)

    queue_used = used(queue_scope(d, q))
    dept_used = used(department_scope(d))
    checks: list[Violation | None] = []

    # Queue: hard caps per SKU and per pool.
    if s in queue.nominal.per_sku:
        checks.append(
            _check(
                Reason.SKU_QUOTA_EXCEEDED,
                f"queue {d}/{q}",
                f"quota for SKU {s}",
                queue.nominal.per_sku[s],
                used(f"queue/{d}/{q}/sku/{s}"),
                amount,
            )
        )
    if p in queue.nominal.per_pool:
        checks.append(
            _check(
                Reason.POOL_QUOTA_EXCEEDED,
                f"queue {d}/{q}",
                f"quota on pool {p}",
                queue.nominal.per_pool[p],
                used(f"queue/{d}/{q}/pool/{p}"),
                amount,
            )
        )
    # Queue: nominal quota, then borrowing.
    borrowed: dict[str, int] = {}
    for name in RESOURCE_NAMES:
        nominal = queue.nominal.total.get(name)
        want = amount.get(name)
        if nominal.value is None or want == 0:
            continue
        new = queue_used.get(name) + want
        if new <= nominal.value:
            continue
        ceiling = queue.borrowing_limit.get(name) + nominal
        if not ceiling.admits(new):
            limit_name = (
                "nominal quota"
                if queue.borrowing_limit.get(name).value == 0
                else (
                    f"nominal quota + borrowing limit ({nominal} + "
                    f"{queue.borrowing_limit.get(name)})"
                )
            )
            assert ceiling.value is not None
            checks.append(
                Violation(
                    reason=Reason.QUEUE_QUOTA_EXCEEDED
                    if queue.borrowing_limit.get(name).value == 0
                    else Reason.BORROWING_LIMIT_EXCEEDED,
                    scope=f"queue {d}/{q}",
                    limit_name=limit_name,
                    resource=name,
                    in_use=queue_used.get(name),
                    requested=want,
                    limit=ceiling.value,
                    advice=ADVICE_WAIT,
                )
            )
            continue
        dept_limit = dept.quota.total.get(name)
        if dept_limit.value is not None:
            others = _reserved_by_others(org, queue, usage, name)
            assert others is not None
            available = dept_limit.value - others
            if new > available:
                checks.append(
                    Violation(
                        reason=Reason.DEPARTMENT_QUOTA_EXCEEDED,
                        scope=f"department {d}",
                        limit_name=(
                            f"quota left for queue {q} to borrow (department limit "
                            f"{dept_limit.value} - {others} reserved or used by its other "
                            "queues)"
                        ),
                        resource=name,
                        in_use=queue_used.get(name),
                        requested=want,
                        limit=available,
                        advice="Other queues' nominal quotas are never lent out; " + ADVICE_WAIT,
                    )
                )
                continue
        borrowed[name] = new - max(nominal.value, queue_used.get(name))
    # Department: caps per SKU and per pool, then the total.
    if s in dept.quota.per_sku:
        checks.append(
            _check(
                Reason.SKU_QUOTA_EXCEEDED,
                f"department {d}",
                f"quota for SKU {s}",
                dept.quota.per_sku[s],
                used(f"department/{d}/sku/{s}"),
                amount,
            )
        )
    if p in dept.quota.per_pool:
        checks.append(
            _check(
                Reason.POOL_QUOTA_EXCEEDED,
                f"department {d}",
                f"cap on pool {p}",
                dept.quota.per_pool[p],
                used(f"department/{d}/pool/{p}"),
                amount,
            )
        )
    checks.append(
        _check(
            Reason.DEPARTMENT_QUOTA_EXCEEDED,
            f"department {d}",
            "quota",
            dept.quota.total,
            dept_used,
            amount,
        )
    )
    checks.append(
        _check(
            Reason.POOL_CAPACITY_EXCEEDED,
            f"pool {p}",
            "sellable capacity (physical x over-subscription)",
            pool.capacity_limits,
            used(pool_scope(p)),
            amount,
            advice="The pool is full for every department: try another pool's queue, "
            "or ask the platform admins to add GPUs.",
        )
    )
    for violation in checks:
        if violation is not None:
            return QuotaDecision(allowed=False, reason=violation.reason, violation=violation)
    return QuotaDecision(
        allowed=True,
        reason=Reason.ADMITTED,
        borrowed=Resources(**{k: max(0, v) for k, v in borrowed.items()}),
    )


def effective_demand(init: Iterable[tuple[Resources, bool]], app: Iterable[Resources]) -> Resources:
    """The pod's demand as Kubernetes computes it.

    ``init`` lists the init containers in order with whether each is restartable (a
    sidecar). A regular init container runs beside the sidecars started before it; the
    app containers run beside every sidecar. The pod's demand is the larger of the
    peak during init and the steady state, per resource.
    """
    sidecars = ZERO
    peak = ZERO
    for amount, restartable in init:
        if restartable:
            sidecars = sidecars + amount
            peak = peak.max(sidecars)
        else:
            peak = peak.max(amount + sidecars)
    steady = sidecars
    for amount in app:
        steady = steady + amount
    return peak.max(steady)


def usage_limits(org: Org, department: str, queue: str | None) -> Limits:
    """The limits shown for a department (``queue=None``) or one of its queues."""
    if queue is None:
        return org.departments[department].quota.total
    return org.queues[(department, queue)].nominal.total


def borrowing_ceiling(queue: Queue) -> Limits:
    """Nominal + borrowing limit per resource (what the queue can reach at most)."""
    return Limits(
        **{n: queue.nominal.total.get(n) + queue.borrowing_limit.get(n) for n in RESOURCE_NAMES}
    )


__all__ = [
    "Demand",
    "QuotaDecision",
    "Violation",
    "borrowing_ceiling",
    "department_scope",
    "effective_demand",
    "evaluate",
    "pool_scope",
    "queue_scope",
    "scope_keys",
    "usage_limits",
]
