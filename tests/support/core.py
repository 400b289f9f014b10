"""Builders for the governance core's values: pools, SKUs, queues, departments, orgs.

Every builder takes keyword arguments with small, realistic defaults, so that a test
names only what it is about (kueue's ``Make...`` wrappers in ``pkg/util/testing``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from governance.model import Department, Org, Pool, Queue, Quota, Sku
from governance.quotas import Demand
from governance.resources import NO_LIMITS, Limits, Resources

GIB = 1024
"""MiB per GiB."""


def make_pool(
    name: str = "a100",
    *,
    vendor: str = "nvidia",
    model: str = "A100-80GB",
    backend: str = "hami",
    gpus: int = 8,
    memory_mib_per_gpu: int = 80 * GIB,
    memory_oversubscription: float = 1.0,
    compute_oversubscription: float = 1.0,
) -> Pool:
    return Pool(
        name=name,
        vendor=vendor,
        model=model,
        backend=backend,
        gpus=gpus,
        memory_mib_per_gpu=memory_mib_per_gpu,
        memory_oversubscription=memory_oversubscription,
        compute_oversubscription=compute_oversubscription,
    )


def make_sku(
    name: str = "a100-1g",
    *,
    compute_pct: int = 25,
    memory_mib: int | None = 20 * GIB,
    memory_pct: int | None = None,
    gpus_per_slice: int = 1,
    pools: Iterable[str] = ("a100",),
    price_per_hour: float | None = None,
) -> Sku:
    return Sku(
        name=name,
        compute_pct=compute_pct,
        memory_mib=memory_mib,
        memory_pct=memory_pct,
        gpus_per_slice=gpus_per_slice,
        pools=tuple(pools),
        price_per_hour=price_per_hour,
    )


def make_quota(
    total: Limits = NO_LIMITS,
    *,
    per_sku: Mapping[str, Limits] | None = None,
    per_pool: Mapping[str, Limits] | None = None,
) -> Quota:
    return Quota(total=total, per_sku=dict(per_sku or {}), per_pool=dict(per_pool or {}))


def make_queue(
    name: str = "train",
    *,
    department: str = "ml",
    pool: str = "a100",
    nominal: Limits = NO_LIMITS,
    borrowing_limit: Limits = NO_LIMITS,
    per_sku: Mapping[str, Limits] | None = None,
    per_pool: Mapping[str, Limits] | None = None,
    default_sku: str | None = None,
    skus: Iterable[str] = (),
) -> Queue:
    return Queue(
        name=name,
        department=department,
        pool=pool,
        nominal=make_quota(nominal, per_sku=per_sku, per_pool=per_pool),
        borrowing_limit=borrowing_limit,
        default_sku=default_sku,
        skus=tuple(skus),
    )


def make_department(
    name: str = "ml",
    *,
    namespaces: Iterable[str] | None = None,
    default_queue: str = "train",
    quota: Limits = NO_LIMITS,
    per_sku: Mapping[str, Limits] | None = None,
    per_pool: Mapping[str, Limits] | None = None,
) -> Department:
    return Department(
        name=name,
        namespaces=tuple(namespaces if namespaces is not None else (name,)),
        default_queue=default_queue,
        quota=make_quota(quota, per_sku=per_sku, per_pool=per_pool),
    )


def make_org(
    *,
    pools: Iterable[Pool] | None = None,
    skus: Iterable[Sku] | None = None,
    departments: Iterable[Department] | None = None,
    queues: Iterable[Queue] | None = None,
) -> Org:
    """An org indexed by name; by default one pool, one SKU, department ``ml`` with
    queue ``train``."""
    pools = list(pools) if pools is not None else [make_pool()]
    skus = list(skus) if skus is not None else [make_sku()]
    departments = list(departments) if departments is not None else [make_department()]
    queues = list(queues) if queues is not None else [make_queue()]
    return Org(
        skus={s.name: s for s in skus},
        pools={p.name: p for p in pools},
        departments={d.name: d for d in departments},
        queues={(q.department, q.name): q for q in queues},
    )


def make_demand(
    amount: Resources | None = None,
    *,
    department: str = "ml",
    queue: str = "train",
    sku: str = "a100-1g",
    pool: str = "a100",
    slices: int = 0,
    memory_mib: int = 0,
    compute_pct: int = 0,
) -> Demand:
    """A demand of ``amount`` (or of the given figures) on a queue's path."""
    if amount is None:
        amount = Resources(slices=slices, memory_mib=memory_mib, compute_pct=compute_pct)
    return Demand(department=department, queue=queue, sku=sku, pool=pool, amount=amount)


def sku_demand(org: Org, *, department: str, queue: str, sku: str, count: int) -> Demand:
    """The demand of ``count`` slices of ``sku`` in a queue, as the ledger charges it."""
    q = org.queues[(department, queue)]
    pool = org.pools[q.pool]
    return Demand(
        department=department,
        queue=queue,
        sku=sku,
        pool=pool.name,
        amount=org.skus[sku].demand(count, pool),
    )
