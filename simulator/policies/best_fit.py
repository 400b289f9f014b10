"""``best-fit``: the node left with the least free CPU and GPU after the pod lands.

As the FGD paper's baseline scores it: the free CPU and the free GPU capacity left,
each normalised by the largest node's (128 cores, 8 GPUs) and weighted one half, the
score being 100 x (1 - that), in whole points; sharing pods go to the tightest GPU.
Published: 92.9% of GPUs allocated at 100% arrived workload.
"""

from __future__ import annotations

from simulator.fleet import BoolArray, Fleet
from simulator.policies.base import (
    MAX_SCORE,
    MAX_SPEC_CPU_MILLI,
    MAX_SPEC_GPU_MILLI,
    Policy,
    Scores,
    free_total,
    gpu_demand,
    truncate,
)


class BestFit(Policy):
    name = "best-fit"
    summary = "the node with the least CPU and GPU left over (equal weights)"

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        cpu_left = (fleet.cpu_free[node] - self.kinds.cpu_milli) / MAX_SPEC_CPU_MILLI
        gpu_left = (free_total(fleet.gpus_of(node)) - gpu_demand(self.kinds)) / MAX_SPEC_GPU_MILLI
        waste = 0.5 * cpu_left + 0.5 * gpu_left
        return Scores(score=truncate((1.0 - waste) * MAX_SCORE), gpu=self.no_hints())
