"""governance.quotas: every branch of evaluate (reason code and Violation figures),
the module docstring's worked example, scope keys and the effective demand."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from governance import quotas, scopes
from governance.contract import Reason
from governance.model import Org
from governance.quotas import Violation
from governance.resources import NO_LIMITS, ZERO, Limits, Resources
from tests.support.core import (
    GIB,
    make_demand,
    make_department,
    make_org,
    make_pool,
    make_queue,
    make_sku,
)

pytestmark = pytest.mark.unit

D, TRAIN, SERVE = "ml", "train", "serve"
Q_TRAIN = scopes.queue(D, TRAIN)
Q_SERVE = scopes.queue(D, SERVE)
DEPT = scopes.department(D)
POOL = scopes.pool("a100")


def org_with(
    *,
    dept: Limits = NO_LIMITS,
    dept_per_sku: dict[str, Limits] | None = None,
    dept_per_pool: dict[str, Limits] | None = None,
    train: Limits = NO_LIMITS,
    train_borrow: Limits = NO_LIMITS,
    train_per_sku: dict[str, Limits] | None = None,
    train_per_pool: dict[str, Limits] | None = None,
    serve: Limits | None = None,
    pool_gpus: int = 8,
    compute_oversubscription: float = 1.0,
) -> Org:
    """Department ml (queues train and, if ``serve`` is given, serve) on pool a100."""
    queues = [
        make_queue(
            TRAIN,
            nominal=train,
            borrowing_limit=train_borrow,
            per_sku=train_per_sku,
            per_pool=train_per_pool,
        )
    ]
    if serve is not None:
        queues.append(make_queue(SERVE, nominal=serve))
    return make_org(
        pools=[make_pool(gpus=pool_gpus, compute_oversubscription=compute_oversubscription)],
        departments=[
            make_department(D, quota=dept, per_sku=dept_per_sku, per_pool=dept_per_pool),
            make_department("cv", default_queue="main"),
        ],
        queues=[*queues, make_queue("main", department="cv")],
    )


@dataclass(frozen=True)
class Denied:
    reason: Reason
    owner: str
    limit_name: str
    resource: str
    in_use: int
    requested: int
    limit: int


@dataclass(frozen=True)
class Case:
    org: Org
    amount: Resources
    usage: dict[str, Resources] = field(default_factory=dict)
    denied: Denied | None = None
    borrowed: Resources = ZERO


def slices(n: int) -> Resources:
    return Resources(slices=n)


def mem(n: int) -> Resources:
    return Resources(memory_mib=n)


DENIALS = [
    pytest.param(
        Case(
            org_with(train_per_sku={"a100-1g": Limits.of(slices=2)}),
            slices(1),
            {scopes.parse("queue/ml/train/sku/a100-1g"): slices(2)},
            Denied(
                Reason.SKU_QUOTA_EXCEEDED,
                "queue ml/train",
                "quota for SKU a100-1g",
                "slices",
                2,
                1,
                2,
            ),
        ),
        id="queue_per_sku_cap_is_hard",
    ),
    pytest.param(
        Case(
            org_with(train_per_pool={"a100": Limits.of(compute_pct=100)}),
            Resources(compute_pct=50),
            {scopes.parse("queue/ml/train/pool/a100"): Resources(compute_pct=75)},
            Denied(
                Reason.POOL_QUOTA_EXCEEDED,
                "queue ml/train",
                "quota on pool a100",
                "compute_pct",
                75,
                50,
                100,
            ),
        ),
        id="queue_per_pool_cap_is_hard",
    ),
    pytest.param(
        Case(
            org_with(train=Limits.of(slices=4), train_borrow=Limits.of(slices=0)),
            slices(2),
            {Q_TRAIN: slices(3)},
            Denied(
                Reason.QUEUE_QUOTA_EXCEEDED, "queue ml/train", "nominal quota", "slices", 3, 2, 4
            ),
        ),
        id="queue_without_borrowing_stops_at_its_nominal_quota",
    ),
    pytest.param(
        Case(
            org_with(train=Limits.of(slices=4), train_borrow=Limits.of(slices=2)),
            slices(3),
            {Q_TRAIN: slices(4)},
            Denied(
                Reason.BORROWING_LIMIT_EXCEEDED,
                "queue ml/train",
                "nominal quota + borrowing limit (4 + 2)",
                "slices",
                4,
                3,
                6,
            ),
        ),
        id="queue_stops_at_its_borrowing_limit",
    ),
    pytest.param(
        Case(
            org_with(
                dept=Limits.of(slices=10), train=Limits.of(slices=4), serve=Limits.of(slices=5)
            ),
            slices(2),
            {Q_TRAIN: slices(4), Q_SERVE: slices(1), DEPT: slices(5)},
            Denied(
                Reason.DEPARTMENT_QUOTA_EXCEEDED,
                "department ml",
                "quota left for queue train to borrow (department limit 10 - 5 reserved or "
                "used by its other queues)",
                "slices",
                4,
                2,
                5,
            ),
        ),
        id="queue_never_borrows_other_queues_nominal_quota",
    ),
    pytest.param(
        Case(
            org_with(dept_per_sku={"a100-1g": Limits.of(memory_mib=40 * GIB)}),
            mem(20 * GIB + 1),
            {scopes.parse("department/ml/sku/a100-1g"): mem(20 * GIB)},
            Denied(
                Reason.SKU_QUOTA_EXCEEDED,
                "department ml",
                "quota for SKU a100-1g",
                "memory_mib",
                20 * GIB,
                20 * GIB + 1,
                40 * GIB,
            ),
        ),
        id="department_per_sku_cap_is_hard",
    ),
    pytest.param(
        Case(
            org_with(dept_per_pool={"a100": Limits.of(slices=0)}),
            slices(1),
            {},
            Denied(
                Reason.POOL_QUOTA_EXCEEDED, "department ml", "cap on pool a100", "slices", 0, 1, 0
            ),
        ),
        id="department_pool_cap_of_zero_admits_nothing",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(compute_pct=200)),
            Resources(slices=1, compute_pct=100),
            {DEPT: Resources(compute_pct=150)},
            Denied(
                Reason.DEPARTMENT_QUOTA_EXCEEDED,
                "department ml",
                "quota",
                "compute_pct",
                150,
                100,
                200,
            ),
        ),
        id="department_total_quota",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=10), train=Limits.of(slices=4)),
            slices(3),
            {Q_TRAIN: slices(1), DEPT: slices(9)},
            Denied(Reason.DEPARTMENT_QUOTA_EXCEEDED, "department ml", "quota", "slices", 9, 3, 10),
        ),
        id="request_within_nominal_still_needs_department_quota",
    ),
    pytest.param(
        Case(
            org_with(pool_gpus=2),
            Resources(compute_pct=50),
            {POOL: Resources(compute_pct=175)},
            Denied(
                Reason.POOL_CAPACITY_EXCEEDED,
                "pool a100",
                "sellable capacity (physical x over-subscription)",
                "compute_pct",
                175,
                50,
                200,
            ),
        ),
        id="pool_sellable_capacity_is_shared_by_every_department",
    ),
    pytest.param(
        Case(
            org_with(pool_gpus=1),
            mem(80 * GIB + 1),
            {},
            Denied(
                Reason.POOL_CAPACITY_EXCEEDED,
                "pool a100",
                "sellable capacity (physical x over-subscription)",
                "memory_mib",
                0,
                80 * GIB + 1,
                80 * GIB,
            ),
        ),
        id="pool_capacity_counts_memory",
    ),
    pytest.param(
        Case(
            org_with(
                dept=Limits.of(slices=1),
                train_per_sku={"a100-1g": Limits.of(slices=1)},
            ),
            slices(5),
            {},
            Denied(
                Reason.SKU_QUOTA_EXCEEDED,
                "queue ml/train",
                "quota for SKU a100-1g",
                "slices",
                0,
                5,
                1,
            ),
        ),
        id="queue_limits_are_reported_before_department_limits",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=10, memory_mib=0)),
            Resources(slices=20, memory_mib=1),
            {},
            Denied(Reason.DEPARTMENT_QUOTA_EXCEEDED, "department ml", "quota", "slices", 0, 20, 10),
        ),
        id="resources_are_checked_in_order_slices_memory_compute",
    ),
]


ADMISSIONS = [
    pytest.param(
        Case(org_with(), Resources(slices=100, memory_mib=600 * GIB)), id="no_limits_at_all"
    ),
    pytest.param(
        Case(org_with(dept=Limits.of(memory_mib=0)), Resources(slices=1, compute_pct=50)),
        id="limit_of_zero_ignores_a_resource_not_requested",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=10), train=Limits.of(slices=4)),
            slices(4),
            {DEPT: slices(6)},
        ),
        id="request_up_to_nominal_quota",
    ),
    pytest.param(
        Case(
            org_with(
                dept=Limits.of(slices=10), train=Limits.of(slices=4), serve=Limits.of(slices=4)
            ),
            slices(3),
            {Q_TRAIN: slices(3), DEPT: slices(3)},
            borrowed=slices(2),
        ),
        id="queue_borrows_unused_department_quota",
    ),
    pytest.param(
        Case(
            org_with(
                dept=Limits.of(slices=10),
                train=Limits.of(slices=4),
                train_borrow=Limits.of(slices=2),
            ),
            slices(1),
            {Q_TRAIN: slices(5), DEPT: slices(5)},
            borrowed=slices(1),
        ),
        id="borrowing_queue_borrows_the_whole_request_above_nominal",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=10), serve=Limits.of(slices=8)),
            slices(10),
            {},
        ),
        id="queue_without_nominal_quota_is_bounded_only_by_its_department",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=10), train=Limits.of(slices=4)),
            slices(1),
            {
                DEPT: slices(9),
                scopes.parse("department/cv"): slices(100),
                scopes.parse("queue/cv/main"): slices(100),
            },
        ),
        id="other_departments_usage_does_not_count",
    ),
    pytest.param(
        Case(
            org_with(pool_gpus=2, compute_oversubscription=2.0),
            Resources(compute_pct=400),
            {},
        ),
        id="oversubscribed_pool_sells_more_than_physical",
    ),
    pytest.param(
        Case(
            org_with(dept=Limits.of(slices=4)),
            Resources(memory_mib=10),
            {DEPT: slices(9)},
        ),
        id="over_quota_resource_not_requested_does_not_block",
    ),
]


@pytest.mark.parametrize("case", DENIALS)
def test_evaluate_denies_with_reason_and_figures(case: Case) -> None:
    decision = quotas.evaluate(case.org, make_demand(case.amount), case.usage)
    assert not decision.allowed
    assert case.denied is not None
    violation = decision.violation
    assert violation is not None
    assert decision.reason is case.denied.reason is violation.reason
    got = Denied(
        violation.reason,
        violation.owner,
        violation.limit_name,
        violation.resource,
        violation.in_use,
        violation.requested,
        violation.limit,
    )
    assert got == case.denied
    assert decision.borrowed == ZERO


@pytest.mark.parametrize("case", ADMISSIONS)
def test_evaluate_admits(case: Case) -> None:
    decision = quotas.evaluate(case.org, make_demand(case.amount), case.usage)
    assert decision.allowed, decision.violation and decision.violation.message()
    assert decision.reason is Reason.ADMITTED
    assert decision.violation is None
    assert decision.borrowed == case.borrowed


@pytest.mark.parametrize(
    ("serve_used", "borrowing_limit", "reach", "stopped_by"),
    [
        # 60 + min(30, 100 - 60 - max(10, 30)) = 70: the docstring's example.
        pytest.param(
            10, 30, 70, Reason.DEPARTMENT_QUOTA_EXCEEDED, id="docstring-example-serve-uses-10"
        ),
        pytest.param(
            0, 30, 70, Reason.DEPARTMENT_QUOTA_EXCEEDED, id="idle-serve-still-reserves-its-30"
        ),
        pytest.param(35, 30, 65, Reason.DEPARTMENT_QUOTA_EXCEEDED, id="serve-borrowing-5"),
        pytest.param(
            40, 30, 60, Reason.DEPARTMENT_QUOTA_EXCEEDED, id="serve-borrowing-all-unreserved"
        ),
        pytest.param(
            10, 5, 65, Reason.BORROWING_LIMIT_EXCEEDED, id="borrowing-limit-below-unreserved"
        ),
        pytest.param(10, 0, 60, Reason.QUEUE_QUOTA_EXCEEDED, id="no-borrowing"),
    ],
)
def test_docstring_worked_example(
    serve_used: int, borrowing_limit: int, reach: int, stopped_by: Reason
) -> None:
    """Memory in GiB: ml has 100; train nominal 60 (borrowing limit B); serve nominal 30."""
    org = org_with(
        dept=Limits.of(memory_mib=100 * GIB),
        train=Limits.of(memory_mib=60 * GIB),
        train_borrow=Limits.of(memory_mib=borrowing_limit * GIB),
        serve=Limits.of(memory_mib=30 * GIB),
    )
    usage = {Q_SERVE: mem(serve_used * GIB), DEPT: mem(serve_used * GIB)}

    fits = quotas.evaluate(org, make_demand(mem(reach * GIB)), usage)
    assert fits.allowed, fits.violation and fits.violation.message()
    assert fits.borrowed == mem((reach - 60) * GIB)

    over = quotas.evaluate(org, make_demand(mem(reach * GIB + 1)), usage)
    assert not over.allowed
    assert over.violation is not None
    assert over.violation.limit == reach * GIB
    assert over.violation.in_use == 0
    assert over.reason is stopped_by


def test_docstring_worked_example_step_by_step() -> None:
    """train fills its nominal 60 GiB, then borrows up to 70 GiB in 5 GiB steps."""
    org = org_with(
        dept=Limits.of(memory_mib=100 * GIB),
        train=Limits.of(memory_mib=60 * GIB),
        train_borrow=Limits.of(memory_mib=30 * GIB),
        serve=Limits.of(memory_mib=30 * GIB),
    )
    usage = {Q_SERVE: mem(10 * GIB), DEPT: mem(10 * GIB)}
    step = mem(5 * GIB)
    admitted = 0
    while quotas.evaluate(org, make_demand(step), usage).allowed:
        usage[Q_TRAIN] = usage.get(Q_TRAIN, ZERO) + step
        usage[DEPT] = usage[DEPT] + step
        admitted += 1
    assert usage[Q_TRAIN] == mem(70 * GIB)
    assert admitted == 14
    # serve can still reach its nominal quota.
    serve = quotas.evaluate(org, make_demand(mem(20 * GIB), queue=SERVE), usage)
    assert serve.allowed


def test_other_queue_over_its_nominal_counts_its_usage() -> None:
    org = org_with(dept=Limits.of(slices=10), train=Limits.of(slices=2), serve=Limits.of(slices=3))
    usage = {Q_SERVE: slices(6), DEPT: slices(6)}
    assert quotas.evaluate(org, make_demand(slices(4)), usage).allowed
    denied = quotas.evaluate(org, make_demand(slices(5)), usage)
    assert denied.reason is Reason.DEPARTMENT_QUOTA_EXCEEDED
    assert denied.violation is not None and denied.violation.limit == 4


def test_other_queue_without_nominal_counts_only_its_usage() -> None:
    org = org_with(dept=Limits.of(slices=10), train=Limits.of(slices=2), serve=Limits())
    usage = {Q_SERVE: slices(3), DEPT: slices(3)}
    assert quotas.evaluate(org, make_demand(slices(7)), usage).allowed
    assert not quotas.evaluate(org, make_demand(slices(8)), usage).allowed


def test_violation_message_names_the_figures_and_what_to_do() -> None:
    org = org_with(dept=Limits.of(memory_mib=100 * GIB))
    decision = quotas.evaluate(org, make_demand(mem(30 * GIB)), {DEPT: mem(80 * GIB)})
    assert decision.violation is not None
    text = decision.violation.message()
    assert text == (
        "department ml quota for memory_mib is 102400 MiB: 81920 in use + 30720 requested "
        "would exceed it by 10240. " + quotas.ADVICE_WAIT
    )


@pytest.mark.parametrize(
    ("violation", "fragments"),
    [
        pytest.param(
            Violation(
                reason=Reason.POOL_CAPACITY_EXCEEDED,
                owner="pool a100",
                limit_name="sellable capacity",
                resource="compute_pct",
                in_use=790,
                requested=25,
                limit=800,
                advice="Try another pool.",
            ),
            [
                "pool a100",
                "sellable capacity",
                "compute_pct",
                "800 % of a GPU",
                "790 in use",
                "25 requested",
                "exceed it by 15",
                "Try another pool.",
            ],
            id="compute-unit",
        ),
        pytest.param(
            Violation(
                reason=Reason.QUEUE_QUOTA_EXCEEDED,
                owner="queue ml/train",
                limit_name="nominal quota",
                resource="slices",
                in_use=0,
                requested=1,
                limit=0,
                advice="Ask.",
            ),
            [
                "queue ml/train nominal quota for slices is 0 slices",
                "0 in use + 1 requested",
                "exceed it by 1",
                "Ask.",
            ],
            id="zero-limit",
        ),
    ],
)
def test_violation_message_fragments(violation: Violation, fragments: list[str]) -> None:
    text = violation.message()
    for fragment in fragments:
        assert fragment in text


@pytest.mark.parametrize("case", DENIALS)
def test_every_denial_message_gives_advice(case: Case) -> None:
    decision = quotas.evaluate(case.org, make_demand(case.amount), case.usage)
    assert decision.violation is not None
    text = decision.violation.message()
    assert decision.violation.owner in text
    assert f"{decision.violation.in_use} in use" in text
    assert f"{decision.violation.requested} requested" in text
    assert decision.violation.advice and text.endswith(decision.violation.advice)
    assert "wait" in decision.violation.advice.lower() or "pool" in decision.violation.advice


def test_borrowing_denial_says_nominal_quotas_are_never_lent() -> None:
    org = org_with(dept=Limits.of(slices=4), train=Limits.of(slices=2), serve=Limits.of(slices=2))
    decision = quotas.evaluate(org, make_demand(slices(3)), {})
    assert decision.violation is not None
    assert decision.violation.advice.startswith("Other queues' nominal quotas are never lent out")


def test_missing_usage_rows_mean_nothing_in_use() -> None:
    org = org_with(dept=Limits.of(slices=1), train=Limits.of(slices=1))
    assert quotas.evaluate(org, make_demand(slices(1)), {}).allowed


def test_demand_on_another_sku_and_pool_skips_their_caps() -> None:
    org = make_org(
        pools=[make_pool("a100"), make_pool("l4", memory_mib_per_gpu=24 * GIB)],
        skus=[make_sku("a100-1g"), make_sku("l4-half", pools=("l4",))],
        departments=[
            make_department(
                per_sku={"a100-1g": Limits.of(slices=0)}, per_pool={"a100": Limits.of(slices=0)}
            )
        ],
        queues=[make_queue(per_sku={"a100-1g": Limits.of(slices=0)})],
    )
    decision = quotas.evaluate(org, make_demand(slices(1), sku="l4-half", pool="l4"), {})
    assert decision.allowed


# -- scope keys ---------------------------------------------------------------------------


def test_a_demands_path_is_every_row_it_counts_against_sorted_department_first() -> None:
    path = make_demand(slices(1), sku="a100-1g", pool="a100").path
    assert [scope.key for scope in path.locked] == [
        "department/ml",
        "department/ml/pool/a100",
        "department/ml/sku/a100-1g",
        "pool/a100",
        "queue/ml/train",
        "queue/ml/train/pool/a100",
        "queue/ml/train/sku/a100-1g",
    ]
    assert path.locked[0] == path.department == scopes.department("ml")
    assert path.queue == scopes.queue("ml", "train")
    assert path.pool == scopes.pool("a100")


@pytest.mark.parametrize(
    "key",
    [
        "department/ml",
        "department/ml/sku/a100-1g",
        "department/ml/pool/a100",
        "queue/ml/train",
        "queue/ml/train/sku/a100-1g",
        "queue/ml/train/pool/a100",
        "pool/a100",
    ],
)
def test_a_scope_is_built_in_one_place_and_parsed_in_one_place(key: str) -> None:
    scope = scopes.parse(key)
    assert scope.key == key
    assert scopes.parse(scope.key) == scope
    assert hash(scope) == hash(scopes.parse(key))


@pytest.mark.parametrize("key", ["", "department", "queue/ml", "pool/a/b", "team/x", "queue/a/b/c"])
def test_a_key_that_is_no_scope_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="is not a usage scope"):
        scopes.parse(key)


# -- effective demand ----------------------------------------------------------------------

R1 = Resources(slices=1, memory_mib=10, compute_pct=10)
R2 = Resources(slices=2, memory_mib=20, compute_pct=20)
R4 = Resources(slices=4, memory_mib=40, compute_pct=40)


@pytest.mark.parametrize(
    ("init", "app", "expected"),
    [
        pytest.param([], [], ZERO, id="no-containers"),
        pytest.param([], [R1, R2], R1 + R2, id="apps-are-summed"),
        pytest.param([(R4, False)], [R1], R4, id="init-bigger-than-apps"),
        pytest.param([(R1, False)], [R2, R2], R4, id="apps-bigger-than-init"),
        pytest.param([(R4, False), (R2, False)], [R1], R4, id="regular-inits-run-one-at-a-time"),
        pytest.param([(R1, True)], [R2], R1 + R2, id="sidecar-added-to-apps"),
        pytest.param(
            [(R1, True), (R4, False)], [R1], R4 + R1, id="sidecar-started-before-a-regular-init"
        ),
        pytest.param(
            [(R4, False), (R1, True)], [R1], R4, id="sidecar-started-after-a-regular-init"
        ),
        pytest.param([(R1, True), (R1, True)], [], R2, id="sidecars-only"),
        pytest.param(
            [(Resources(memory_mib=100), False)],
            [Resources(slices=2, compute_pct=50)],
            Resources(slices=2, memory_mib=100, compute_pct=50),
            id="max-is-per-resource",
        ),
    ],
)
def test_effective_demand(
    init: list[tuple[Resources, bool]], app: list[Resources], expected: Resources
) -> None:
    assert quotas.effective_demand(init, app) == expected


# -- helpers used by reports ------------------------------------------------------------------


def test_borrowing_ceiling_and_usage_limits() -> None:
    org = org_with(
        dept=Limits.of(slices=10),
        train=Limits.of(slices=4, memory_mib=8),
        train_borrow=Limits.of(slices=2),
    )
    ceiling = quotas.borrowing_ceiling(org.queues[(D, TRAIN)])
    assert ceiling.slices.value == 6
    assert ceiling.memory_mib.unlimited, "an unlimited borrowing limit has no ceiling"
    assert ceiling.compute_pct.unlimited
    assert quotas.usage_limits(org, D, None) == Limits.of(slices=10)
    assert quotas.usage_limits(org, D, TRAIN) == Limits.of(slices=4, memory_mib=8)
