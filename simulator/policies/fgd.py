"""``fgd``: Fragmentation Gradient Descent (Weng et al., USENIX ATC 2023).

Place each pod where the node's fragmentation, measured against the target workload
(:mod:`simulator.fragmentation`), grows the least; for a GPU-sharing pod, try each GPU
of the node that fits and keep the best. As the authors' kube-scheduler plugin scores
it: ``int(100 * sigmoid((F_before - F_after) / 1000))``, whole points with no
normalisation, so growths within ~40 thousandths of a GPU of each other tie, and the
scheduler breaks node ties at random; the GPU is the lowest-index one with the best
score. Published: 95.2% of GPUs allocated at 100% arrived workload (default trace).

:func:`candidate_moves` and :func:`best_per_kind` are shared with gpupool's own
policy, which scores the same moves differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import fragmentation
from simulator.fleet import BoolArray, Fleet, IntArray, Kinds
from simulator.policies.base import MAX_SCORE, FloatArray, Policy, Scores, Setup, truncate
from simulator.trace import MILLI_PER_GPU


@dataclass(frozen=True, kw_only=True)
class Candidates:
    """Every (kind, GPU) move on one node: ``moves`` holds them flat, ``kind[i]`` and
    ``gpu[i]`` say whose move ``i`` is and on which GPU (-1: whole GPUs or none)."""

    moves: fragmentation.Moves
    kind: IntArray
    gpu: IntArray


def candidate_moves(kinds: Kinds, free: IntArray, fits: BoolArray) -> Candidates:
    """The moves of every fitting kind on a node whose GPUs have ``free`` thousandths.

    A one-GPU kind has one move per distinct free value among the GPUs that hold it
    (GPUs with equal free capacity are interchangeable; the move names the first of
    them); a kind of several whole GPUs takes that many fully free ones; a CPU-only
    kind changes no GPU.
    """
    values, first = np.unique(free, return_index=True)
    one = np.flatnonzero(fits & (kinds.num_gpu == 1))
    other = np.flatnonzero(fits & (kinds.num_gpu != 1))
    kind_row, value_index = np.nonzero(values[None, :] >= kinds.gpu_milli[one][:, None])
    one_kind = one[kind_row]
    before_one = values[value_index]
    whole = (kinds.num_gpu[other] > 0).astype(np.int64) * MILLI_PER_GPU
    kind = np.concatenate([one_kind, other])
    return Candidates(
        moves=fragmentation.Moves(
            cpu_milli=kinds.cpu_milli[kind],
            count=np.concatenate([np.ones(len(one_kind), dtype=np.int64), kinds.num_gpu[other]]),
            before=np.concatenate([before_one, whole]),
            after=np.concatenate([before_one - kinds.gpu_milli[one_kind], np.zeros_like(whole)]),
        ),
        kind=kind,
        gpu=np.concatenate([first[value_index], np.full(len(other), -1, dtype=np.int64)]),
    )


def best_per_kind(kinds: Kinds, candidates: Candidates, value: FloatArray) -> Scores:
    """Each kind's best candidate value (-inf where it has none), and that
    candidate's GPU: the lowest-index GPU among equal best values."""
    score = np.full(len(kinds), -np.inf)
    gpu = np.full(len(kinds), -1, dtype=np.int64)
    if len(value) == 0:
        return Scores(score=score, gpu=gpu)
    # candidates are ordered by kind then GPU; walk them backwards so that the
    # lowest-index GPU among equal values is the one that stays
    order = np.lexsort((-candidates.gpu, value, candidates.kind))
    kind_sorted = candidates.kind[order]
    last = np.flatnonzero(np.append(kind_sorted[1:] != kind_sorted[:-1], True))
    chosen = order[last]
    score[candidates.kind[chosen]] = value[chosen]
    gpu[candidates.kind[chosen]] = candidates.gpu[chosen]
    return Scores(score=score, gpu=gpu)


class FragmentationGradientDescent(Policy):
    name = "fgd"
    summary = "the node and GPU where fragmentation against the workload grows least"

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self.target = fragmentation.target_of(setup.workload, setup.models)

    def growth(self, fleet: Fleet, node: int, fits: BoolArray) -> tuple[Candidates, FloatArray]:
        """Each candidate move and how much it grows the node's fragmentation."""
        free = fleet.gpus_of(node)
        candidates = candidate_moves(self.kinds, free, fits)
        now, after = fragmentation.fragmentation_after(
            self.target,
            cpu_free=int(fleet.cpu_free[node]),
            gpu_free=free,
            model=int(fleet.model[node]),
            moves=candidates.moves,
        )
        return candidates, after - now

    def score(self, fleet: Fleet, node: int, fits: BoolArray) -> Scores:
        candidates, growth = self.growth(fleet, node, fits)
        value = truncate(MAX_SCORE / (1.0 + np.exp(growth / MILLI_PER_GPU)))
        return best_per_kind(self.kinds, candidates, value)
