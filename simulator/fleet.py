"""The fleet: nodes, what is free on each, and the pod kinds that ask for it.

State is kept in numpy arrays indexed by node (and GPU slot), because a placement
policy scores every node for every pod: the fill experiment on the Alibaba trace asks
1,213 nodes about ~10,800 pods per run. Pods are grouped into *kinds* (same CPU,
memory, GPU count, GPU share and model constraint): the trace's 8,152 pods are 151
kinds, so a policy scores a node once for every kind when that node changes, and
placing a pod is a look-up in that table (see :mod:`simulator.scheduler`).

GPU slots beyond a node's GPU count hold ``-1``, so that no request ever fits there and
sums of free GPU capacity clip them away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from governance.errors import ConfigError
from governance.model import Pool
from simulator.trace import MILLI_PER_GPU, Node, Pod

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

SHARE_CLASS = 0
"""Affinity class of GPU-sharing pods; class ``k`` (1..) is pods of k whole GPUs."""


@dataclass(frozen=True, kw_only=True)
class KindKey:
    """What makes two pods the same to a placement policy."""

    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_models: tuple[str, ...]

    @classmethod
    def of(cls, pod: Pod) -> KindKey:
        return cls(
            cpu_milli=pod.cpu_milli,
            memory_mib=pod.memory_mib,
            num_gpu=pod.num_gpu,
            gpu_milli=pod.gpu_milli,
            gpu_models=tuple(sorted(pod.gpu_models)),
        )


class Kinds:
    """The distinct pod kinds of a workload, as arrays aligned by kind index.

    ``allowed[k, m]`` says whether kind ``k`` may run on the fleet's model ``m``.
    """

    def __init__(self, keys: Sequence[KindKey], models: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self.cpu_milli: IntArray = np.array([k.cpu_milli for k in keys], dtype=np.int64)
        self.memory_mib: IntArray = np.array([k.memory_mib for k in keys], dtype=np.int64)
        self.num_gpu: IntArray = np.array([k.num_gpu for k in keys], dtype=np.int64)
        self.gpu_milli: IntArray = np.array([k.gpu_milli for k in keys], dtype=np.int64)
        self.allowed: BoolArray = np.array(
            [[not k.gpu_models or m in k.gpu_models for m in models] for k in keys],
            dtype=np.bool_,
        ).reshape(len(keys), len(models))
        self.affinity: IntArray = np.where(
            (self.num_gpu == 1) & (self.gpu_milli < MILLI_PER_GPU), SHARE_CLASS, self.num_gpu
        )
        self._index = {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, pod: Pod) -> int:
        return self._index[KindKey.of(pod)]

    @classmethod
    def of(cls, pods: Iterable[Pod], models: Sequence[str]) -> Kinds:
        """The kinds of ``pods`` in order of first appearance."""
        seen: dict[KindKey, None] = {}
        for pod in pods:
            seen.setdefault(KindKey.of(pod), None)
        return cls(list(seen), models)


class Fleet:
    """The nodes and what is free on them. Mutable: the scheduler places and releases."""

    def __init__(self, nodes: Sequence[Node], *, models: Sequence[str] | None = None) -> None:
        """``models`` fixes the model indices (a part of a larger fleet keeps the
        larger fleet's, so that kinds built for one serve both); default: the models
        of ``nodes``, sorted."""
        if not nodes:
            raise ConfigError("the fleet has no nodes")
        self.nodes = tuple(nodes)
        present = {n.model for n in nodes if n.gpus}
        self.models: tuple[str, ...] = tuple(models) if models else tuple(sorted(present))
        if not present <= set(self.models):
            raise ValueError(f"models {sorted(present - set(self.models))} are not indexed")
        model_index = {m: i for i, m in enumerate(self.models)}
        n = len(nodes)
        self.max_gpus = max(node.gpus for node in nodes)
        self.gpu_count: IntArray = np.array([x.gpus for x in nodes], dtype=np.int64)
        # a node without GPUs gets model -1: no GPU kind is allowed there
        self.model: IntArray = np.array(
            [model_index.get(x.model, -1) if x.gpus else -1 for x in nodes], dtype=np.int64
        )
        self.cpu_capacity: IntArray = np.array([x.cpu_milli for x in nodes], dtype=np.int64)
        self.memory_capacity: IntArray = np.array([x.memory_mib for x in nodes], dtype=np.int64)
        self.cpu_free: IntArray = self.cpu_capacity.copy()
        self.memory_free: IntArray = self.memory_capacity.copy()
        slots = np.arange(max(self.max_gpus, 1))
        self.gpu_free: IntArray = np.where(
            slots[None, :] < self.gpu_count[:, None], MILLI_PER_GPU, -1
        ).astype(np.int64)
        self.affinity: IntArray = np.zeros((n, max(self.max_gpus, 1) + 1), dtype=np.int64)
        self.total_gpus = int(self.gpu_count.sum())
        self.allocated_gpu_milli = 0

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def capacity_gpu_milli(self) -> int:
        return self.total_gpus * MILLI_PER_GPU

    @property
    def allocation(self) -> float:
        """Share of the fleet's GPU capacity allocated, 0..1 (the paper's metric)."""
        return self.allocated_gpu_milli / self.capacity_gpu_milli

    def gpus_of(self, node: int) -> IntArray:
        """Free thousandths of each real GPU of ``node``."""
        return self.gpu_free[node, : self.gpu_count[node]]

    def occupied_gpus(self) -> int:
        """GPUs with anything allocated on them."""
        return int(((self.gpu_free >= 0) & (self.gpu_free < MILLI_PER_GPU)).sum())

    def fits(self, kinds: Kinds, node: int) -> BoolArray:
        """For every kind, whether one more pod of it fits on ``node`` now."""
        free = self.gpus_of(node)
        enough = (free[None, :] >= kinds.gpu_milli[:, None]).sum(axis=1) >= kinds.num_gpu
        model = self.model[node]
        allowed = kinds.allowed[:, model] if model >= 0 else kinds.num_gpu == 0
        fits: BoolArray = (
            (kinds.cpu_milli <= self.cpu_free[node])
            & (kinds.memory_mib <= self.memory_free[node])
            & (allowed | (kinds.num_gpu == 0))
            & enough
        )
        return fits

    def allocate(self, node: int, kinds: Kinds, kind: int, gpus: Sequence[int]) -> None:
        """Take one pod of ``kind`` on ``node``, on GPU slots ``gpus``."""
        milli = int(kinds.gpu_milli[kind])
        if len(gpus) != kinds.num_gpu[kind] or any(self.gpu_free[node, g] < milli for g in gpus):
            raise ValueError(f"GPUs {list(gpus)} of node {node} cannot hold kind {kind}")
        self.cpu_free[node] -= kinds.cpu_milli[kind]
        self.memory_free[node] -= kinds.memory_mib[kind]
        for g in gpus:
            self.gpu_free[node, g] -= milli
        if gpus:
            self.affinity[node, kinds.affinity[kind]] += 1
        self.allocated_gpu_milli += milli * len(gpus)

    def release(self, node: int, kinds: Kinds, kind: int, gpus: Sequence[int]) -> None:
        """Give back what :meth:`allocate` took."""
        milli = int(kinds.gpu_milli[kind])
        self.cpu_free[node] += kinds.cpu_milli[kind]
        self.memory_free[node] += kinds.memory_mib[kind]
        for g in gpus:
            self.gpu_free[node, g] += milli
        if gpus:
            self.affinity[node, kinds.affinity[kind]] -= 1
        self.allocated_gpu_milli -= milli * len(gpus)

    def state_key(self, node: int) -> tuple[int, ...]:
        """Everything a policy may look at on one node: equal keys score equally."""
        return (
            int(self.model[node]),
            int(self.gpu_count[node]),
            int(self.cpu_capacity[node]),
            int(self.cpu_free[node]),
            int(self.memory_free[node]),
            *self.gpu_free[node].tolist(),
            *self.affinity[node].tolist(),
        )


def from_pools(
    pools: Iterable[Pool],
    *,
    gpus_per_node: int = 8,
    cpu_milli_per_gpu: int = 16_000,
    memory_mib_per_gpu: int = 128 * 1024,
) -> list[Node]:
    """Nodes for the pools of a gpupool configuration.

    A pool says how many GPUs of which model it has, not how they are split into nodes
    nor how much CPU and memory come with them: those are the arguments (defaults: 8
    GPUs per node, 16 cores and 128 GiB per GPU, a common training-node shape). A
    pool's last node holds the remainder.
    """
    nodes: list[Node] = []
    for pool in pools:
        left = pool.gpus
        index = 0
        while left > 0:
            gpus = min(gpus_per_node, left)
            nodes.append(
                Node(
                    name=f"{pool.name}-{index:04d}",
                    cpu_milli=cpu_milli_per_gpu * gpus,
                    memory_mib=memory_mib_per_gpu * gpus,
                    gpus=gpus,
                    model=pool.model,
                )
            )
            left -= gpus
            index += 1
    return nodes
