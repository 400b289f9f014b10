"""The fragmentation measure and the placement policies, checked by hand on tiny
nodes: every expected number below is worked out in the comment beside it."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import fragmentation, policies
from simulator.fleet import Fleet, Kinds
from simulator.policies.base import Setup
from simulator.policies.fgd import candidate_moves
from simulator.scheduler import Scheduler
from simulator.trace import Node, Pod
from tests.support.sim import make_node, make_pod

pytestmark = pytest.mark.unit

# target workload: A (4 cores, half a GPU) twice, B (8 cores, a GPU) once, C (CPU only)
A = make_pod("a", cpu=4000, milli=500)
B = make_pod("b", cpu=8000)
C = make_pod("c", cpu=2000, gpus=0)
WORKLOAD = (A, A, B, C)


def target() -> fragmentation.Target:
    return fragmentation.target_of(WORKLOAD, ("T4",))


def test_target_keeps_the_popular_types_and_their_shares() -> None:
    t = target()
    # most popular first; equal counts in a fixed order (fewer GPUs first)
    assert [(x.cpu_milli, x.gpu_milli) for x in t.types] == [(4000, 500), (2000, 0), (8000, 1000)]
    assert t.probability.tolist() == [0.5, 0.25, 0.25]
    # 95% of 100 pods: 60 + 30 cover 90, the next type (5) reaches 95; the last is cut
    many = [A] * 60 + [B] * 30 + [C] * 5 + [make_pod(cpu=1, milli=100)] * 5
    cut = fragmentation.target_of(many, ("T4",))
    assert len(cut) == 3 and cut.probability.tolist() == pytest.approx([60 / 95, 30 / 95, 5 / 95])


def test_node_fragmentation_by_hand() -> None:
    # CPU 6000, GPUs [1000, 300]. A hostable (a GPU >= 500, 6000 >= 4000): the 300 is a
    # fragment. B not (needs 8000 CPU): all 1300. C is CPU-only: all 1300.
    # F = 0.5 * 300 + 0.25 * 1300 + 0.25 * 1300 = 800
    frag = fragmentation.node_fragmentation(target(), cpu_free=6000, gpu_free=[1000, 300], model=0)
    assert frag == 800.0


def test_fragmentation_after_moves_matches_the_measure_of_the_new_state() -> None:
    t = target()
    moves = fragmentation.Moves(
        cpu_milli=np.array([4000, 2000, 1000]),
        count=np.array([1, 1, 0]),
        before=np.array([1000, 1000, 0]),
        after=np.array([500, 0, 0]),
    )
    now, after = fragmentation.fragmentation_after(
        t, cpu_free=6000, gpu_free=np.array([1000, 300]), model=0, moves=moves
    )
    assert now == 800.0
    # A on GPU 0: CPU 2000, GPUs [500, 300]: nothing hostable, F = all 800
    # a whole GPU: CPU 4000, GPUs [0, 300]: nothing hostable, F = all 300
    # CPU-only 1000: CPU 5000, GPUs unchanged: F = 800 as before
    assert after.tolist() == [800.0, 300.0, 800.0]


def build(nodes: list[Node], pods: list[Pod], name: str) -> tuple[Fleet, Kinds, policies.Policy]:
    fleet = Fleet(nodes)
    kinds = Kinds.of(pods, fleet.models)
    setup = Setup(kinds=kinds, models=fleet.models, workload=tuple(pods))
    return fleet, kinds, policies.create(name, setup)


KINDS = [
    make_pod("share", cpu=1000, milli=300),
    make_pod("one", cpu=1000),
    make_pod("two", cpu=1000, gpus=2),
    make_pod("cpu", cpu=1000, gpus=0),
]


def scores(name: str, node: Node, placed: list[tuple[int, tuple[int, ...]]] = ()) -> list[float]:
    fleet, kinds, policy = build([node], KINDS, name)
    for kind, gpus in placed:
        fleet.allocate(0, kinds, kind, gpus)
    return policy.score(fleet, 0, fleet.fits(kinds, 0)).score.tolist()


def test_best_fit_scores_by_hand() -> None:
    # one GPU (1000) on 32 cores / 2 GPUs: CPU left 31000/128000 = 0.2421875, GPU left
    # 1000/8000 = 0.125, half each: 0.18359375; 100 x (1 - that) = 81.64 -> 81
    assert scores("best-fit", make_node(gpus=2, cpu=32_000))[1] == 81


def test_dot_product_scores_by_hand() -> None:
    # free (32000/128000, 2000/8000) . request (1000/128000, 1000/8000)
    # = 0.25 x 0.0078125 + 0.25 x 0.125 = 0.033203125, halved 0.0166015625 -> 98.34 -> 98
    assert scores("dot-product", make_node(gpus=2, cpu=32_000))[1] == 98


def test_packing_bands_by_hand() -> None:
    node = make_node(gpus=2)
    # an empty node: 33 - 2 GPUs = 31 for every GPU pod; CPU-only pods score 0
    assert scores("packing", node) == [31, 31, 31, 0]
    # two 300s on GPU 0 ([400, 1000] free): the share fits the used GPU with 400 free:
    # 100 - (400 x 100 / 1000) / 10 = 96; a whole GPU must take a free one: 50 - 1 = 49;
    # two whole GPUs (they would not fit; the band still says): max(50 - 2, 33) = 48
    placed = [(0, (0,)), (0, (0,))]
    assert scores("packing", node, placed) == [96, 49, 48, 0]


def test_clustering_bands_by_hand() -> None:
    node = make_node(gpus=2)
    # empty node, no class yet: band 25 + 25 x (8000 - 2000) / 8000 = 25 + 18 = 43
    assert scores("clustering", node) == [43, 43, 43, 0]
    # one sharing pod placed (1700 free): 25 x 6300 / 8000 = 19; the sharing class is the
    # only one there: 75 + 19 = 94; whole-GPU classes are not: 0 + 19
    assert scores("clustering", node, [(0, (0,))]) == [94, 19, 19, 0]


def test_fgd_scores_are_whole_points_of_the_sigmoid_of_the_growth() -> None:
    fleet, kinds, policy = build([make_node(gpus=2, cpu=6000)], list(WORKLOAD), "fgd")
    fleet.allocate(0, kinds, kinds.index(A), (1,))
    fleet.allocate(0, kinds, kinds.index(make_pod(cpu=8000)), ()) if False else None
    result = policy.score(fleet, 0, fleet.fits(kinds, 0))
    # state: CPU 2000, GPUs [1000, 500]. A: CPU too low -> all 1500; B: too low -> 1500;
    # C -> 1500: F = 1500. A does not fit (CPU); C (2000 CPU) leaves 0 CPU: F still 1500,
    # growth 0 -> int(100 x sigmoid(0)) = 50
    assert result.score[kinds.index(C)] == 50


def test_fgd_picks_the_gpu_with_the_least_growth() -> None:
    # two GPUs, one with 500 free: a 500 pod there fills it (the fragment disappears),
    # on the free GPU it would leave 500 + 500
    fleet, kinds, policy = build([make_node(gpus=2, cpu=64_000)], list(WORKLOAD), "fgd")
    fleet.allocate(0, kinds, kinds.index(A), (0,))
    result = policy.score(fleet, 0, fleet.fits(kinds, 0))
    assert result.gpu[kinds.index(A)] == 0


def test_candidate_moves_collapse_gpus_with_equal_free_capacity() -> None:
    kinds = Kinds.of(KINDS, ("T4",))
    free = np.array([1000, 400, 1000, 400])
    fits = np.array([True, True, True, True])
    moves = candidate_moves(kinds, free, fits)
    share = kinds.index(KINDS[0])
    # the share (300) fits both values, 400 (first at GPU 1) and 1000 (first at GPU 0)
    assert sorted(moves.gpu[moves.kind == share].tolist()) == [0, 1]
    two = kinds.index(KINDS[2])
    assert moves.moves.count[moves.kind == two].tolist() == [2]


def test_default_gpu_choice_is_the_tightest_that_fits_and_whole_cards_the_first_free() -> None:
    fleet, kinds, policy = build([make_node(gpus=4)], KINDS, "best-fit")
    fleet.allocate(0, kinds, 0, (1,))  # 700 free on GPU 1
    fleet.allocate(0, kinds, 1, (2,))  # GPU 2 full
    rng = np.random.default_rng(0)
    assert policy.choose_gpus(fleet, 0, 0, -1, rng) == (1,)
    assert policy.choose_gpus(fleet, 0, kinds.index(KINDS[2]), -1, rng) == (0, 3)


def test_ties_go_to_the_node_whose_name_sorts_first() -> None:
    nodes = [make_node("b"), make_node("a"), make_node("c")]
    fleet, kinds, policy = build(nodes, KINDS, "best-fit")
    scheduler = Scheduler(fleet, kinds, policy, np.random.default_rng(1))
    placement = scheduler.place(1)
    assert placement is not None and fleet.nodes[placement.node].name == "a"


def test_random_policy_spreads_over_every_node_that_fits() -> None:
    nodes = [make_node(f"n{i}", gpus=8, cpu=1_000_000) for i in range(4)]
    fleet, kinds, policy = build(nodes, KINDS, "random")
    scheduler = Scheduler(fleet, kinds, policy, np.random.default_rng(3))
    used = {scheduler.place(3).node for _ in range(40)}  # type: ignore[union-attr]
    assert used == {0, 1, 2, 3}


def test_unknown_policy_lists_the_valid_names() -> None:
    with pytest.raises(Exception, match="valid choices: random, dot-product"):
        policies.check("first-fit")
