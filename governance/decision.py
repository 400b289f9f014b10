"""The one admission decision: whether and how a request for GPU slices is admitted.

Pure: values in, values out; no I/O, no SQL. Every caller decides with these functions
against a :class:`~governance.snapshot.Snapshot` (one per configuration revision):

- the webhook (:mod:`admission.admitter`) calls the steps of :func:`plan` one by one,
  because it has work of its own between them (the pod's GPU containers are counted
  and parsed once the namespace's department is known, the pool's backend renders the
  grants before RBAC is asked), then hands the plan's demand to the ledger;
- the ledger (:mod:`governance.storage.ledger`) locks the usage rows of the plan's
  scopes and calls the quota part, :func:`admit` (through
  :func:`governance.quotas.evaluate`, the same arithmetic), in its transaction;
- ``gpupool check`` reads the usage and calls :func:`decide`;
- the simulator's replay calls :func:`decide` over the usage it keeps itself, adding
  an admitted demand to each scope of its path and taking it back when the pod ends
  (per scope, for its time-weighted statistics); :func:`charge` / :func:`uncharge`
  state that step for callers that keep a plain map (docs/architecture.md).

The steps, in the order a denial is looked for (the first one found is the answer):

1. :func:`locate`: the namespace's department and the queue (the label, else the
   department's default), and the queue's pool;
2. :func:`place`: each GPU container's grant (its SKU, or the HAMi form's figures), the
   pod's one SKU, and the Kubernetes effective demand of the pod as sold;
3. :func:`authorise`: the revision's policy: may this identity use the queue with the
   SKU (skipped when no identity is given, as ``gpupool check`` without ``--as``);
4. :func:`admit`: the quota arithmetic over the usage of the demand's scopes.

A denial is a :class:`Denial` with the contract's reason code and a message that says
what was refused and what to do; callers put who asked and for which pod in front.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from governance import placement, quotas
from governance.contract import Reason, SliceGrant
from governance.errors import PlacementError
from governance.placement import SliceRequest, Target
from governance.quotas import Usage
from governance.rbac import Identity
from governance.resources import ZERO, Resources
from governance.scopes import Scope
from governance.snapshot import Snapshot


class Stage(enum.Enum):
    """Which step of the decision refused a request."""

    LOCATE = "locate"
    PLACE = "place"
    AUTHORISE = "authorise"
    QUOTA = "quota"


@dataclass(frozen=True, kw_only=True)
class Container:
    """One GPU container's request, and where it sits in the pod (the effective demand
    counts init containers and sidecars as Kubernetes does)."""

    name: str
    request: SliceRequest
    init: bool = False
    restartable: bool = False
    """A restartable init container: a sidecar, running beside the app containers."""


@dataclass(frozen=True, kw_only=True)
class Ask:
    """What is asked: GPU containers in a namespace, on a queue (None: the department's
    default queue)."""

    namespace: str
    queue: str | None = None
    containers: tuple[Container, ...]


@dataclass(frozen=True, kw_only=True)
class Denial:
    """A refusal: the reason code, a message saying what and what to do, and what was
    known when it was refused (empty names before the step that finds them)."""

    stage: Stage
    reason: Reason
    message: str
    department: str = ""
    queue: str = ""
    sku: str = ""
    requested: Resources | None = None
    """The pod's effective demand, once it is known (from :func:`place` on)."""
    violation: quotas.Violation | None = None
    """The limit broken, for a denial of the quota step."""


@dataclass(frozen=True, kw_only=True)
class Placed:
    """A request placed: its department, queue and pool, what each container gets, the
    pod's SKU and its effective demand."""

    target: Target
    grants: Mapping[str, SliceGrant]
    sku: str
    amount: Resources

    @property
    def department(self) -> str:
        return self.target.department.name

    @property
    def queue(self) -> str:
        return self.target.queue.name

    @property
    def pool(self) -> str:
        return self.target.pool.name

    @property
    def demand(self) -> quotas.Demand:
        """What the request asks of the quota."""
        return quotas.Demand(
            department=self.department,
            queue=self.queue,
            sku=self.sku,
            pool=self.pool,
            amount=self.amount,
        )


@dataclass(frozen=True, kw_only=True)
class Plan(Placed):
    """A request placed and authorised: all that is left is the quota."""

    subject: str = ""
    """The policy subject that the matching rule allowed ("" when RBAC was not asked)."""


@dataclass(frozen=True, kw_only=True)
class Admitted:
    """A plan that fits: ``borrowed`` is how far above its nominal quota the queue goes."""

    plan: Plan
    borrowed: Resources = field(default=ZERO)


def locate(snapshot: Snapshot, *, namespace: str, queue: str | None) -> Target | Denial:
    """Step 1: the department that owns ``namespace``, its queue ``queue`` (None: the
    department's default) and the queue's pool."""
    try:
        return placement.resolve_target(snapshot.org, namespace=namespace, queue=queue)
    except PlacementError as exc:
        return Denial(stage=Stage.LOCATE, reason=exc.code, message=str(exc))


def place(snapshot: Snapshot, target: Target, containers: tuple[Container, ...]) -> Placed | Denial:
    """Step 2: each container's grant, the pod's one SKU and its effective demand."""
    try:
        grants = {c.name: placement.grant(snapshot.org, target, c.request) for c in containers}
        sku = placement.pod_sku(grants)
    except PlacementError as exc:
        return Denial(
            stage=Stage.PLACE,
            reason=exc.code,
            message=str(exc),
            department=target.department.name,
            queue=target.queue.name,
        )
    amount = quotas.effective_demand(
        init=[(Resources.of_grant(grants[c.name]), c.restartable) for c in containers if c.init],
        app=[Resources.of_grant(grants[c.name]) for c in containers if not c.init],
    )
    return Placed(target=target, grants=grants, sku=sku, amount=amount)


def authorise(snapshot: Snapshot, placed: Placed, identity: Identity | None) -> Plan | Denial:
    """Step 3: may ``identity`` use the queue with the SKU (the revision's policy)?
    ``identity`` None: not asked (the plan names no subject)."""
    subject = ""
    if identity is not None:
        verdict = snapshot.policy.can_use(identity, placed.department, placed.queue, placed.sku)
        if not verdict.allowed:
            return _refused(placed, Stage.AUTHORISE, Reason.FORBIDDEN, verdict.explanation)
        subject = verdict.subject or ""
    return Plan(
        target=placed.target,
        grants=placed.grants,
        sku=placed.sku,
        amount=placed.amount,
        subject=subject,
    )


def plan(snapshot: Snapshot, ask: Ask, identity: Identity | None) -> Plan | Denial:
    """Steps 1-3: placement, grants, SKU, effective demand and RBAC."""
    target = locate(snapshot, namespace=ask.namespace, queue=ask.queue)
    if isinstance(target, Denial):
        return target
    placed = place(snapshot, target, ask.containers)
    if isinstance(placed, Denial):
        return placed
    return authorise(snapshot, placed, identity)


def admit(snapshot: Snapshot, planned: Plan, usage: Usage) -> Admitted | Denial:
    """Step 4: does the plan fit every limit on its path, given ``usage``?

    ``usage`` must hold the rows of the demand's scopes and, when the queue would go
    past its nominal quota, those of its department's queues
    (:func:`governance.quotas.evaluate`); a missing row means nothing in use."""
    verdict = quotas.evaluate(snapshot.org, planned.demand, usage)
    if verdict.allowed:
        return Admitted(plan=planned, borrowed=verdict.borrowed)
    assert verdict.violation is not None
    return _refused(
        planned, Stage.QUOTA, verdict.reason, verdict.violation.message(), verdict.violation
    )


def _refused(
    placed: Placed,
    stage: Stage,
    reason: Reason,
    message: str,
    violation: quotas.Violation | None = None,
) -> Denial:
    """A denial of a placed request: it names the queue, the SKU and the demand."""
    return Denial(
        stage=stage,
        reason=reason,
        message=message,
        department=placed.department,
        queue=placed.queue,
        sku=placed.sku,
        requested=placed.amount,
        violation=violation,
    )


def decide(
    snapshot: Snapshot, ask: Ask, identity: Identity | None, usage: Usage
) -> Admitted | Denial:
    """The whole decision, for callers that hold the usage (``gpupool check``, the
    simulator): :func:`plan`, then :func:`admit`."""
    planned = plan(snapshot, ask, identity)
    if isinstance(planned, Denial):
        return planned
    return admit(snapshot, planned, usage)


def charge(usage: Mapping[Scope, Resources], admitted: Admitted) -> dict[Scope, Resources]:
    """``usage`` with an admitted plan's demand added to each scope of its path (what
    the ledger's reservation adds), for callers that keep usage themselves."""
    return _moved(usage, admitted.plan.demand, admitted.plan.amount)


def uncharge(usage: Mapping[Scope, Resources], admitted: Admitted) -> dict[Scope, Resources]:
    """``usage`` with an admitted plan's demand taken back (its pod ended)."""
    return _moved(usage, admitted.plan.demand, -admitted.plan.amount)


def _moved(
    usage: Mapping[Scope, Resources], demand: quotas.Demand, delta: Resources
) -> dict[Scope, Resources]:
    out = dict(usage)
    for scope in demand.path.locked:
        out[scope] = out.get(scope, ZERO) + delta
    return out


__all__ = [
    "Admitted",
    "Ask",
    "Container",
    "Denial",
    "Placed",
    "Plan",
    "Stage",
    "Usage",
    "admit",
    "authorise",
    "charge",
    "decide",
    "locate",
    "place",
    "plan",
    "uncharge",
]
