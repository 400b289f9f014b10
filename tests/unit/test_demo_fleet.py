"""The demo's fleet: nodes shared out between examples/org.yaml's pools, the organisation
resized to them, and pods placed on their GPUs with HAMi's binpack and spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo import fleet
from demo.placement import Policy, Scheduler, Want
from governance import config

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


def node(
    name: str, *, pool: str = "p", gpus: int = 2, memory: int = 80, compute: int = 100
) -> fleet.Node:
    return fleet.Node(
        name=name,
        pool=pool,
        model="m",
        gpus=gpus,
        memory_mib=memory,
        memory_capacity_mib=memory,
        compute_capacity_pct=compute,
    )


def test_26_nodes_are_examples_orgs_fleet_as_declared() -> None:
    document, org = fleet.load(EXAMPLE)
    nodes = fleet.plan(org, 26)
    per_pool = {name: sum(n.gpus for n in nodes if n.pool == name) for name in org.pools}
    assert per_pool == {name: pool.gpus for name, pool in org.pools.items()}
    assert fleet.resized(document, nodes) == document


@pytest.mark.parametrize("nodes", [5, 7, 10, 40])
def test_fewer_nodes_shrink_every_pool_and_change_nothing_else(nodes: int) -> None:
    document, org = fleet.load(EXAMPLE)
    planned = fleet.plan(org, nodes)
    assert len(planned) == nodes
    assert {n.pool for n in planned} == set(org.pools)  # at least one node each
    resized = config.build_org(fleet.resized(document, planned))
    for name, pool in resized.pools.items():
        assert pool.gpus == fleet.NODE_GPUS * sum(1 for n in planned if n.pool == name)
    assert resized.departments == org.departments
    assert resized.queues == org.queues
    assert resized.skus == org.skus
    assert resized.role_bindings == org.role_bindings
    a100 = next(n for n in planned if n.pool == "a100-hami")
    assert a100.compute_capacity_pct == 150  # the pool's compute over-subscription


def test_too_few_nodes_for_the_pools_is_refused_with_the_minimum() -> None:
    _document, org = fleet.load(EXAMPLE)
    with pytest.raises(ValueError, match="--nodes 5 or more"):
        fleet.plan(org, 4)


def test_binpack_fills_the_busiest_node_and_gpu_spread_the_emptiest() -> None:
    quarter = [Want(container="main", gpus=1, memory_mib=20, compute_pct=25)]
    packed = Scheduler([node("a"), node("b")], Policy.BINPACK)
    spread = Scheduler([node("a"), node("b")], Policy.SPREAD)
    packed_on = [packed.place("p", quarter) for _ in range(3)]
    spread_on = [spread.place("p", quarter) for _ in range(3)]
    assert [(p.node, p.gpus["main"]) for p in packed_on if p] == [("a", (0,))] * 3
    assert [(p.node, p.gpus["main"]) for p in spread_on if p] == [
        ("a", (0,)),
        ("b", (0,)),
        ("a", (1,)),
    ]


def test_a_whole_card_needs_an_empty_gpu_and_a_multi_gpu_pod_one_node() -> None:
    scheduler = Scheduler([node("a"), node("b")])
    slice_ = [Want(container="main", gpus=1, memory_mib=20, compute_pct=25)]
    whole = [Want(container="main", gpus=1, memory_mib=80, compute_pct=100)]
    pair = [Want(container="main", gpus=2, memory_mib=80, compute_pct=100)]
    first = scheduler.place("p", slice_)
    assert first is not None and (first.node, first.gpus["main"]) == ("a", (0,))
    card = scheduler.place("p", whole)
    assert card is not None and (card.node, card.gpus["main"]) == ("a", (1,))
    both = scheduler.place("p", pair)
    assert both is not None and (both.node, both.gpus["main"]) == ("b", (0, 1))
    assert scheduler.place("p", whole) is None  # GPU a/0 is shared, nothing else is free
    assert scheduler.place("other-pool", slice_) is None
    scheduler.release(first, slice_)
    again = scheduler.place("p", whole)
    assert again is not None and (again.node, again.gpus["main"]) == ("a", (0,))
    assert scheduler.allocated("a") == [(80, 100), (80, 100)]


def test_compute_over_subscription_lets_more_slices_share_a_gpu() -> None:
    half = [Want(container="main", gpus=1, memory_mib=20, compute_pct=50)]
    plain = Scheduler([node("a", gpus=1)])
    over = Scheduler([node("a", gpus=1, compute=150)])
    assert sum(plain.place("p", half) is not None for _ in range(4)) == 2
    assert sum(over.place("p", half) is not None for _ in range(4)) == 3
