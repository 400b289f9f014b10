"""``dot-product``: the node whose free CPU and GPU align least with the pod's request.

The FGD paper's Tetris-style baseline: free (CPU, total GPU) of the node and the pod's
request, each normalised by the largest node's, their dot product halved, the score
100 x (1 - that) in whole points, so the fuller node wins; sharing pods go to the
tightest GPU. Published: 90.6% at 100% arrived workload.
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


class DotProduct(Policy):
    name = "dot-product"
    summary = "the node whose free (CPU, GPU) has the smallest dot product with the request"

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        cpu = (fleet.cpu_free[node] / MAX_SPEC_CPU_MILLI) * (
            self.kinds.cpu_milli / MAX_SPEC_CPU_MILLI
        )
        gpu = (free_total(fleet.gpus_of(node)) / MAX_SPEC_GPU_MILLI) * (
            gpu_demand(self.kinds) / MAX_SPEC_GPU_MILLI
        )
        return Scores(score=truncate((1.0 - (cpu + gpu) / 2) * MAX_SCORE), gpu=self.no_hints())
