"""The demo's simulated fleet: GPU nodes for the organisation's pools, and the
organisation resized to them.

The example organisation declares each pool's size (``examples/org.yaml``: 208 GPUs in
five pools). The demo simulates ``nodes`` nodes of :data:`NODE_GPUS` GPUs, shared out
between the pools in proportion to the sizes they declare (largest remainder, at least
one node each), and applies the organisation with each pool's ``gpus`` set to what the
fleet really has: the webhook then sells exactly the capacity that the demo's
scheduler can place, so quota in the ledger and slices on the GPUs agree. 26 nodes is
examples/org.yaml's own fleet; departments, queues, SKUs, quotas and role bindings are
never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance import config
from governance.model import Org

NODE_GPUS = 8
"""GPUs per simulated node (the trace's largest pods take 8, one node's worth)."""

MODEL_NAMES = {
    "H100-80GB": "NVIDIA H100 80GB HBM3",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "L40S": "NVIDIA L40S",
    "Ascend910B3": "Ascend910B3",
}
"""A pool's ``model`` -> the ``modelName`` its GPUs report (dcgm-exporter's label)."""


@dataclass(frozen=True, kw_only=True)
class Node:
    """One simulated GPU node: its GPUs' size and what may be placed on each."""

    name: str
    pool: str
    model: str
    """The ``modelName`` label of its GPUs."""
    gpus: int
    memory_mib: int
    """Each GPU's memory (the pool's ``memory_per_gpu``)."""
    memory_capacity_mib: int
    """Memory that may be placed on each GPU (memory x the pool's over-subscription)."""
    compute_capacity_pct: int
    """Compute that may be placed on each GPU (100 x the pool's over-subscription)."""


def nodes_per_pool(declared: Mapping[str, int], nodes: int) -> dict[str, int]:
    """``nodes`` shared out in proportion to ``declared`` GPUs (largest remainder, ties
    to the pool declared first), at least one node per pool."""
    if nodes < len(declared):
        raise ValueError(
            f"{nodes} nodes cannot serve {len(declared)} pools: give at least one node per "
            f"pool (--nodes {len(declared)} or more)"
        )
    names = list(declared)
    total = sum(declared.values()) or 1
    spare = nodes - len(names)  # one each first
    shares = {n: spare * declared[n] / total for n in names}
    counts = {n: 1 + int(shares[n]) for n in names}
    left = nodes - sum(counts.values())
    order = sorted(names, key=lambda n: (-(shares[n] - int(shares[n])), names.index(n)))
    for name in order[:left]:
        counts[name] += 1
    return counts


def plan(org: Org, nodes: int) -> tuple[Node, ...]:
    """The fleet: ``nodes`` nodes named ``sim-<pool>-<n>``."""
    counts = nodes_per_pool({name: pool.gpus for name, pool in org.pools.items()}, nodes)
    fleet = []
    for name, pool in org.pools.items():
        for n in range(1, counts[name] + 1):
            fleet.append(
                Node(
                    name=f"sim-{name}-{n}",
                    pool=name,
                    model=MODEL_NAMES.get(pool.model, pool.model),
                    gpus=NODE_GPUS,
                    memory_mib=pool.memory_mib_per_gpu,
                    memory_capacity_mib=int(pool.memory_mib_per_gpu * pool.memory_oversubscription),
                    compute_capacity_pct=int(100 * pool.compute_oversubscription),
                )
            )
    return tuple(fleet)


def resized(document: Mapping[str, Any], fleet: tuple[Node, ...]) -> dict[str, Any]:
    """``document`` (an organisation) with each pool's ``gpus`` set to the fleet's."""
    out = copy.deepcopy(dict(document))
    for pool in out.get("pools") or ():
        pool["gpus"] = sum(node.gpus for node in fleet if node.pool == pool["name"])
    return out


def load(path: Path) -> tuple[dict[str, Any], Org]:
    """An organisation file, as a document and as the organisation it declares
    (:class:`governance.errors.ConfigError` when it is not one)."""
    document = config.load_file(path)
    return document, config.build_org(document, source=str(path))
