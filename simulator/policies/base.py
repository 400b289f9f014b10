"""What a placement policy is: a score for every pod kind on one node, and a GPU choice.

A policy sees one node at a time, as kube-scheduler's score plugins do: the scheduler
keeps a (kinds x nodes) table of scores and asks the policy again only about the node
that just changed (:mod:`simulator.scheduler`). The highest score wins; ties between
nodes go to the node whose name sorts first, as in the authors' kube-scheduler fork,
so a policy with coarse integer scores, like the published ones (0..100), breaks ties
the way their published figures did. A policy with ``random_ties`` has them broken
uniformly at random instead.

Within the chosen node, :meth:`Policy.choose_gpus` picks the GPU slots: the default is
the published simulator's: a GPU-sharing pod goes to the GPU with the least free
capacity that still fits it (lowest index on ties), a pod of whole GPUs to the first
fully free ones. A policy that chooses the GPU while scoring returns it as the hint.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from simulator.fleet import BoolArray, Fleet, IntArray, Kinds
from simulator.trace import MILLI_PER_GPU, Pod

FloatArray = NDArray[np.float64]

MAX_SPEC_CPU_MILLI = 128_000
"""The largest node's CPU in the Alibaba fleet: best-fit and dot-product normalise by it."""
MAX_SPEC_GPU_MILLI = 8 * MILLI_PER_GPU
"""The largest node's GPUs (8), in thousandths."""
MAX_SCORE = 100
"""kube-scheduler's MaxNodeScore."""


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What a policy may know before the first pod: the kinds it will be asked about,
    the fleet's GPU models, and the workload whose distribution it may aim for (the
    trace as given, before it is extended)."""

    kinds: Kinds
    models: tuple[str, ...]
    workload: tuple[Pod, ...]


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Scores of every kind on one node (higher is better; only fitting kinds are
    read), and the GPU slot a policy chose for a one-GPU kind (-1: the default)."""

    score: FloatArray
    gpu: IntArray


class Policy(abc.ABC):
    """A placement policy. Subclasses set ``name`` and implement :meth:`score`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    random_ties: ClassVar[bool] = False
    """Break ties between nodes uniformly at random instead of by node name."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.kinds = setup.kinds

    @abc.abstractmethod
    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        """Score every kind on ``node``; ``fits`` says which kinds fit there now."""

    def choose_gpus(
        self, fleet: Fleet, node: int, kind: int, hint: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        """The GPU slots of ``node`` that one pod of ``kind`` takes."""
        num_gpu = int(self.kinds.num_gpu[kind])
        if num_gpu == 0:
            return ()
        milli = int(self.kinds.gpu_milli[kind])
        if num_gpu == 1 and hint >= 0:
            return (hint,)
        free = fleet.gpus_of(node)
        if num_gpu == 1 and milli < MILLI_PER_GPU:
            return (tightest_gpu(free, milli),)
        return first_whole_gpus(free, num_gpu)

    def no_hints(self) -> IntArray:
        return np.full(len(self.kinds), -1, dtype=np.int64)


def tightest_gpu(free: IntArray, milli: int) -> int:
    """The GPU with the least free capacity that still holds ``milli`` (lowest index)."""
    candidates = np.where(free >= milli, free, np.iinfo(np.int64).max)
    return int(np.argmin(candidates))


def first_whole_gpus(free: IntArray, count: int) -> tuple[int, ...]:
    """The first ``count`` fully free GPUs."""
    whole = np.flatnonzero(free == MILLI_PER_GPU)[:count]
    return tuple(int(g) for g in whole)


def truncate(values: FloatArray) -> FloatArray:
    """Go's ``int64(x)``: the published plugins score in whole numbers, rounding toward 0."""
    return np.trunc(values)


def gpu_demand(kinds: Kinds) -> IntArray:
    """Each kind's total GPU thousandths."""
    return kinds.num_gpu * kinds.gpu_milli


def free_total(free: Sequence[int] | IntArray) -> int:
    return int(np.clip(np.asarray(free), 0, None).sum())
