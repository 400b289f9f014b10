"""The organisation as values: SKUs, pools, departments, queues, quotas, role bindings.

Everything here is a frozen keyword-only dataclass built once from validated config
(:mod:`governance.config`) and read by the pure core (:mod:`governance.quotas`,
:mod:`governance.placement`) and by the edges. No I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from governance import resources
from governance.contract import SliceGrant
from governance.resources import NO_LIMITS, Limits, Resources


@dataclass(frozen=True, kw_only=True)
class Sku:
    """A named slice shape sold as a standard product.

    Memory is given either in MiB (``memory_mib``) or as a percent of the card
    (``memory_pct``, resolved per pool); ``compute_pct`` is the percent of a card's
    compute; a slice spans ``gpus_per_slice`` GPUs of that shape.
    """

    name: str
    compute_pct: int
    memory_mib: int | None = None
    memory_pct: int | None = None
    gpus_per_slice: int = 1
    price_per_hour: float | None = None
    pools: tuple[str, ...] = ()
    description: str = ""

    def memory_mib_on(self, pool: Pool) -> int:
        """Memory per GPU of one slice on ``pool``'s cards."""
        if self.memory_mib is not None:
            return self.memory_mib
        pct = self.memory_pct if self.memory_pct is not None else 100
        return pool.memory_mib_per_gpu * pct // 100

    def grant(self, count: int, pool: Pool) -> SliceGrant:
        """What ``count`` slices of this SKU on ``pool`` grant a container."""
        return SliceGrant(
            count=count,
            memory_mib=self.memory_mib_on(pool),
            compute_pct=self.compute_pct,
            backend=pool.backend,
            pool=pool.name,
            sku=self.name,
            gpus_per_slice=self.gpus_per_slice,
        )

    def demand(self, count: int, pool: Pool) -> Resources:
        """Quota used by ``count`` slices on ``pool``: as sold, per GPU x GPUs."""
        return Resources.of_grant(self.grant(count, pool))


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A set of nodes with GPUs of one vendor and model family, served by one backend."""

    name: str
    vendor: str
    model: str
    backend: str
    gpus: int
    memory_mib_per_gpu: int
    memory_oversubscription: float = 1.0
    compute_oversubscription: float = 1.0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def physical(self) -> Resources:
        return resources.physical(self)

    @cached_property
    def sellable(self) -> Resources:
        """Capacity that may be sold: physical x over-subscription factor."""
        return resources.sellable(self)

    @cached_property  # asked on every reservation; a Pool never changes
    def capacity_limits(self) -> Limits:
        """The limits of what every department together may use of this pool."""
        return resources.capacity(self)


@dataclass(frozen=True, kw_only=True)
class Quota:
    """Limits in the quota resources, in total and optionally per SKU and per pool."""

    total: Limits = NO_LIMITS
    per_sku: Mapping[str, Limits] = field(default_factory=dict)
    per_pool: Mapping[str, Limits] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Queue:
    """A queue of a department, with a nominal quota and a borrowing limit.

    ``borrowing_limit`` caps how far above its nominal quota the queue may go by
    borrowing its department's unused quota; UNLIMITED by default. A queue with no
    nominal quota (``nominal.total`` unlimited) is bounded only by its department.
    """

    name: str
    department: str
    pool: str
    nominal: Quota = field(default_factory=Quota)
    borrowing_limit: Limits = NO_LIMITS
    default_sku: str | None = None
    skus: tuple[str, ...] = ()
    """SKUs offered in this queue; empty means every SKU offered on its pool."""


@dataclass(frozen=True, kw_only=True)
class Department:
    name: str
    namespaces: tuple[str, ...]
    """Namespace names or glob patterns (``ml-*``)."""
    default_queue: str
    quota: Quota = field(default_factory=Quota)

    def owns(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


ROLES = ("platform-admin", "dept-admin", "member", "viewer")


@dataclass(frozen=True, kw_only=True)
class RoleBinding:
    """Grants ``role`` to subjects in ``department`` ("*" for every department).

    Subjects are ``user:NAME``, ``group:NAME``, or Kubernetes service accounts written
    as ``system:serviceaccount:NS:NAME`` (and the group ``system:serviceaccounts:NS``,
    given as ``group:system:serviceaccounts:NS``). A member binding may narrow what it
    grants to some queues and SKUs (empty = all of the department's).
    """

    role: str
    department: str
    subjects: tuple[str, ...]
    queues: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Org:
    """The whole configuration, indexed by name."""

    skus: Mapping[str, Sku]
    pools: Mapping[str, Pool]
    departments: Mapping[str, Department]
    queues: Mapping[tuple[str, str], Queue]
    """Keyed by (department, queue)."""
    role_bindings: tuple[RoleBinding, ...] = ()

    def department_of(self, namespace: str) -> Department | None:
        """The department that owns ``namespace``: exact names win over patterns.

        Answers are remembered per Org (the webhook asks on every GPU pod, and an
        organisation can hold a thousand departments' patterns)."""
        memo = self._department_memo
        if namespace in memo:
            return memo[namespace]
        found = self._exact_namespaces.get(namespace)
        if found is None:
            found = next((d for d in self.departments.values() if d.owns(namespace)), None)
        if len(memo) >= 100_000:
            memo.clear()
        memo[namespace] = found
        return found

    @cached_property
    def _exact_namespaces(self) -> dict[str, Department]:
        index: dict[str, Department] = {}
        for dept in self.departments.values():
            for namespace in dept.namespaces:
                index.setdefault(namespace, dept)
        return index

    @cached_property
    def _department_memo(self) -> dict[str, Department | None]:
        return {}

    def queues_of(self, department: str) -> list[Queue]:
        return list(self._queues_by_department.get(department, ()))

    @cached_property
    def _queues_by_department(self) -> dict[str, tuple[Queue, ...]]:
        # Built once per Org: the ledger asks for a department's queues in every
        # reservation, and an organisation can hold thousands of queues.
        index: dict[str, list[Queue]] = {}
        for (d, _), q in self.queues.items():
            index.setdefault(d, []).append(q)
        return {d: tuple(qs) for d, qs in index.items()}

    def skus_on(self, pool: str) -> list[Sku]:
        return [s for s in self.skus.values() if pool in s.pools]

    def offered_skus(self, queue: Queue) -> tuple[str, ...]:
        """The SKUs ``queue`` offers, sorted: those of its pool, narrowed to the queue's
        own list when it has one. Remembered per Org (asked for every GPU container)."""
        memo = self._offered
        found = memo.get((queue.department, queue.name))
        if found is None:
            on_pool = [s.name for s in self.skus_on(queue.pool)]
            found = tuple(sorted(s for s in on_pool if not queue.skus or s in queue.skus))
            memo[(queue.department, queue.name)] = found
        return found

    @cached_property
    def _offered(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {}
