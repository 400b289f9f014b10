"""simulator.fill: arrival order and extension, the curve, and tiny traces whose
results are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from governance.errors import ConfigError
from simulator import fill
from tests.support.sim import make_node, make_pod

pytestmark = pytest.mark.unit


def test_trace_is_extended_by_sampling_until_the_next_pod_would_pass_the_ratio() -> None:
    demand = np.array([500, 1000, 0, 250])
    sequence = fill.arrival_order(demand, 2000, np.random.default_rng(5), ratio=1.3)
    total = demand[sequence].sum()
    # the trace asks 1750; sampled pods follow until one more would pass 2600
    assert set(sequence[:4].tolist()) == {0, 1, 2, 3}
    assert total <= 2600 and len(sequence) > 4
    assert sorted(sequence[:4].tolist()) == [0, 1, 2, 3]


def test_trace_order_keeps_the_file_order_and_a_long_trace_is_cut() -> None:
    demand = np.array([1000, 1000, 1000, 1000])
    sequence = fill.arrival_order(demand, 2000, np.random.default_rng(0), order="trace", ratio=1.3)
    assert sequence.tolist() == [0, 1]  # 3000 would pass 2600


def test_same_seed_same_order_another_seed_another() -> None:
    demand = np.arange(1, 50) * 10
    first = fill.arrival_order(demand, 10_000, np.random.default_rng(42))
    again = fill.arrival_order(demand, 10_000, np.random.default_rng(42))
    other = fill.arrival_order(demand, 10_000, np.random.default_rng(43))
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()


def test_a_trace_without_gpus_cannot_fill_a_fleet() -> None:
    with pytest.raises(ConfigError, match="asks for no GPUs"):
        fill.arrival_order(np.array([0, 0]), 1000, np.random.default_rng(0))


def test_curve_means_each_whole_percent_and_falls_back_to_neighbours() -> None:
    arrived = np.array([0.2, 0.4, 1.6, 3.0, 3.4])
    allocated = np.array([0.2, 0.4, 1.0, 2.0, 3.0])
    curve = fill.curve_of(arrived, allocated, 5)
    # 0: 0.2 and 0.4 round to 0 -> 0.3; 1: none round to 1, neighbours 0..2 -> all of
    # 0.2, 0.4, 1.0 -> 0.53; 2: 1.6 -> 1.0; 3: 3.0 and 3.4 -> 2.5; 4: neighbour 3 -> 2.5;
    # 5: nothing within a point -> keeps 2.5
    assert curve == {0: 0.3, 1: 0.53, 2: 1.0, 3: 2.5, 4: 2.5, 5: 2.5}


def test_best_fit_fills_the_gpu_a_share_left_so_the_whole_gpu_still_fits() -> None:
    # one node of two GPUs; 400 goes to GPU 0, 600 to the tightest GPU that holds it
    # (GPU 0, exactly full), and the whole-GPU pod gets GPU 1: all placed, 100%.
    # ratio 1.15 of 2000 = 2300: the three pods ask 2000; any sampled pod passes it
    pods = [make_pod("a", milli=400), make_pod("b", milli=600), make_pod("c")]
    result = fill.run(pods, [make_node(gpus=2)], "best-fit", ratio=1.15, order="trace")
    (run,) = result.runs
    assert (run.pods, run.failed_pods) == (3, 0)
    assert result.at(20) == 20.0 and result.at(50) == 50.0 and result.at(100) == 100.0


def test_a_whole_gpu_pod_fails_when_shares_took_both_gpus() -> None:
    # 600 + 600 cannot share a GPU: GPU 0 and 1 keep 400 each, the whole GPU fails.
    # Arrived 30, 60, 110%; allocated 30, 60, 60%.
    pods = [make_pod("a", milli=600), make_pod("b", milli=600), make_pod("c")]
    result = fill.run(pods, [make_node(gpus=2)], "best-fit", ratio=1.25, order="trace")
    (run,) = result.runs
    assert (run.failed_pods, run.failed_gpu_milli) == (1, 1000)
    assert [result.at(k) for k in (30, 60, 110, 125)] == [30.0, 60.0, 60.0, 60.0]


def test_the_curve_is_the_mean_of_the_seeds() -> None:
    pods = [make_pod(f"p{i}", milli=m) for i, m in enumerate((300, 700, 500, 1000, 200))]
    nodes = [make_node(f"n{i}", gpus=2) for i in range(3)]
    result = fill.run(pods, nodes, "random", seeds=3, seed=7)
    assert result.seeds == (7, 8, 9)
    for k in (50, 100, 130):
        assert result.at(k) == pytest.approx(np.mean([r.curve[k] for r in result.runs]), abs=0.01)


def test_bad_arguments_are_refused_before_running() -> None:
    pods, nodes = [make_pod()], [make_node()]
    with pytest.raises(ConfigError, match="at least one seed"):
        fill.run(pods, nodes, "fgd", seeds=0)
    with pytest.raises(ConfigError, match="unknown placement policy"):
        fill.run(pods, nodes, "first-fit")
    with pytest.raises(ConfigError, match="fill ratio"):
        fill.run(pods, nodes, "fgd", ratio=0)
