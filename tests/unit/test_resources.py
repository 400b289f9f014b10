"""Quantities and limits (governance.resources), SKU demand as sold and pool capacity
(governance.model): the arithmetic every quota decision rests on."""

from __future__ import annotations

import pytest

from governance.resources import (
    NO_LIMITS,
    RESOURCE_NAMES,
    UNLIMITED,
    ZERO,
    Limit,
    Limits,
    Resources,
)
from tests.support.core import GIB, make_pool, make_sku

pytestmark = pytest.mark.unit


# -- Resources ---------------------------------------------------------------------------


def test_resources_add_and_subtract_per_resource() -> None:
    a = Resources(slices=1, memory_mib=100, compute_pct=30)
    b = Resources(slices=2, memory_mib=50, compute_pct=5)
    assert a + b == Resources(slices=3, memory_mib=150, compute_pct=35)
    assert a - b == Resources(slices=-1, memory_mib=50, compute_pct=25)
    assert (a + b) - b == a


def test_resources_max_is_element_wise() -> None:
    a = Resources(slices=1, memory_mib=100, compute_pct=30)
    b = Resources(slices=2, memory_mib=50, compute_pct=30)
    assert a.max(b) == Resources(slices=2, memory_mib=100, compute_pct=30)


def test_resources_zero_get_and_as_dict() -> None:
    assert ZERO.is_zero()
    assert Resources().is_zero()
    assert not Resources(compute_pct=1).is_zero()
    r = Resources(slices=1, memory_mib=2, compute_pct=3)
    assert [r.get(n) for n in RESOURCE_NAMES] == [1, 2, 3]
    assert r.as_dict() == {"slices": 1, "memory_mib": 2, "compute_pct": 3}


# -- Limit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "total", "admitted"),
    [
        pytest.param(UNLIMITED, 10**12, True, id="unlimited-admits-anything"),
        pytest.param(UNLIMITED, 0, True, id="unlimited-admits-zero"),
        pytest.param(Limit(0), 1, False, id="zero-admits-nothing"),
        pytest.param(Limit(0), 0, True, id="zero-admits-an-empty-total"),
        pytest.param(Limit(10), 10, True, id="total-equal-to-limit-fits"),
        pytest.param(Limit(10), 11, False, id="one-above-limit-does-not"),
    ],
)
def test_limit_admits_totals_up_to_its_value(limit: Limit, total: int, admitted: bool) -> None:
    assert limit.admits(total) is admitted


def test_unlimited_is_not_zero() -> None:
    assert UNLIMITED.unlimited
    assert not Limit(0).unlimited
    assert Limit(0) != UNLIMITED
    assert str(UNLIMITED) == "unlimited"
    assert str(Limit(0)) == "0"


@pytest.mark.parametrize(
    ("limit", "used", "headroom"),
    [
        pytest.param(UNLIMITED, 5, None, id="unlimited-has-no-headroom-figure"),
        pytest.param(Limit(10), 3, 7, id="limit-minus-used"),
        pytest.param(Limit(10), 10, 0, id="full"),
        pytest.param(Limit(10), 12, 0, id="over-is-never-negative"),
        pytest.param(Limit(0), 0, 0, id="zero-limit"),
    ],
)
def test_limit_headroom(limit: Limit, used: int, headroom: int | None) -> None:
    assert limit.headroom(used) == headroom


@pytest.mark.parametrize(
    ("a", "b", "total"),
    [
        pytest.param(Limit(3), Limit(4), Limit(7), id="finite-plus-finite"),
        pytest.param(Limit(3), UNLIMITED, UNLIMITED, id="finite-plus-unlimited"),
        pytest.param(UNLIMITED, Limit(3), UNLIMITED, id="unlimited-plus-finite"),
        pytest.param(Limit(0), Limit(0), Limit(0), id="zero-plus-zero-stays-zero"),
        pytest.param(Limit(0), UNLIMITED, UNLIMITED, id="zero-plus-unlimited"),
    ],
)
def test_limit_sum_is_unlimited_when_either_is(a: Limit, b: Limit, total: Limit) -> None:
    assert a + b == total


# -- Limits ------------------------------------------------------------------------------


def test_limits_default_to_unlimited() -> None:
    assert Limits().is_unlimited()
    assert NO_LIMITS.is_unlimited()
    assert Limits.of() == NO_LIMITS
    assert all(NO_LIMITS.get(n) is UNLIMITED or NO_LIMITS.get(n).unlimited for n in RESOURCE_NAMES)


def test_limits_of_sets_only_the_given_resources() -> None:
    limits = Limits.of(memory_mib=0)
    assert limits.memory_mib == Limit(0)
    assert limits.slices.unlimited
    assert limits.compute_pct.unlimited
    assert not limits.is_unlimited()


def test_limits_add_per_resource() -> None:
    a = Limits.of(slices=2, memory_mib=100)
    b = Limits.of(slices=3, compute_pct=50)
    total = a + b
    assert total.slices == Limit(5)
    assert total.memory_mib.unlimited
    assert total.compute_pct.unlimited


# -- SKU demand as sold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sku", "count", "expected"),
    [
        pytest.param(
            make_sku(memory_mib=8 * GIB, compute_pct=30),
            2,
            Resources(slices=2, memory_mib=16 * GIB, compute_pct=60),
            id="two-slices-of-8gib-30pct-use-16gib-60pct",
        ),
        pytest.param(
            make_sku(memory_mib=None, memory_pct=50, compute_pct=50),
            1,
            Resources(slices=1, memory_mib=40 * GIB, compute_pct=50),
            id="memory-pct-resolved-on-the-pools-card",
        ),
        pytest.param(
            make_sku(memory_mib=None, memory_pct=None, compute_pct=100),
            3,
            Resources(slices=3, memory_mib=240 * GIB, compute_pct=300),
            id="no-memory-given-means-a-whole-card",
        ),
        pytest.param(
            make_sku(memory_mib=80 * GIB, compute_pct=100, gpus_per_slice=4),
            2,
            Resources(slices=2, memory_mib=8 * 80 * GIB, compute_pct=800),
            id="gpus-per-slice-multiplies-memory-and-compute-not-slices",
        ),
        pytest.param(
            make_sku(memory_mib=8 * GIB, memory_pct=50, compute_pct=10),
            1,
            Resources(slices=1, memory_mib=8 * GIB, compute_pct=10),
            id="memory-mib-wins-over-memory-pct",
        ),
    ],
)
def test_sku_demand_is_counted_as_sold(sku, count: int, expected: Resources) -> None:
    assert sku.demand(count, make_pool(memory_mib_per_gpu=80 * GIB)) == expected


def test_sku_memory_pct_is_resolved_per_pool() -> None:
    sku = make_sku(memory_mib=None, memory_pct=25, pools=("a100", "l4"))
    a100 = make_pool("a100", memory_mib_per_gpu=80 * GIB)
    l4 = make_pool("l4", memory_mib_per_gpu=24 * GIB)
    assert sku.memory_mib_on(a100) == 20 * GIB
    assert sku.memory_mib_on(l4) == 6 * GIB
    assert sku.demand(2, l4).memory_mib == 12 * GIB


def test_sku_memory_pct_rounds_down_to_whole_mib() -> None:
    sku = make_sku(memory_mib=None, memory_pct=33)
    pool = make_pool(memory_mib_per_gpu=1000)
    assert sku.memory_mib_on(pool) == 330
    assert (
        make_sku(memory_mib=None, memory_pct=1).memory_mib_on(make_pool(memory_mib_per_gpu=150))
        == 1
    )


# -- Pool capacity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "physical", "sellable"),
    [
        pytest.param(
            make_pool(gpus=8, memory_mib_per_gpu=80 * GIB),
            Resources(memory_mib=640 * GIB, compute_pct=800),
            Resources(memory_mib=640 * GIB, compute_pct=800),
            id="no-oversubscription-sells-the-physical-capacity",
        ),
        pytest.param(
            make_pool(gpus=4, memory_mib_per_gpu=24 * GIB, compute_oversubscription=2.0),
            Resources(memory_mib=96 * GIB, compute_pct=400),
            Resources(memory_mib=96 * GIB, compute_pct=800),
            id="compute-oversubscribed-twice",
        ),
        pytest.param(
            make_pool(gpus=2, memory_mib_per_gpu=1000, memory_oversubscription=1.5),
            Resources(memory_mib=2000, compute_pct=200),
            Resources(memory_mib=3000, compute_pct=200),
            id="memory-oversubscribed-by-half",
        ),
        pytest.param(
            make_pool(gpus=0),
            Resources(),
            Resources(),
            id="empty-pool-sells-nothing",
        ),
    ],
)
def test_pool_physical_and_sellable_capacity(
    pool, physical: Resources, sellable: Resources
) -> None:
    assert pool.physical == physical
    assert pool.sellable == sellable
    limits = pool.capacity_limits
    assert limits.memory_mib == Limit(sellable.memory_mib)
    assert limits.compute_pct == Limit(sellable.compute_pct)
    assert limits.slices.unlimited, "a pool caps memory and compute, not the slice count"


def test_pool_sellable_capacity_is_not_lost_to_float_rounding() -> None:
    """Regression: 100 x 1.15 is 114.99999999999999 in floats; sellable must be 115."""
    pool = make_pool(gpus=1, memory_mib_per_gpu=1000, compute_oversubscription=1.15)
    assert pool.sellable.compute_pct == 115
    assert make_pool(gpus=3, memory_mib_per_gpu=100, memory_oversubscription=1.1).sellable == (
        Resources(memory_mib=330, compute_pct=300)
    )
    assert make_pool(gpus=1, memory_mib_per_gpu=3, memory_oversubscription=1.5).sellable == (
        Resources(memory_mib=4, compute_pct=100)
    ), "a fraction of a MiB is not sold"
