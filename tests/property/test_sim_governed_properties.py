"""The replay under a configuration's quotas (simulator.governed), over generated
configurations and traces (hypothesis): quotas are never exceeded at any event, the
usage returns to nothing once every pod has ended, and the same seed gives the same
result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from governance import config, quotas, scopes
from governance.errors import ConfigError
from governance.model import Org
from governance.resources import RESOURCE_NAMES, ZERO, Limits, Resources
from governance.scopes import Scope
from governance.snapshot import Snapshot
from simulator import governed, replay
from simulator.trace import Pod

pytestmark = pytest.mark.property

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

compute = st.one_of(st.none(), st.integers(0, 16).map(lambda n: n * 25))
slices = st.one_of(st.none(), st.integers(0, 6))


@st.composite
def organisations(draw: st.DrawFn) -> dict[str, Any]:
    pools = [
        {
            "name": f"p{i}",
            "vendor": "nvidia",
            "model": "A100-80GB",
            "backend": "hami",
            "gpus": draw(st.integers(1, 12)),
            "memory_per_gpu": "80Gi",
            "compute_oversubscription": draw(st.sampled_from([1.0, 1.5])),
        }
        for i in range(draw(st.integers(1, 2)))
    ]
    names = [p["name"] for p in pools]
    skus = [
        {"name": "quarter", "memory": "20Gi", "compute": "25%", "pools": names},
        {"name": "half", "memory": "40Gi", "compute": "50%", "pools": names},
        {"name": "whole", "compute": "100%", "pools": names},
    ]
    departments = []
    for d in range(draw(st.integers(1, 3))):
        dept_compute, dept_slices = draw(compute), draw(slices)
        quota: dict[str, Any] = {"compute": _pct(dept_compute), "slices": dept_slices}
        if draw(st.booleans()):
            quota["per_sku"] = {
                draw(st.sampled_from(["quarter", "half", "whole"])): {
                    "slices": draw(st.integers(0, 4))
                }
            }
        queues = []
        for q in range(draw(st.integers(1, 3))):
            nominal_compute, nominal_slices = draw(compute), draw(slices)
            borrowing: dict[str, Any] = {}  # only where both the queue and department limit
            if dept_compute is not None and nominal_compute is not None:
                borrowing["compute"] = _pct(draw(compute))
            if dept_slices is not None and nominal_slices is not None:
                borrowing["slices"] = draw(slices)
            queues.append(
                {
                    "name": f"q{q}",
                    "pool": draw(st.sampled_from(names)),
                    "default_sku": draw(st.sampled_from(["quarter", "half", "whole"])),
                    "quota": {"compute": _pct(nominal_compute), "slices": nominal_slices},
                    "borrowing_limit": borrowing,
                }
            )
        departments.append(
            {
                "name": f"d{d}",
                "namespaces": [f"d{d}"],
                "default_queue": "q0",
                "quota": quota,
                "queues": queues,
            }
        )
    return {
        "apiVersion": "gpupool.io/v1",
        "kind": "Organisation",
        "pools": pools,
        "skus": skus,
        "departments": departments,
    }


def _pct(value: int | None) -> str:
    return "unlimited" if value is None else f"{value}%"


traces = st.lists(
    st.tuples(
        st.sampled_from([(1, 100), (1, 250), (1, 400), (1, 500), (1, 700), (1, 1000), (2, 1000)]),
        st.integers(0, 20),
        st.integers(1, 15),
    ),
    min_size=1,
    max_size=30,
)


def make_pods(raw: list[tuple[tuple[int, int], int, int]]) -> list[Pod]:
    return [
        Pod(
            name=f"p{i}",
            cpu_milli=1000,
            memory_mib=1024,
            num_gpu=gpus,
            gpu_milli=milli,
            arrival_s=float(arrival),
            duration_s=float(duration),
        )
        for i, ((gpus, milli), arrival, duration) in enumerate(raw)
    ]


def build(document: dict[str, Any]) -> Snapshot:
    try:
        return Snapshot.build(config.build_org(document))
    except ConfigError:
        assume(False)
        raise


def limits_of(org: Org) -> list[tuple[Scope, Limits]]:
    """Every limit a scope's usage must stay within, written out from the organisation:
    departments' totals and per-SKU caps, queues' nominal + borrowing limit, pools'
    sellable capacity."""
    found: list[tuple[Scope, Limits]] = []
    for name, dept in org.departments.items():
        found.append((scopes.department(name), dept.quota.total))
        for sku, cap in dept.quota.per_sku.items():
            found.append((scopes.department_sku(name, sku), cap))
    for (d, q), queue in org.queues.items():
        found.append((scopes.queue(d, q), quotas.borrowing_ceiling(queue)))
    for name, pool in org.pools.items():
        found.append((scopes.pool(name), pool.capacity_limits))
    return found


def over(limits: Limits, used: Resources) -> list[str]:
    return [
        name
        for name in RESOURCE_NAMES
        if limits.get(name).value is not None and used.get(name) > (limits.get(name).value or 0)
    ]


@SETTINGS
@given(document=organisations(), raw=traces, seed=st.integers(0, 3), on_fleet=st.booleans())
def test_quotas_are_never_exceeded_and_usage_returns_to_nothing(
    document: dict[str, Any], raw: list[tuple[tuple[int, int], int, int]], seed: int, on_fleet: bool
) -> None:
    snap = build(document)
    org = snap.org
    pods = governed.assign(make_pods(raw), org, seed=seed, on_config_fleet=on_fleet)
    nodes = governed.fleet(org)
    if not on_fleet:  # the trace's shares and no pool binding, on the same nodes
        nodes = [n.__class__(**{**vars(n), "model": "A100-80GB"}) for n in nodes]
    checked = limits_of(org)
    last: list[Mapping[Scope, Resources]] = []

    def observe(now: float, usage: Mapping[Scope, Resources]) -> None:
        for scope, limits in checked:
            broken = over(limits, usage.get(scope, ZERO))
            assert not broken, f"{scope} over its limit in {broken} at {now}: {usage.get(scope)}"
        assert all(not amount.is_zero() for amount in usage.values())
        last[:] = [dict(usage)]

    result = replay.run(
        pods, nodes, "best-fit", admission=governed.admission(snap), seed=seed, observe=observe
    )
    # every pod has a duration, and any admitted pod fits the empty fleet: all end
    assert result.still_waiting == 0
    assert last == [{}]
    again = replay.run(
        governed.assign(make_pods(raw), org, seed=seed, on_config_fleet=on_fleet),
        nodes,
        "best-fit",
        admission=governed.admission(snap),
        seed=seed,
    )
    assert again == result
    admitted = sum(d.admitted for d in result.departments.values())
    denied = sum(sum(d.denied.values()) for d in result.departments.values())
    assert admitted + denied == result.pods == len(pods)
