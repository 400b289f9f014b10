"""governance.decision: the one admission decision, step by step, without a store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import config, decision, quotas, scopes
from governance.contract import Reason
from governance.decision import Admitted, Ask, Container, Denial, Stage
from governance.placement import SliceRequest
from governance.rbac import Identity
from governance.resources import RESOURCE_NAMES, ZERO, Resources
from governance.scopes import Scope
from governance.snapshot import Snapshot
from tests.support.org import GIB, org_document

pytestmark = pytest.mark.unit

SNAPSHOT = Snapshot.build(config.build_org(org_document(), source="org.yaml"), revision=1)
MEMBER = Identity(user="ana", groups=("ml-team",))
STRANGER = Identity(user="eve")


def ask(*containers: Container, namespace: str = "ml", queue: str | None = None) -> Ask:
    return Ask(namespace=namespace, queue=queue, containers=containers)


def gpu(name: str = "main", count: int = 1, sku: str | None = "a100-1g", **kw: bool) -> Container:
    return Container(name=name, request=SliceRequest(count=count, sku=sku), **kw)


def test_a_plan_names_the_queue_pool_grants_sku_demand_and_subject() -> None:
    plan = decision.plan(SNAPSHOT, ask(gpu(count=2)), MEMBER)
    assert isinstance(plan, decision.Plan)
    assert (plan.department, plan.queue, plan.pool, plan.sku) == ("ml", "train", "a100", "a100-1g")
    assert plan.grants["main"].count == 2
    assert plan.amount == Resources(slices=2, memory_mib=20 * GIB, compute_pct=30)
    assert plan.subject == "group:ml-team"
    assert plan.demand.path == scopes.path("ml", "train", "a100-1g", "a100")


def test_the_effective_demand_counts_init_containers_and_sidecars_as_kubernetes_does() -> None:
    containers = (
        gpu("setup", count=4, init=True),
        gpu("sidecar", count=1, init=True, restartable=True),
        gpu("main", count=2),
    )
    plan = decision.plan(SNAPSHOT, ask(*containers), MEMBER)
    assert isinstance(plan, decision.Plan)
    one = plan.grants["sidecar"]
    per_slice = Resources.of_grant(one)
    # max(init 4 + sidecar 0 before it, sidecar 1 + app 2) = 4 slices
    assert plan.amount == Resources(tuple(4 * v for v in per_slice.values))


@pytest.mark.parametrize(
    ("the_ask", "identity", "stage", "reason", "where"),
    [
        pytest.param(
            ask(gpu(), namespace="default"),
            MEMBER,
            Stage.LOCATE,
            Reason.NAMESPACE_NOT_OWNED,
            ("", "", ""),
            id="namespace-of-no-department",
        ),
        pytest.param(
            ask(gpu(), queue="nope"),
            MEMBER,
            Stage.LOCATE,
            Reason.UNKNOWN_QUEUE,
            ("", "", ""),
            id="unknown-queue",
        ),
        pytest.param(
            ask(gpu(sku="h100")),
            MEMBER,
            Stage.PLACE,
            Reason.UNKNOWN_SKU,
            ("ml", "train", ""),
            id="unknown-sku",
        ),
        pytest.param(
            ask(gpu("a"), gpu("b", sku="a100-half")),
            MEMBER,
            Stage.PLACE,
            Reason.INVALID_REQUEST,
            ("ml", "train", ""),
            id="two-skus-in-one-pod",
        ),
        pytest.param(
            ask(gpu()),
            STRANGER,
            Stage.AUTHORISE,
            Reason.FORBIDDEN,
            ("ml", "train", "a100-1g"),
            id="not-bound",
        ),
    ],
)
def test_each_step_refuses_with_its_reason_and_what_it_knew(
    the_ask: Ask,
    identity: Identity,
    stage: Stage,
    reason: Reason,
    where: tuple[str, str, str],
) -> None:
    denied = decision.plan(SNAPSHOT, the_ask, identity)
    assert isinstance(denied, Denial)
    assert (denied.stage, denied.reason) == (stage, reason)
    assert (denied.department, denied.queue, denied.sku) == where
    assert denied.message


def test_a_forbidden_plan_says_who_may_not_and_whom_to_ask() -> None:
    denied = decision.plan(SNAPSHOT, ask(gpu()), STRANGER)
    assert isinstance(denied, Denial) and denied.requested is not None
    assert denied.message.startswith("denied: user:eve may not use queue ml/train")


def test_without_an_identity_rbac_is_not_asked() -> None:
    plan = decision.plan(SNAPSHOT, ask(gpu()), None)
    assert isinstance(plan, decision.Plan) and plan.subject == ""


def test_admit_borrows_above_the_nominal_quota_and_refuses_past_the_borrowing_limit() -> None:
    whole = ask(gpu(count=1, sku="a100-whole"))
    plan = decision.plan(SNAPSHOT, whole, MEMBER)
    assert isinstance(plan, decision.Plan)
    train = scopes.queue("ml", "train")
    # queue train: nominal 160Gi memory, borrowing limit 80Gi; one whole card is 80Gi
    within = decision.admit(SNAPSHOT, plan, {train: Resources(memory_mib=80 * GIB)})
    assert isinstance(within, Admitted) and within.borrowed == ZERO
    borrowing = decision.admit(SNAPSHOT, plan, {train: Resources(memory_mib=160 * GIB)})
    assert isinstance(borrowing, Admitted)
    assert borrowing.borrowed == Resources(memory_mib=80 * GIB)
    over = decision.admit(SNAPSHOT, plan, {train: Resources(memory_mib=240 * GIB)})
    assert isinstance(over, Denial)
    assert (over.stage, over.reason) == (Stage.QUOTA, Reason.BORROWING_LIMIT_EXCEEDED)
    assert over.violation is not None and over.message == over.violation.message()
    assert over.message.startswith("queue ml/train nominal quota + borrowing limit")


def test_decide_is_plan_then_admit() -> None:
    usage = {scopes.department("ml"): Resources(slices=16)}
    denied = decision.decide(SNAPSHOT, ask(gpu()), MEMBER, usage)
    assert isinstance(denied, Denial)
    assert denied.reason is Reason.DEPARTMENT_QUOTA_EXCEEDED
    assert isinstance(decision.decide(SNAPSHOT, ask(gpu()), MEMBER, {}), Admitted)
    forbidden = decision.decide(SNAPSHOT, ask(gpu()), STRANGER, {})
    assert isinstance(forbidden, Denial) and forbidden.stage is Stage.AUTHORISE


def test_charge_adds_to_every_scope_of_the_path_and_uncharge_takes_it_back() -> None:
    admitted = decision.decide(SNAPSHOT, ask(gpu(count=3)), MEMBER, {})
    assert isinstance(admitted, Admitted)
    charged = decision.charge({}, admitted)
    assert set(charged) == set(admitted.plan.demand.path.locked)
    assert all(v == admitted.plan.amount for v in charged.values())
    assert all(v.is_zero() for v in decision.uncharge(charged, admitted).values())


# -- property: admitting by decide() and charging never passes a quota --------------

SKUS = ("a100-1g", "a100-half", "a100-whole", None)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("train", "infer", None)),
            st.sampled_from(SKUS),
            st.integers(1, 4),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_admitting_with_decide_never_exceeds_a_limit(
    asks: list[tuple[str | None, str | None, int, bool]],
) -> None:
    """Pods arrive and some end; every admission is decided against the usage the
    earlier ones left, as the simulator replays them. No scope's usage ever passes its
    limit (the queues' ceilings: nominal + borrowing limit), and a denial always names a
    limit that the request would indeed have broken."""
    org = SNAPSHOT.org
    usage: dict[Scope, Resources] = {}
    running: list[Admitted] = []
    for queue, sku, count, ends_one in asks:
        result = decision.decide(SNAPSHOT, ask(gpu(count=count, sku=sku), queue=queue), None, usage)
        if isinstance(result, Admitted):
            usage = decision.charge(usage, result)
            running.append(result)
        elif result.stage is Stage.QUOTA:
            v = result.violation
            assert v is not None and v.in_use + v.requested > v.limit
        if ends_one and running:
            usage = decision.uncharge(usage, running.pop(0))
        dept = org.departments["ml"]
        used = usage.get(scopes.department("ml"), ZERO)
        for name in RESOURCE_NAMES:
            assert dept.quota.total.get(name).admits(used.get(name))
        for q in org.queues_of("ml"):
            ceiling = quotas.borrowing_ceiling(q)
            queued = usage.get(scopes.queue("ml", q.name), ZERO)
            for name in RESOURCE_NAMES:
                assert ceiling.get(name).admits(queued.get(name))
        pool = org.pools["a100"].capacity_limits
        pooled = usage.get(scopes.pool("a100"), ZERO)
        for name in RESOURCE_NAMES:
            assert pool.get(name).admits(pooled.get(name))
