"""quotas.evaluate against a naive reference written from the documented rules.

The reference reads the rules as a *headroom* per resource instead of a sequence of
checks: every hard cap (queue and department per SKU and per pool, department total,
pool sellable capacity) bounds ``used + requested``; a queue with a nominal quota N
and a borrowing limit B may reach

    max(N, min(N + B, department limit - sum over other queues of max(used_i, N_i)))

(within N the department total alone applies; above it the borrowing rules do). A
resource that is not requested is not checked. Unlimited is infinity, 0 admits nothing.

Off-by-one mistakes live at the limits, so the strategies make them likely: a share of
the scenarios is moved so that the tightest limit is met exactly or passed by one, and
the test of ``_fits``/``_check`` draws usage and amounts that sum to the limit, one
over or one under it most of the time. ``test_boundaries_are_drawn_often`` counts
them (``--hypothesis-show-statistics`` shows the same as events).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from governance import quotas, resources, scopes
from governance.contract import Reason
from governance.model import Org
from governance.quotas import Demand
from governance.resources import RESOURCE_NAMES, ZERO, Limit, Limits, Resources
from tests.support.core import make_department, make_org, make_pool, make_queue, make_sku

pytestmark = pytest.mark.property

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DEPT = "d"
POOL = "p"
SKUS = ("s1", "s2")


# -- the reference ---------------------------------------------------------------------------


def _value(limit: Limit) -> float:
    return math.inf if limit.value is None else limit.value


def reference_headroom(
    org: Org, demand: Demand, usage: Mapping[str, Resources]
) -> dict[str, float]:
    """Per resource the demand asks for, how far the tightest of its limits is from
    ``used + requested`` (negative: passed by that much; infinity: no limit)."""
    dept = org.departments[demand.department]
    queue = org.queues[(demand.department, demand.queue)]
    pool = org.pools[demand.pool]
    d, q, s, p = demand.department, demand.queue, demand.sku, demand.pool

    def used(key: str, resource: str) -> int:
        return usage.get(key, ZERO).get(resource)  # type: ignore[arg-type]

    headroom: dict[str, float] = {}
    for r in RESOURCE_NAMES:
        want = demand.amount.get(r)
        if want == 0:
            continue
        caps: list[tuple[int, float]] = [
            (used(scopes.department(d), r), _value(dept.quota.total.get(r))),
            (used(scopes.pool(p), r), _value(pool.capacity_limits.get(r))),
        ]
        if s in queue.nominal.per_sku:
            caps.append(
                (used(scopes.queue_sku(d, q, s), r), _value(queue.nominal.per_sku[s].get(r)))
            )
        if p in queue.nominal.per_pool:
            caps.append(
                (used(scopes.queue_pool(d, q, p), r), _value(queue.nominal.per_pool[p].get(r)))
            )
        if s in dept.quota.per_sku:
            caps.append(
                (used(scopes.department_sku(d, s), r), _value(dept.quota.per_sku[s].get(r)))
            )
        if p in dept.quota.per_pool:
            caps.append(
                (used(scopes.department_pool(d, p), r), _value(dept.quota.per_pool[p].get(r)))
            )
        nominal = _value(queue.nominal.total.get(r))
        if nominal != math.inf:
            reserved = sum(
                max(used(scopes.queue(d, other.name), r), _value(other.nominal.total.get(r)))
                if not other.nominal.total.get(r).unlimited
                else used(scopes.queue(d, other.name), r)
                for other in org.queues_of(d)
                if other.name != q
            )
            reach = max(
                nominal,
                min(
                    nominal + _value(queue.borrowing_limit.get(r)),
                    _value(dept.quota.total.get(r)) - reserved,
                ),
            )
            caps.append((used(scopes.queue(d, q), r), reach))
        headroom[r] = min(cap - (in_use + want) for in_use, cap in caps)
    return headroom


def reference_allows(org: Org, demand: Demand, usage: Mapping[str, Resources]) -> bool:
    return all(h >= 0 for h in reference_headroom(org, demand, usage).values())


def boundary(headroom: Mapping[str, float]) -> str:
    """Where the tightest limit of a decision lies: exactly met, passed by one, or else."""
    tightest = min(headroom.values(), default=math.inf)
    return {0: "at the limit", -1: "one over"}.get(tightest, "elsewhere")  # type: ignore[call-overload]


# -- strategies --------------------------------------------------------------------------------

SMALL = 12
# Mostly finite limits: unlimited and 0 are edge cases, not the common case.
limit_values = st.one_of(
    st.integers(1, SMALL), st.integers(1, SMALL), st.integers(1, SMALL), st.none(), st.just(0)
)


@st.composite
def limits(draw: st.DrawFn, values: st.SearchStrategy[int | None] = limit_values) -> Limits:
    return Limits.of(slices=draw(values), memory_mib=draw(values), compute_pct=draw(values))


def maybe_caps(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Limits]]:
    """Usually no cap: a hard cap denies first and hides the borrowing rules."""
    return st.one_of(
        st.just({}),
        st.just({}),
        st.dictionaries(st.sampled_from(keys), limits(), max_size=len(keys)),
    )


@st.composite
def orgs(draw: st.DrawFn, *, caps: bool = True, guaranteed: bool = False) -> Org:
    """Department d with 1-3 queues on pool p. ``caps``: per-SKU/per-pool caps and a
    small pool; ``guaranteed``: the department quota covers the sum of the nominal
    quotas (every resource finite), as the borrowing guarantee assumes."""
    n = draw(st.integers(1, 3))
    finite = st.integers(0, SMALL)
    nominals = [draw(limits(finite if guaranteed else limit_values)) for _ in range(n)]
    queues = [
        make_queue(
            f"q{i}",
            department=DEPT,
            pool=POOL,
            nominal=nominals[i],
            borrowing_limit=draw(limits()),
            per_sku=draw(maybe_caps(SKUS)) if caps else None,
            per_pool=draw(maybe_caps((POOL,))) if caps else None,
        )
        for i in range(n)
    ]
    if guaranteed:
        dept_quota = Limits.of(
            **{
                r: sum(q.get(r).value or 0 for q in nominals) + draw(st.integers(0, 4))
                for r in RESOURCE_NAMES
            }
        )
    else:
        dept_quota = draw(limits(st.one_of(st.integers(0, 3 * SMALL), st.none())))
    return make_org(
        pools=[
            make_pool(
                POOL,
                gpus=draw(st.sampled_from([0, 1, 1, 2, 2, 2])) if caps else 100,
                memory_mib_per_gpu=draw(st.integers(1, 3 * SMALL)) if caps else 100,
                memory_oversubscription=draw(st.sampled_from([1.0, 1.5, 2.0])),
                compute_oversubscription=draw(st.sampled_from([1.0, 2.0])),
            )
        ],
        skus=[make_sku(s, pools=(POOL,)) for s in SKUS],
        departments=[
            make_department(
                DEPT,
                default_queue="q0",
                quota=dept_quota,
                per_sku=draw(maybe_caps(SKUS)) if caps else None,
                per_pool=draw(maybe_caps((POOL,))) if caps else None,
            )
        ],
        queues=queues,
    )


# Compute on the same small scale as the others (pool capacity is gpus x 100 x factor:
# with 0-2 GPUs it binds sometimes).
small_amounts = st.builds(
    Resources,
    slices=st.integers(0, SMALL),
    memory_mib=st.integers(0, SMALL),
    compute_pct=st.integers(0, SMALL),
)


# A demand in one resource only is common (and lets the others' limits stay out of
# the way of the rule under test).
single_amounts = st.one_of(
    st.builds(Resources, slices=st.integers(0, SMALL)),
    st.builds(Resources, memory_mib=st.integers(0, SMALL)),
    st.builds(Resources, compute_pct=st.integers(0, SMALL)),
)


@st.composite
def demands(draw: st.DrawFn, org: Org) -> Demand:
    queue = draw(st.sampled_from(sorted(q for _, q in org.queues)))
    return Demand(
        department=DEPT,
        queue=queue,
        sku=draw(st.sampled_from(SKUS)),
        pool=POOL,
        amount=draw(st.one_of(small_amounts, single_amounts)),
    )


@st.composite
def usages(draw: st.DrawFn, org: Org) -> dict[str, Resources]:
    """Usage shaped like a history: each queue's rows, the department's the sum of
    its queues' (sometimes plus or minus a stray amount), the pool's at least the
    department's; per-SKU and per-pool rows within their totals. evaluate is pure, so
    the figures need not be exactly consistent."""
    small = small_amounts
    usage: dict[str, Resources] = {}
    dept_total = ZERO
    for _, q in sorted(org.queues):
        if not draw(st.booleans()):
            continue
        total = draw(small)
        dept_total = dept_total + total
        usage[scopes.queue(DEPT, q)] = total
        for key in (scopes.queue_sku(DEPT, q, SKUS[0]), scopes.queue_pool(DEPT, q, POOL)):
            if draw(st.booleans()):
                usage[key] = total
    usage[scopes.department(DEPT)] = dept_total + draw(st.one_of(st.just(ZERO), small))
    usage[scopes.pool(POOL)] = dept_total + draw(
        st.one_of(small, st.just(Resources(compute_pct=190)))
    )
    for key in (scopes.department_sku(DEPT, SKUS[0]), scopes.department_pool(DEPT, POOL)):
        if draw(st.booleans()):
            usage[key] = draw(small)
    return usage


Scenario = tuple[Org, Demand, dict[str, Resources]]


@st.composite
def scenarios(draw: st.DrawFn, *, caps: bool = True) -> Scenario:
    org = draw(orgs(caps=caps))
    return org, draw(demands(org)), draw(usages(org))


@st.composite
def boundary_scenarios(draw: st.DrawFn, *, caps: bool = True) -> Scenario:
    """A scenario whose demand is moved so that its tightest limit is met exactly or
    passed by one (a resource with a finite limit: its amount shifted by its headroom;
    a resource still past that mark asks for less, down to nothing)."""
    org, demand, usage = draw(scenarios(caps=caps))
    headroom = reference_headroom(org, demand, usage)
    finite = sorted(r for r, h in headroom.items() if h != math.inf)
    if not finite:
        return org, demand, usage
    target = draw(st.sampled_from([0, -1]))
    binding = draw(st.sampled_from(finite))
    amount = {r: demand.amount.get(r) for r in RESOURCE_NAMES}
    for r in finite:
        shift = int(headroom[r]) - target
        if r == binding:
            amount[r] = max(1, amount[r] + shift)
        elif shift < 0:  # this one is past the target: ask for less
            amount[r] = max(0, amount[r] + shift)
    moved = Demand(
        department=demand.department,
        queue=demand.queue,
        sku=demand.sku,
        pool=demand.pool,
        amount=Resources(**amount),
    )
    return org, moved, usage


def any_scenario() -> st.SearchStrategy[Scenario]:
    return st.one_of(
        scenarios(), scenarios(caps=False), boundary_scenarios(), boundary_scenarios(caps=False)
    )


# -- properties ---------------------------------------------------------------------------------


def _borrowing_example() -> tuple[Org, Demand, dict[str, Resources]]:
    """q0 (nominal 2, borrowing 10) at its nominal asks 5 more; idle q1 reserves 5 of
    the department's 10: q0 may reach only 5."""
    org = make_org(
        pools=[make_pool(POOL, gpus=100)],
        skus=[make_sku(s, pools=(POOL,)) for s in SKUS],
        departments=[make_department(DEPT, default_queue="q0", quota=Limits.of(slices=10))],
        queues=[
            make_queue(
                "q0",
                department=DEPT,
                pool=POOL,
                nominal=Limits.of(slices=2),
                borrowing_limit=Limits.of(slices=10),
            ),
            make_queue("q1", department=DEPT, pool=POOL, nominal=Limits.of(slices=5)),
            make_queue("q2", department=DEPT, pool=POOL, nominal=Limits.of(slices=1)),
        ],
    )
    usage = {
        scopes.queue(DEPT, "q0"): Resources(slices=2),
        scopes.queue(DEPT, "q2"): Resources(slices=2),
        scopes.department(DEPT): Resources(slices=4),
    }
    demand = Demand(department=DEPT, queue="q0", sku="s1", pool=POOL, amount=Resources(slices=2))
    return org, demand, usage


@SETTINGS
@given(any_scenario())
@example(_borrowing_example())
def test_evaluate_agrees_with_the_reference(
    scenario: tuple[Org, Demand, dict[str, Resources]],
) -> None:
    org, demand, usage = scenario
    decision = quotas.evaluate(org, demand, usage)
    event(boundary(reference_headroom(org, demand, usage)))
    assert decision.allowed is reference_allows(org, demand, usage)
    if decision.allowed:
        assert decision.reason is Reason.ADMITTED
        assert decision.violation is None
    else:
        v = decision.violation
        assert v is not None and v.reason is decision.reason
        # The violation it reports is real: its own figures break its own limit.
        assert v.requested == demand.amount.get(v.resource) > 0
        assert v.in_use + v.requested > v.limit
        assert str(v.limit) in v.message() and v.advice in v.message()


def _admitted(org: Org, demand: Demand, usage: Mapping[str, Resources]) -> Demand:
    """The demand, halved until it is admitted (an empty demand always is): filtering
    with assume() would throw most examples away."""
    while not quotas.evaluate(org, demand, usage).allowed:
        assert not demand.amount.is_zero()
        halved = Resources(**{r: demand.amount.get(r) // 2 for r in RESOURCE_NAMES})
        demand = Demand(
            department=demand.department,
            queue=demand.queue,
            sku=demand.sku,
            pool=demand.pool,
            amount=halved,
        )
    return demand


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(scenarios(), boundary_scenarios()), st.data())
def test_a_smaller_demand_or_usage_is_admitted_whenever_a_larger_one_is(
    scenario: tuple[Org, Demand, dict[str, Resources]], data: st.DataObject
) -> None:
    org, demand, usage = scenario
    demand = _admitted(org, demand, usage)
    smaller = Resources(
        **{r: data.draw(st.integers(0, demand.amount.get(r)), label=r) for r in RESOURCE_NAMES}
    )
    less = Demand(
        department=demand.department,
        queue=demand.queue,
        sku=demand.sku,
        pool=demand.pool,
        amount=smaller,
    )
    assert quotas.evaluate(org, less, usage).allowed
    # And at less usage anywhere (other queues using less reserve no more).
    lighter = {
        key: Resources(**{r: data.draw(st.integers(0, value.get(r))) for r in RESOURCE_NAMES})
        for key, value in usage.items()
    }
    assert quotas.evaluate(org, demand, lighter).allowed


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(scenarios(), boundary_scenarios()))
def test_admitted_demand_never_takes_a_department_past_its_limits(
    scenario: tuple[Org, Demand, dict[str, Resources]],
) -> None:
    org, demand, usage = scenario
    demand = _admitted(org, demand, usage)
    decision = quotas.evaluate(org, demand, usage)
    dept = org.departments[DEPT]
    queue = org.queues[(DEPT, demand.queue)]
    ceiling = quotas.borrowing_ceiling(queue)
    for r in RESOURCE_NAMES:
        want = demand.amount.get(r)
        if want == 0:
            continue
        after = usage.get(scopes.department(DEPT), ZERO).get(r) + want
        assert dept.quota.total.get(r).admits(after)
        queue_after = usage.get(scopes.queue(DEPT, demand.queue), ZERO).get(r) + want
        assert ceiling.get(r).admits(queue_after)
        pool_after = usage.get(scopes.pool(POOL), ZERO).get(r) + want
        assert org.pools[POOL].capacity_limits.get(r).admits(pool_after)
        # borrowed is exactly how far the request takes the queue above its nominal.
        nominal = queue.nominal.total.get(r)
        if nominal.value is None:
            assert decision.borrowed.get(r) == 0
        else:
            before = queue_after - want
            assert decision.borrowed.get(r) == max(0, queue_after - max(nominal.value, before))


def _apply(usage: dict[str, Resources], demand: Demand, sign: int) -> None:
    delta = demand.amount if sign > 0 else ZERO - demand.amount
    for key in demand.path.locked:
        usage[key] = usage.get(key, ZERO) + delta


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_history_keeps_every_limit_and_every_queue_can_reach_its_nominal_quota(
    data: st.DataObject,
) -> None:
    """Admit a random sequence of demands (with releases) from zero usage: no limit is
    ever passed, and a queue below its nominal quota can always be admitted up to it
    when the department quota covers the sum of the nominal quotas."""
    org = data.draw(orgs(caps=False, guaranteed=True), label="org")
    dept = org.departments[DEPT]
    usage: dict[str, Resources] = {}
    live: list[Demand] = []
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        if live and data.draw(st.booleans(), label="release?"):
            _apply(usage, live.pop(data.draw(st.integers(0, len(live) - 1))), -1)
            continue
        demand = data.draw(demands(org), label="demand")
        if quotas.evaluate(org, demand, usage).allowed:
            _apply(usage, demand, +1)
            live.append(demand)
        for r in RESOURCE_NAMES:
            dept_used = usage.get(scopes.department(DEPT), ZERO).get(r)
            assert dept.quota.total.get(r).admits(dept_used)
            for (_, name), queue in org.queues.items():
                queue_used = usage.get(scopes.queue(DEPT, name), ZERO).get(r)
                assert quotas.borrowing_ceiling(queue).get(r).admits(queue_used)
    # The guarantee: each queue can still reach its nominal quota.
    for (_, name), queue in org.queues.items():
        for r in RESOURCE_NAMES:
            nominal = queue.nominal.total.get(r).value
            assert nominal is not None
            queue_used = usage.get(scopes.queue(DEPT, name), ZERO).get(r)
            if queue_used >= nominal:
                continue
            top_up = Demand(
                department=DEPT,
                queue=name,
                sku=SKUS[0],
                pool=POOL,
                amount=Resources(**{r: nominal - queue_used}),
            )
            decision = quotas.evaluate(org, top_up, usage)
            assert decision.allowed, decision.violation and decision.violation.message()


@SETTINGS
@given(any_scenario())
def test_a_demand_that_does_not_borrow_is_decided_without_the_other_queues(
    scenario: tuple[Org, Demand, dict[str, Resources]],
) -> None:
    """The ledger reads the department's other queues only when quotas.borrows says
    so: otherwise the decision must be the same without their rows."""
    org, demand, usage = scenario
    own = scopes.queue(demand.department, demand.queue)
    others = {
        scopes.queue(q.department, q.name)
        for q in org.queues_of(demand.department)
        if scopes.queue(q.department, q.name) != own
    }
    without = {k: v for k, v in usage.items() if k not in others}
    queue = org.queues[(demand.department, demand.queue)]
    past_nominal = any(
        queue.nominal.total.get(r).value is not None
        and demand.amount.get(r) > 0
        and usage.get(own, ZERO).get(r) + demand.amount.get(r)
        > (queue.nominal.total.get(r).value or 0)
        for r in RESOURCE_NAMES
    )
    assert quotas.borrows(org, demand, usage) is past_nominal
    if not past_nominal:
        assert quotas.evaluate(org, demand, without) == quotas.evaluate(org, demand, usage)


# Figures far above the small limits, as real usage is (MiB of memory, percent of
# compute over many GPUs).
wide_amounts = st.builds(
    Resources,
    slices=st.integers(0, 20),
    memory_mib=st.integers(0, 400_000),
    compute_pct=st.integers(0, 2_000),
)
# used + amount - limit, per resource: mostly at the limit, one over or one under.
limit_offsets = st.sampled_from([0, 0, 1, 1, -1, 3])


@st.composite
def near_limits(draw: st.DrawFn) -> tuple[Limits, Resources, Resources]:
    """Limits, a usage and an amount: for a resource with a finite limit, usually a
    usage and an amount that sum to the limit plus a small offset (the amount 0 at
    times: not asked for); otherwise, and now and then, both drawn from the wide range."""
    caps = draw(limits())
    wide_used, wide_amount = draw(wide_amounts), draw(wide_amounts)
    used: dict[str, int] = {}
    amount: dict[str, int] = {}
    for r in RESOURCE_NAMES:
        cap = caps.get(r).value
        if cap is None or draw(st.integers(0, 5)) == 0:
            used[r], amount[r] = wide_used.get(r), wide_amount.get(r)
            continue
        total = max(0, cap + draw(limit_offsets))
        amount[r] = draw(st.integers(0, total))
        used[r] = total - amount[r]
    return caps, Resources(**used), Resources(**amount)


def limit_boundaries(caps: Limits, used: Resources, amount: Resources) -> list[str]:
    """For each resource asked for, where used + amount lies against its finite limit."""
    out = []
    for r in RESOURCE_NAMES:
        cap = caps.get(r).value
        if cap is not None and amount.get(r) > 0:
            over = used.get(r) + amount.get(r) - cap
            out.append({0: "at the limit", 1: "one over"}.get(over, "elsewhere"))
    return out


@SETTINGS
@given(near_limits())
def test_a_limit_is_broken_exactly_when_a_resource_asked_for_goes_past_it(
    case: tuple[Limits, Resources, Resources],
) -> None:
    """_check's quick test (resources.fits) and its loop, against the rule written per
    resource: a resource the amount asks for, whose limit used + amount exceeds."""
    caps, used, amount = case
    for where in limit_boundaries(caps, used, amount):
        event(where)
    broken = [
        name
        for name in RESOURCE_NAMES
        if caps.get(name).value is not None
        and amount.get(name) > 0
        and used.get(name) + amount.get(name) > (caps.get(name).value or 0)
    ]
    violation = quotas._check(Reason.QUEUE_QUOTA_EXCEEDED, "scope", "limit", caps, used, amount)
    assert resources.fits(caps, used, amount) == (len(broken) == 0)
    assert (violation.resource if violation is not None else None) == (
        broken[0] if broken else None
    )


def test_boundaries_are_drawn_often() -> None:
    """The strategies above put a fair share of their examples exactly at a limit and
    one over it (the old ones put none: 0 of 900 examples of the _fits test summed to
    the limit, and 208 of 300 scenarios used more memory than any limit allows)."""
    seen: Counter[str] = Counter()

    @settings(max_examples=300, database=None, derandomize=True, deadline=None)
    @given(any_scenario(), near_limits())
    def draw(scenario: Scenario, case: tuple[Limits, Resources, Resources]) -> None:
        org, demand, usage = scenario
        seen["scenario " + boundary(reference_headroom(org, demand, usage))] += 1
        seen["scenario usage above 1,000 MiB"] += any(u.memory_mib > 1000 for u in usage.values())
        for where in limit_boundaries(*case):
            seen["limit " + where] += 1

    draw()
    scenarios_drawn = sum(
        seen[f"scenario {where}"] for where in ("at the limit", "one over", "elsewhere")
    )
    # Half the expected shares at the most (scenarios: 8-12% at the limit, 12-25% one
    # over; the _fits cases: 13-20% each), so that the check is about being drawn at
    # all, not about hypothesis's exact choices.
    assert scenarios_drawn >= 100
    assert seen["scenario at the limit"] >= scenarios_drawn // 20, seen
    assert seen["scenario one over"] >= scenarios_drawn // 20, seen
    assert seen["scenario usage above 1,000 MiB"] == 0, seen
    asked = sum(v for k, v in seen.items() if k.startswith("limit "))
    assert seen["limit at the limit"] >= asked // 16, seen
    assert seen["limit one over"] >= asked // 16, seen
