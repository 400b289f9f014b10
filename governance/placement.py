"""Where a request goes: department from the namespace, queue, SKU and pool. Pure.

The webhook parses the pod into :class:`SliceRequest` values (one per GPU container)
and calls :func:`place`; the result says which department, queue, pool and backend
serve the pod, what each container is granted, and the quota :class:`~governance.quotas.Demand`.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.contract import SKU_CUSTOM, Reason, SliceGrant
from governance.errors import PlacementError
from governance.model import Department, Org, Pool, Queue, Sku


@dataclass(frozen=True, kw_only=True)
class SliceRequest:
    """One container's GPU request, as the user wrote it.

    Either ``sku`` (N slices of a named SKU; None means the queue's default SKU), or
    the HAMi form (``custom=True``): ``count`` GPUs with ``memory_mib`` or
    ``memory_pct`` and ``compute_pct`` per GPU (None = a whole card's).
    """

    count: int
    sku: str | None = None
    custom: bool = False
    memory_mib: int | None = None
    memory_pct: int | None = None
    compute_pct: int | None = None


@dataclass(frozen=True, kw_only=True)
class Target:
    department: Department
    queue: Queue
    pool: Pool


def resolve_target(org: Org, *, namespace: str, queue: str | None) -> Target:
    dept = org.department_of(namespace)
    if dept is None:
        raise PlacementError(
            Reason.NAMESPACE_NOT_OWNED,
            f"namespace {namespace!r} belongs to no department, so GPU pods cannot be "
            "admitted there. Ask a platform admin to add it to a department's namespaces.",
        )
    queue_name = queue or dept.default_queue
    found = org.queues.get((dept.name, queue_name))
    if found is None:
        other = sorted(d for (d, q) in org.queues if q == queue_name and d != dept.name)
        choices = sorted(q.name for q in org.queues_of(dept.name))
        if other:
            raise PlacementError(
                Reason.QUEUE_OF_OTHER_DEPARTMENT,
                f"queue {queue_name!r} belongs to department {other[0]!r}, not to "
                f"{dept.name!r} which owns namespace {namespace!r}.",
                choices=choices,
            )
        raise PlacementError(
            Reason.UNKNOWN_QUEUE,
            f"department {dept.name!r} has no queue {queue_name!r}.",
            choices=choices,
        )
    return Target(department=dept, queue=found, pool=org.pools[found.pool])


def resolve_sku(org: Org, target: Target, name: str | None) -> Sku:
    queue = target.queue
    offered = org.offered_skus(queue)
    if name is None:
        name = queue.default_sku
        if name is None:
            raise PlacementError(
                Reason.INVALID_REQUEST,
                f"queue {queue.department}/{queue.name} has no default SKU: label the pod "
                "gpupool.io/sku with one of its SKUs.",
                choices=offered,
            )
    sku = org.skus.get(name)
    if sku is None:
        raise PlacementError(Reason.UNKNOWN_SKU, f"unknown SKU {name!r}.", choices=offered)
    if name not in offered:
        raise PlacementError(
            Reason.SKU_NOT_OFFERED,
            f"SKU {name!r} is not offered in queue {queue.department}/{queue.name} "
            f"(pool {queue.pool}).",
            choices=offered,
        )
    return sku


def grant(org: Org, target: Target, request: SliceRequest) -> SliceGrant:
    """What one container gets; raises PlacementError for invalid shapes."""
    pool = target.pool
    if request.count <= 0:
        raise PlacementError(
            Reason.INVALID_REQUEST, f"GPU count must be a positive integer, got {request.count}."
        )
    if not request.custom:
        return resolve_sku(org, target, request.sku).grant(request.count, pool)
    card = pool.memory_mib_per_gpu
    if request.memory_mib is not None:
        memory = request.memory_mib
    elif request.memory_pct is not None:
        if not 0 < request.memory_pct <= 100:
            raise PlacementError(
                Reason.INVALID_REQUEST,
                f"GPU memory percentage must be 1..100, got {request.memory_pct}.",
            )
        memory = card * request.memory_pct // 100
    else:
        memory = card
    if not 0 < memory <= card:
        raise PlacementError(
            Reason.INVALID_REQUEST,
            f"GPU memory per GPU must be 1..{card} MiB (a whole {pool.model} card in pool "
            f"{pool.name}), got {memory} MiB.",
        )
    compute = 100 if request.compute_pct is None else request.compute_pct
    if not 0 < compute <= 100:
        raise PlacementError(
            Reason.INVALID_REQUEST, f"GPU cores per GPU must be 1..100 percent, got {compute}."
        )
    return SliceGrant(
        count=request.count,
        memory_mib=memory,
        compute_pct=compute,
        backend=pool.backend,
        pool=pool.name,
        sku=SKU_CUSTOM,
    )


def pod_sku(grants: dict[str, SliceGrant]) -> str:
    """A pod uses one SKU; raise PlacementError when its containers ask for several."""
    skus = sorted({g.sku for g in grants.values()})
    if len(skus) > 1:
        raise PlacementError(
            Reason.INVALID_REQUEST,
            f"a pod uses one SKU, but its containers ask for {', '.join(skus)}: split it "
            "into several pods or use one SKU.",
        )
    return skus[0] if skus else SKU_CUSTOM
