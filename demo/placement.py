"""Where an admitted pod runs on the simulated fleet: binpack or spread, as HAMi's
scheduler does. Pure.

A pod asks, per GPU container, for ``gpus`` GPUs each giving it ``memory_mib`` and
``compute_pct`` (what the webhook granted, from the ``gpupool.io/slices`` annotation).
A GPU fits when what is still free on it covers both; a container's GPUs are distinct
GPUs of one node, and all of a pod's containers are on that node (the pool's node
selector, which the webhook wrote, picks the nodes). A whole card asks for all of a
GPU's memory, so it only fits an empty GPU.

The policies are HAMi's (``node-scheduler-policy`` and ``gpu-scheduler-policy``):
``binpack`` fills the most allocated node and GPUs first, so whole nodes stay free for
large jobs; ``spread`` takes the least allocated, so load is even. Ties go to the node
and GPU that come first.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from demo.fleet import Node


class Policy(enum.StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


@dataclass(frozen=True, kw_only=True)
class Want:
    """One GPU container's request: ``gpus`` GPUs of ``memory_mib`` and ``compute_pct``."""

    container: str
    gpus: int
    memory_mib: int
    compute_pct: int


@dataclass(frozen=True, kw_only=True)
class Placement:
    node: str
    gpus: dict[str, tuple[int, ...]]
    """Container name -> the indices of its GPUs on the node."""


@dataclass
class _Gpu:
    memory_free_mib: int
    compute_free_pct: int
    memory_mib: int
    compute_pct: int

    @property
    def used(self) -> float:
        """How allocated the GPU is, 0 (empty) to 1 (full), by its scarcer resource."""
        return max(
            1 - self.memory_free_mib / self.memory_mib, 1 - self.compute_free_pct / self.compute_pct
        )

    def fits(self, want: Want) -> bool:
        return self.memory_free_mib >= want.memory_mib and self.compute_free_pct >= want.compute_pct


@dataclass
class _NodeState:
    node: Node
    gpus: list[_Gpu] = field(default_factory=list)

    @property
    def used(self) -> float:
        return sum(g.used for g in self.gpus) / len(self.gpus)


class Scheduler:
    """The fleet's free capacity, and placing and releasing pods on it."""

    def __init__(self, fleet: Sequence[Node], policy: Policy = Policy.BINPACK) -> None:
        self.policy = policy
        self._nodes = {
            node.name: _NodeState(
                node,
                [
                    _Gpu(
                        node.memory_capacity_mib,
                        node.compute_capacity_pct,
                        node.memory_capacity_mib,
                        node.compute_capacity_pct,
                    )
                    for _ in range(node.gpus)
                ],
            )
            for node in fleet
        }

    def place(self, pool: str, wants: Sequence[Want]) -> Placement | None:
        """Place a pod of ``pool`` and take its capacity, or None when no node has room."""
        candidates = [s for s in self._nodes.values() if s.node.pool == pool]
        binpack = self.policy is Policy.BINPACK
        candidates.sort(key=lambda s: (-s.used if binpack else s.used, s.node.name))
        for state in candidates:
            chosen = self._choose(state, wants)
            if chosen is not None:
                for want in wants:
                    for index in chosen[want.container]:
                        gpu = state.gpus[index]
                        gpu.memory_free_mib -= want.memory_mib
                        gpu.compute_free_pct -= want.compute_pct
                return Placement(node=state.node.name, gpus=chosen)
        return None

    def _choose(
        self, state: _NodeState, wants: Sequence[Want]
    ) -> dict[str, tuple[int, ...]] | None:
        # tentative: what each GPU would have left, container after container
        left = [(g.memory_free_mib, g.compute_free_pct) for g in state.gpus]
        binpack = self.policy is Policy.BINPACK
        chosen: dict[str, tuple[int, ...]] = {}
        for want in wants:
            fitting = [
                i
                for i, (memory, compute) in enumerate(left)
                if memory >= want.memory_mib and compute >= want.compute_pct
            ]
            if len(fitting) < want.gpus:
                return None
            fitting.sort(key=lambda i: (-state.gpus[i].used if binpack else state.gpus[i].used, i))
            picked = tuple(sorted(fitting[: want.gpus]))
            for i in picked:
                memory, compute = left[i]
                left[i] = (memory - want.memory_mib, compute - want.compute_pct)
            chosen[want.container] = picked
        return chosen

    def release(self, placement: Placement, wants: Sequence[Want]) -> None:
        state = self._nodes[placement.node]
        for want in wants:
            for index in placement.gpus[want.container]:
                gpu = state.gpus[index]
                gpu.memory_free_mib += want.memory_mib
                gpu.compute_free_pct += want.compute_pct

    def allocated(self, node: str) -> list[tuple[int, int]]:
        """Per GPU of ``node``: (memory MiB, compute %) placed on it."""
        return [
            (g.memory_mib - g.memory_free_mib, g.compute_pct - g.compute_free_pct)
            for g in self._nodes[node].gpus
        ]
