"""``packing``: GPUs already in use first, then used nodes, then empty ones.

The FGD paper's GPU-packing baseline, in its three bands of whole-point scores: a
pod that fits on partly used GPUs scores 50..100 (the less they have free, the
higher); one that needs fully free GPUs of a node already in use scores 33..50 (the
fewer it needs, the higher); an empty node scores at most 33 (fewer GPUs, higher).
CPU-only pods score 0 everywhere, so they land on a random node that fits. Sharing
pods go to the tightest GPU. Published: 91.8% at 100% arrived workload.
"""

from __future__ import annotations

import numpy as np

from simulator.fleet import BoolArray, Fleet
from simulator.policies.base import MAX_SCORE, Policy, Scores
from simulator.trace import MILLI_PER_GPU


class Packing(Policy):
    name = "packing"
    summary = "partly used GPUs first, then used nodes, then empty nodes"

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        kinds = self.kinds
        free = fleet.gpus_of(node)
        whole_free = int((free == MILLI_PER_GPU).sum())
        if whole_free == len(free):
            node_score = max(MAX_SCORE // 3 - whole_free, whole_free)
            score = np.where(kinds.num_gpu > 0, node_score, 0)
            return Scores(score=score.astype(np.float64), gpu=self.no_hints())
        fitting = free[None, :] >= kinds.gpu_milli[:, None]
        tightest = np.where(fitting, free[None, :], np.iinfo(np.int64).max).min(axis=1)
        on_used_gpu = np.maximum(
            MAX_SCORE - (tightest * 100 // MILLI_PER_GPU) // 10, MAX_SCORE // 2
        )
        one_gpu = np.where(tightest == MILLI_PER_GPU, MAX_SCORE // 2 - 1, on_used_gpu)
        several = np.maximum(MAX_SCORE // 2 - kinds.num_gpu, MAX_SCORE // 3)
        score = np.select([kinds.num_gpu == 0, kinds.num_gpu == 1], [0, one_gpu], several)
        return Scores(score=score.astype(np.float64), gpu=self.no_hints())
