"""``clustering``: pods of one GPU shape together, on nodes that hold only that shape.

The FGD paper's GPU-clustering baseline. Pods are classed by shape (GPU-sharing, or
k whole GPUs); a node already holding only the pod's class scores 75..100, one holding
it among others 50..75, an empty node 25..50, a node holding other classes only
0..25; within a band, the fuller node (less free GPU capacity, out of 8 GPUs) scores
higher, in whole points. CPU-only pods score 0 everywhere (a random node that fits).
Sharing pods go to the tightest GPU. Published: 91.7% at 100% arrived workload.
"""

from __future__ import annotations

import numpy as np

from simulator.fleet import BoolArray, Fleet
from simulator.policies.base import MAX_SCORE, MAX_SPEC_GPU_MILLI, Policy, Scores, free_total


class Clustering(Policy):
    name = "clustering"
    summary = "pods of one GPU shape together, fuller nodes first"

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        kinds = self.kinds
        left = free_total(fleet.gpus_of(node))
        fullness = (MAX_SCORE // 4) * (MAX_SPEC_GPU_MILLI - left) // MAX_SPEC_GPU_MILLI
        present = fleet.affinity[node]
        classes = int((present > 0).sum())
        mine = present[np.minimum(kinds.affinity, len(present) - 1)] > 0
        band = np.where(
            mine,
            np.where(classes == 1, 3, 2),
            np.where(classes == 0, 1, 0),
        )
        score = np.where(kinds.num_gpu > 0, fullness + band * (MAX_SCORE // 4), 0)
        return Scores(score=score.astype(np.float64), gpu=self.no_hints())
