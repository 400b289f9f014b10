"""Quota and borrowing arithmetic: a pure function from (org, demand, usage) to a decision.

Scopes. Usage is kept per *scope* (:mod:`governance.scopes`): the department, the
department per SKU and per pool, the queue, the queue per SKU and per pool, and the
pool as a whole (a demand's :attr:`Demand.path`). The ledger locks and updates exactly
these rows.

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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from governance import scopes
from governance.contract import Reason
from governance.model import Department, Org, Queue
from governance.resources import (
    RESOURCE_NAMES,
    RESOURCE_UNITS,
    ZERO,
    Limits,
    ResourceName,
    Resources,
    fits,
)
from governance.scopes import Scope

Usage = Mapping[Scope, Resources]
"""Usage by scope; a scope that is missing has nothing in use."""


@dataclass(frozen=True, kw_only=True)
class Demand:
    """What one admission asks of the quota: resolved department, queue, SKU, pool."""

    department: str
    queue: str
    sku: str
    pool: str
    amount: Resources

    @property
    def path(self) -> scopes.Path:
        """The scopes an allocation of this demand counts against."""
        return scopes.path(self.department, self.queue, self.sku, self.pool)


@dataclass(frozen=True, kw_only=True)
class Violation:
    """Which limit a request would break, with the figures a person needs."""

    reason: Reason
    owner: str
    """Who the limit is of, in words: ``queue ml/train``, ``pool a100``."""
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
            f"{self.owner} {self.limit_name} for {self.resource} is {self.limit} {unit}: "
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
    owner: str,
    limit_name: str,
    limits: Limits,
    used: Resources,
    amount: Resources,
    advice: str = ADVICE_WAIT,
) -> Violation | None:
    if fits(limits, used, amount):  # every admission: no message
        return None
    for name in RESOURCE_NAMES:
        limit = limits.get(name)
        if limit.value is None or amount.get(name) == 0:
            continue
        if not limit.admits(used.get(name) + amount.get(name)):
            return Violation(
                reason=reason,
                owner=owner,
                limit_name=limit_name,
                resource=name,
                in_use=used.get(name),
                requested=amount.get(name),
                limit=limit.value,
                advice=advice,
            )
    return None


def _reserved_by_others(org: Org, queue: Queue, usage: Usage, name: ResourceName) -> int | None:
    """Sum over the department's other queues of max(used, nominal); None if unbounded."""
    total = 0
    for other in org.queues_of(queue.department):
        if other.name == queue.name:
            continue
        used = usage.get(scopes.queue(other.department, other.name), ZERO).get(name)
        nominal = other.nominal.total.get(name)
        total += used if nominal.value is None else max(used, nominal.value)
    return total


def borrows(org: Org, demand: Demand, usage: Usage) -> bool:
    """Whether ``demand`` takes its queue past its nominal quota, given the queue's
    usage: only then does :func:`evaluate` read the department's other queues (to
    know what they hold back), so only then must ``usage`` hold their rows."""
    queue = org.queues[(demand.department, demand.queue)]
    queue_used = usage.get(demand.path.queue, ZERO)
    return not fits(queue.nominal.total, queue_used, demand.amount)


def siblings(org: Org, demand: Demand) -> list[Scope]:
    """The scopes of the department's queues: what :func:`evaluate` reads besides the
    demand's path when the demand :func:`borrows`."""
    return [scopes.queue(demand.department, q.name) for q in org.queues_of(demand.department)]


def evaluate(org: Org, demand: Demand, usage: Usage) -> QuotaDecision:
    """Decide whether ``demand`` fits, given the usage of every scope it touches.

    ``usage`` must hold the rows of the demand's path and, when the demand
    :func:`borrows`, those of the department's queues (:func:`siblings`); a missing row
    means nothing in use.

    The limits are checked in a fixed order and the first one broken is the answer;
    a violation and its message are written out only for a limit that is broken
    (:func:`~governance.resources.fits` first).
    """
    borrowed: dict[str, int] = {}
    for violation in _limits_broken(org, demand, usage, borrowed):
        if violation is not None:
            return QuotaDecision(allowed=False, reason=violation.reason, violation=violation)
    if not borrowed:
        return _ADMITTED
    return QuotaDecision(
        allowed=True,
        reason=Reason.ADMITTED,
        borrowed=Resources(**{k: max(0, v) for k, v in borrowed.items()}),
    )


_ADMITTED: Final = QuotaDecision(allowed=True, reason=Reason.ADMITTED)
"""The answer to every admission that borrows nothing (decisions are immutable)."""


def _limits_broken(
    org: Org,
    demand: Demand,
    usage: Usage,
    borrowed: dict[str, int],
) -> Iterator[Violation | None]:
    """Each limit on the demand's path, in the order :func:`evaluate` checks them: the
    violation when the demand breaks it, else None (``borrowed`` is filled in when the
    queue goes past its nominal quota within its limits)."""
    d, q, s, p = demand.department, demand.queue, demand.sku, demand.pool
    path = demand.path
    dept = org.departments[d]
    queue = org.queues[(d, q)]
    amount = demand.amount
    get = usage.get
    queue_used = get(path.queue, ZERO)
    # Queue: hard caps per SKU and per pool.
    limits = queue.nominal.per_sku.get(s)
    if limits is not None:
        used = get(path.queue_sku, ZERO)
        yield _check(
            Reason.SKU_QUOTA_EXCEEDED, f"queue {d}/{q}", f"quota for SKU {s}", limits, used, amount
        )
    limits = queue.nominal.per_pool.get(p)
    if limits is not None:
        used = get(path.queue_pool, ZERO)
        yield _check(
            Reason.POOL_QUOTA_EXCEEDED, f"queue {d}/{q}", f"quota on pool {p}", limits, used, amount
        )
    # Queue total: the nominal quota, then borrowing up to the borrowing limit from
    # what the department's other queues leave unused.
    if not fits(queue.nominal.total, queue_used, amount):
        yield _borrow(org, dept, queue, usage, queue_used, amount, borrowed)
    # Department: caps per SKU and per pool, then its total quota; then the pool.
    limits = dept.quota.per_sku.get(s)
    if limits is not None:
        used = get(path.department_sku, ZERO)
        yield _check(
            Reason.SKU_QUOTA_EXCEEDED, f"department {d}", f"quota for SKU {s}", limits, used, amount
        )
    limits = dept.quota.per_pool.get(p)
    if limits is not None:
        used = get(path.department_pool, ZERO)
        yield _check(
            Reason.POOL_QUOTA_EXCEEDED, f"department {d}", f"cap on pool {p}", limits, used, amount
        )
    used = get(path.department, ZERO)
    yield _check(
        Reason.DEPARTMENT_QUOTA_EXCEEDED, f"department {d}", "quota", dept.quota.total, used, amount
    )
    yield _check(
        Reason.POOL_CAPACITY_EXCEEDED,
        f"pool {p}",
        "sellable capacity (physical x over-subscription)",
        org.pools[p].capacity_limits,
        get(path.pool, ZERO),
        amount,
        advice="The pool is full for every department: try another pool's queue, "
        "or ask the platform admins to add GPUs.",
    )


def _borrow(
    org: Org,
    dept: Department,
    queue: Queue,
    usage: Usage,
    queue_used: Resources,
    amount: Resources,
    borrowed: dict[str, int],
) -> Violation | None:
    """The queue goes past its nominal quota in some resource: the first limit that
    borrowing it would break, else None with ``borrowed`` filled in per resource."""
    d, q = queue.department, queue.name
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
            return Violation(
                reason=Reason.QUEUE_QUOTA_EXCEEDED
                if queue.borrowing_limit.get(name).value == 0
                else Reason.BORROWING_LIMIT_EXCEEDED,
                owner=f"queue {d}/{q}",
                limit_name=limit_name,
                resource=name,
                in_use=queue_used.get(name),
                requested=want,
                limit=ceiling.value,
                advice=ADVICE_WAIT,
            )
        dept_limit = dept.quota.total.get(name)
        if dept_limit.value is not None:
            others = _reserved_by_others(org, queue, usage, name)
            assert others is not None
            available = dept_limit.value - others
            if new > available:
                return Violation(
                    reason=Reason.DEPARTMENT_QUOTA_EXCEEDED,
                    owner=f"department {d}",
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
        borrowed[name] = new - max(nominal.value, queue_used.get(name))
    return None


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
    "Usage",
    "Violation",
    "borrowing_ceiling",
    "borrows",
    "effective_demand",
    "evaluate",
    "siblings",
    "usage_limits",
]
