"""``random``: any node that fits, uniformly; a random GPU that fits, for sharing pods.

The baseline of the FGD paper (86.3% of GPUs allocated at 100% arrived workload on the
Alibaba trace). Every fitting node scores the same, so the scheduler's uniform
tie-breaking picks among all of them.
"""

from __future__ import annotations

import numpy as np

from simulator.fleet import BoolArray, Fleet
from simulator.policies.base import Policy, Scores, first_whole_gpus
from simulator.trace import MILLI_PER_GPU


class RandomFit(Policy):
    name = "random"
    summary = "a uniformly random node that fits, and a random GPU on it"
    random_ties = True

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        return Scores(score=np.zeros(len(self.kinds)), gpu=self.no_hints())

    def choose_gpus(
        self, fleet: Fleet, node: int, kind: int, hint: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        num_gpu = int(self.kinds.num_gpu[kind])
        milli = int(self.kinds.gpu_milli[kind])
        free = fleet.gpus_of(node)
        if num_gpu == 1 and milli < MILLI_PER_GPU:
            candidates = np.flatnonzero(free >= milli)
            return (int(candidates[rng.integers(len(candidates))]),)
        return first_whole_gpus(free, num_gpu) if num_gpu else ()
