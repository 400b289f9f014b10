"""One governance decision, end to end, without a pod: used by ``gpupool check``.

Placement (department, queue, SKU) -> RBAC -> a dry-run reservation in the ledger. The
webhook runs the same steps on a parsed pod, and records the reservation for real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from governance import placement, quotas
from governance.contract import Reason
from governance.errors import PlacementError
from governance.resources import Resources
from governance.snapshot import Snapshot
from governance.storage import ledger
from governance.storage.store import Store


@dataclass(frozen=True, kw_only=True)
class CheckDecision:
    allowed: bool
    reason: Reason
    message: str
    department: str = ""
    queue: str = ""
    sku: str = ""
    requested: Resources | None = None


def describe_request(count: int, sku: str, amount: Resources) -> str:
    return (
        f"{count} x {sku} ({amount.slices} slices, {amount.memory_mib} MiB GPU memory, "
        f"{amount.compute_pct}% GPU compute)"
    )


def check(
    store: Store,
    snapshot: Snapshot,
    *,
    namespace: str,
    queue: str | None,
    sku: str | None,
    count: int,
    user: str | None = None,
    groups: Sequence[str] = (),
) -> CheckDecision:
    who = user or "(anyone: no --as given, RBAC not checked)"
    org = snapshot.org
    try:
        target = placement.resolve_target(org, namespace=namespace, queue=queue)
        grant = placement.grant(org, target, placement.SliceRequest(count=count, sku=sku))
    except PlacementError as exc:
        return CheckDecision(allowed=False, reason=exc.code, message=f"{who}: {exc}")
    amount = placement.grant_amount(grant)
    where = dict(department=target.department.name, queue=target.queue.name, sku=grant.sku)
    what = describe_request(count, grant.sku, amount)
    if user is not None:
        from governance import rbac

        user = user.removeprefix("user:")  # Kubernetes user names carry no prefix
        decision = snapshot.policy.can_use(
            rbac.Identity(user=user, groups=tuple(groups)),
            target.department.name,
            target.queue.name,
            grant.sku,
        )
        if not decision.allowed:
            return CheckDecision(
                allowed=False,
                reason=Reason.FORBIDDEN,
                message=f"{decision.explanation} Requested: {what}.",
                requested=amount,
                **where,
            )
    demand = quotas.Demand(
        department=target.department.name,
        queue=target.queue.name,
        sku=grant.sku,
        pool=target.pool.name,
        amount=amount,
    )
    reservation = ledger.reserve(
        store,
        org,
        demand=demand,
        request_uid=f"check-{ledger.new_allocation_id()}",
        namespace=namespace,
        grants={"check": grant},
        subject=user or "",
        dry_run=True,
    )
    if reservation.allowed:
        borrowed = reservation.decision.borrowed
        note = "" if borrowed.is_zero() else f", borrowing {borrowed.as_dict()} above nominal"
        return CheckDecision(
            allowed=True,
            reason=Reason.ADMITTED,
            message=f"{who}: {what} fits in queue {target.department.name}/"
            f"{target.queue.name} on pool {target.pool.name}{note}.",
            requested=amount,
            **where,
        )
    violation = reservation.decision.violation
    assert violation is not None
    return CheckDecision(
        allowed=False,
        reason=reservation.decision.reason,
        message=f"{who} asked for {what}: {violation.message()}",
        requested=amount,
        **where,
    )
