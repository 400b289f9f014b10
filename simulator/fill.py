"""The fill experiment of the FGD paper (Weng et al., USENIX ATC 2023, section 6).

Pods arrive one by one and nobody leaves. The trace is first put in arrival order --
shuffled with the run's seed, as the authors' experiments do (their run scripts pass
``--shuffle-pod=true``), or in the file's order -- and then extended by sampling its
own pods with replacement, with the same seed, until the next one would take the
requested GPUs past ``ratio`` (130%) of the fleet's capacity. A trace that already asks
for more is cut there. Each pod goes where the policy says, or fails and is dropped
(no retry); nodes' CPU and memory and pods' GPU model constraints are honoured.

The curve: after every pod, the *arrived* workload (GPU thousandths requested so far,
failed pods included, over the fleet's) and the *allocated* share of GPU capacity.
For each whole percentage ``k`` of arrived workload, the curve's value is the mean
allocation over the pods whose arrived workload rounds to ``k`` (those within one
point either side when none does), as the authors' analysis computes it; the result
is the mean of the seeds' curves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from governance.errors import ConfigError
from simulator import policies
from simulator.fleet import Fleet, IntArray, Kinds
from simulator.policies.base import FloatArray, Setup
from simulator.scheduler import Scheduler
from simulator.trace import Node, Pod

Order = Literal["shuffled", "trace"]

DEFAULT_RATIO = 1.3
DEFAULT_SEED = 42
"""The authors' experiments use seeds 42..51."""

Progress = Callable[[int], None]
"""Called with the number of pods handled since the last call."""


@dataclass(frozen=True, kw_only=True)
class FillRun:
    """One seed's run: the curve and what happened to the pods."""

    seed: int
    curve: dict[int, float]
    pods: int
    failed_pods: int
    failed_gpu_milli: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class FillResult:
    policy: str
    total_gpus: int
    ratio: float
    order: Order
    runs: tuple[FillRun, ...]
    allocation_by_arrived: dict[int, float]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def at(self, arrived_pct: int) -> float:
        """Allocated % of GPU capacity when ``arrived_pct`` % of it has been requested."""
        return self.allocation_by_arrived[arrived_pct]


def arrival_order(
    demand_milli: IntArray,
    capacity_milli: int,
    rng: np.random.Generator,
    *,
    ratio: float = DEFAULT_RATIO,
    order: Order = "shuffled",
) -> IntArray:
    """Indices into the trace, in arrival order, extended to ``ratio`` x capacity."""
    count = len(demand_milli)
    if int(demand_milli.sum()) <= 0:
        raise ConfigError("the pod list asks for no GPUs, so it cannot fill a fleet")
    limit = ratio * capacity_milli
    base = rng.permutation(count) if order == "shuffled" else np.arange(count)
    extra: list[IntArray] = []
    total = int(demand_milli.sum())
    while total <= limit:
        batch = rng.integers(count, size=max(count, 64))
        extra.append(batch)
        total += int(demand_milli[batch].sum())
    sequence = np.concatenate([base, *extra])
    cumulative = np.cumsum(demand_milli[sequence])
    over = np.flatnonzero(cumulative > limit)
    return sequence[: over[0]] if len(over) else sequence


def estimated_length(pods: Sequence[Pod], nodes: Sequence[Node], ratio: float) -> int:
    """About how many pods one run places (for a progress bar): the trace, scaled to
    ask for ``ratio`` times the fleet's GPUs."""
    demand = sum(p.gpu_milli_total for p in pods)
    capacity = sum(n.gpus for n in nodes) * 1000
    return max(1, round(len(pods) * ratio * capacity / demand)) if demand else len(pods)


def curve_of(arrived_pct: FloatArray, allocated_pct: FloatArray, top: int) -> dict[int, float]:
    """The value for each whole percentage 0..top of arrived workload (see the module)."""
    bucket = np.round(arrived_pct)
    result: dict[int, float] = {}
    previous = 0.0
    for k in range(top + 1):
        chosen = allocated_pct[bucket == k]
        if len(chosen) == 0:
            chosen = allocated_pct[(bucket >= k - 1) & (bucket <= k + 1)]
        # an empty stretch (a trace of few huge pods) keeps the last value
        previous = round(float(chosen.mean()), 2) if len(chosen) else previous
        result[k] = previous
    return result


def run_once(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    policy: str,
    seed: int,
    *,
    ratio: float = DEFAULT_RATIO,
    order: Order = "shuffled",
    progress: Progress | None = None,
) -> FillRun:
    started = time.perf_counter()
    fleet = Fleet(nodes)
    kinds = Kinds.of(pods, fleet.models)
    kind_of = np.array([kinds.index(p) for p in pods], dtype=np.int64)
    demand = np.array([p.gpu_milli_total for p in pods], dtype=np.int64)
    rng = np.random.default_rng(seed)
    sequence = arrival_order(demand, fleet.capacity_gpu_milli, rng, ratio=ratio, order=order)
    setup = Setup(kinds=kinds, models=fleet.models, workload=tuple(pods))
    scheduler = Scheduler(fleet, kinds, policies.create(policy, setup), rng)
    arrived = np.cumsum(demand[sequence], dtype=np.float64) * (100.0 / fleet.capacity_gpu_milli)
    allocated = np.empty(len(sequence))
    failed = failed_milli = 0
    capacity = fleet.capacity_gpu_milli
    for step, pod in enumerate(sequence):
        if scheduler.place(int(kind_of[pod])) is None:
            failed += 1
            failed_milli += int(demand[pod])
        allocated[step] = fleet.allocated_gpu_milli * 100.0 / capacity
        if progress is not None and step % 512 == 511:
            progress(512)
    if progress is not None:
        progress(len(sequence) % 512)
    return FillRun(
        seed=seed,
        curve=curve_of(arrived, allocated, round(ratio * 100)),
        pods=len(sequence),
        failed_pods=failed,
        failed_gpu_milli=failed_milli,
        seconds=time.perf_counter() - started,
    )


def run(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    policy: str,
    *,
    seeds: int = 1,
    seed: int = DEFAULT_SEED,
    ratio: float = DEFAULT_RATIO,
    order: Order = "shuffled",
    progress: Progress | None = None,
) -> FillResult:
    """The fill experiment for one policy over ``seeds`` seeds from ``seed`` on."""
    if seeds < 1:
        raise ConfigError(f"--seeds is {seeds}; run at least one seed")
    if not 0 < ratio <= 10:
        raise ConfigError(f"the fill ratio is {ratio}; it must be above 0 and at most 10")
    policies.check(policy)
    runs = tuple(
        run_once(pods, nodes, policy, s, ratio=ratio, order=order, progress=progress)
        for s in range(seed, seed + seeds)
    )
    keys = runs[0].curve.keys()
    mean = {k: round(float(np.mean([r.curve[k] for r in runs])), 2) for k in keys}
    return FillResult(
        policy=policy,
        total_gpus=Fleet(nodes).total_gpus,
        ratio=ratio,
        order=order,
        runs=runs,
        allocation_by_arrived=mean,
    )
