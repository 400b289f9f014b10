"""GPU fragmentation of a node, measured against a target workload (FGD, ATC 2023).

The paper's measure: a node's free GPU capacity is a *fragment* for a pod type when
that type cannot use it. For a type that the node cannot host at all (too little CPU,
too few GPUs with enough free, a GPU model the type does not accept, or a CPU-only
type, which never uses GPUs) every free GPU thousandth is a fragment; for a type the
node can host, the fragments are the free thousandths on GPUs with less free than the
type's per-GPU share. The node's fragmentation is the expectation over the target
workload, ``F(node) = sum_t p_t * frag_t(node)``, where ``p_t`` is the share of type
``t`` among the workload's pods.

The target workload, as the authors' simulator builds it: pods grouped by (CPU, GPU
count, per-GPU share, GPU model constraint) -- memory plays no part -- most popular
first, the top types that together cover 95% of the pods, renormalised to sum to 1.

:class:`Target` holds that distribution as arrays; :func:`node_fragmentation` is the
plain measure (used for reporting and as the tests' reference), and :func:`after`
evaluates it for many hypothetical placements on one node at once, which is what FGD
and gpupool's policy need per node update.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from simulator.fleet import KindKey
from simulator.trace import Pod

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

POPULARITY = 0.95
"""Share of the workload's pods that the most popular types must cover."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """The target workload's pod types and their probabilities, as aligned arrays.

    ``allowed[t, m]`` says whether type ``t`` accepts the fleet's model ``m``.
    """

    types: tuple[KindKey, ...]
    """The pod types: kinds with memory set to 0 (the measure has no memory)."""
    probability: FloatArray
    cpu_milli: IntArray
    num_gpu: IntArray
    gpu_milli: IntArray
    allowed: BoolArray

    def __len__(self) -> int:
        return len(self.types)


def target_of(
    pods: Iterable[Pod], models: Sequence[str], *, popularity: float = POPULARITY
) -> Target:
    """The target workload of ``pods``: the popular types covering ``popularity`` of
    them, most popular first (ties in a fixed order), probabilities summing to 1."""
    counts = Counter(replace(KindKey.of(p), memory_mib=0) for p in pods)
    if not counts:
        raise ValueError("the target workload has no pods")
    total = sum(counts.values())
    ranked = sorted(
        counts.items(),
        key=lambda item: (
            -item[1],
            item[0].num_gpu,
            item[0].gpu_milli,
            item[0].cpu_milli,
            item[0].gpu_models,
        ),
    )
    chosen: list[tuple[KindKey, int]] = []
    covered = 0
    for pod_type, count in ranked:
        if covered >= popularity * total:
            break
        chosen.append((pod_type, count))
        covered += count
    types = tuple(t for t, _ in chosen)
    probability = np.array([c for _, c in chosen], dtype=np.float64) / covered
    return Target(
        types=types,
        probability=probability,
        cpu_milli=np.array([t.cpu_milli for t in types], dtype=np.int64),
        num_gpu=np.array([t.num_gpu for t in types], dtype=np.int64),
        gpu_milli=np.array([t.gpu_milli for t in types], dtype=np.int64),
        allowed=np.array(
            [[not t.gpu_models or m in t.gpu_models for m in models] for t in types],
            dtype=np.bool_,
        ).reshape(len(types), len(models)),
    )


def node_fragmentation(
    target: Target, *, cpu_free: int, gpu_free: Sequence[int], model: int
) -> float:
    """F(node) in GPU thousandths, written out type by type (the reference)."""
    total = sum(gpu_free)
    frag = 0.0
    for t in range(len(target)):
        milli = int(target.gpu_milli[t])
        hostable = (
            milli > 0
            and model >= 0
            and bool(target.allowed[t, model])
            and cpu_free >= target.cpu_milli[t]
            and sum(1 for g in gpu_free if g >= milli) >= target.num_gpu[t]
        )
        unusable = sum(g for g in gpu_free if g < milli) if hostable else total
        frag += float(target.probability[t]) * unusable
    return frag


@dataclass(frozen=True, kw_only=True)
class Moves:
    """Hypothetical placements on one node, each a candidate state after a pod lands.

    Move ``i`` takes ``cpu_milli[i]`` of CPU and turns ``count[i]`` GPUs with
    ``before[i]`` free thousandths into GPUs with ``after[i]`` free: a GPU-sharing pod
    changes one GPU, a pod of k whole GPUs turns k free GPUs (1000) into full ones
    (0), a CPU-only pod changes none. All arrays have shape (C,).
    """

    cpu_milli: IntArray
    count: IntArray
    before: IntArray
    after: IntArray


def fragmentation_after(
    target: Target, *, cpu_free: int, gpu_free: IntArray, model: int, moves: Moves
) -> tuple[float, FloatArray]:
    """F(node) now, and F after each candidate move, in GPU thousandths.

    Incremental: the counts of GPUs with enough free and the unusable thousandths per
    type are computed once for the node, and each move only corrects them for the GPUs
    it changes, so a node update costs (moves x types), not (moves x types x GPUs).
    """
    milli = target.gpu_milli  # (T,)
    real = gpu_free[gpu_free >= 0]
    total = int(real.sum())
    ge = (real[:, None] >= milli[None, :]).sum(axis=0)  # (T,)
    small = np.where(real[:, None] < milli[None, :], real[:, None], 0).sum(axis=0)  # (T,)
    accepts = (milli > 0) & (target.allowed[:, model] if model >= 0 else False)
    p = target.probability

    def measure(ge_: IntArray, small_: IntArray, total_: IntArray, cpu_: IntArray) -> FloatArray:
        hostable = accepts & (ge_ >= target.num_gpu) & (cpu_[..., None] >= target.cpu_milli)
        unusable = np.where(hostable, small_, total_[..., None])
        return np.asarray(unusable @ p, dtype=np.float64)

    now = float(
        measure(ge, small, np.array(total, dtype=np.int64), np.array(cpu_free, dtype=np.int64))
    )
    k = moves.count[:, None]
    b = moves.before[:, None]
    a = moves.after[:, None]
    m = milli[None, :]
    ge_after = ge + k * ((a >= m).astype(np.int64) - (b >= m))  # (C, T)
    small_after = small + k * (np.where(a < m, a, 0) - np.where(b < m, b, 0))
    total_after = total + moves.count * (moves.after - moves.before)  # (C,)
    cpu_after = cpu_free - moves.cpu_milli
    return now, measure(ge_after, small_after, total_after, cpu_after)
