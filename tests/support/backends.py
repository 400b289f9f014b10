"""Builders for backend tests: pools, SKUs and grants with sensible defaults.

Each builder takes keyword overrides, as kueue's ``Make...`` wrappers do, so a test
states only what it is about.
"""

from __future__ import annotations

from typing import Any

from governance.contract import SliceGrant
from governance.model import Pool, Sku

A100_80GB_MIB = 81920
H100_80GB_MIB = 81559
"""What nvidia-smi reports for an H100 80GB: a little less than its nominal size."""


def make_pool(backend: str = "hami", **overrides: Any) -> Pool:
    fields: dict[str, Any] = {
        "name": "pool-a",
        "vendor": "nvidia",
        "model": "A100-SXM4-80GB",
        "backend": backend,
        "gpus": 16,
        "memory_mib_per_gpu": A100_80GB_MIB,
        "node_selector": {"gpupool.io/pool": "pool-a"},
    }
    fields.update(overrides)
    return Pool(**fields)


def make_sku(name: str = "small", **overrides: Any) -> Sku:
    fields: dict[str, Any] = {
        "name": name,
        "compute_pct": 25,
        "memory_mib": 20480,
        "pools": ("pool-a",),
    }
    fields.update(overrides)
    return Sku(**fields)


def make_grant(pool: Pool | None = None, **overrides: Any) -> SliceGrant:
    pool = pool or make_pool()
    fields: dict[str, Any] = {
        "count": 1,
        "memory_mib": 20480,
        "compute_pct": 25,
        "backend": pool.backend,
        "pool": pool.name,
        "sku": "small",
        "gpus_per_slice": 1,
    }
    fields.update(overrides)
    return SliceGrant(**fields)


def whole_grant(pool: Pool, **overrides: Any) -> SliceGrant:
    """A grant of whole cards of ``pool``."""
    fields: dict[str, Any] = {
        "memory_mib": pool.memory_mib_per_gpu,
        "compute_pct": 100,
        "sku": "whole",
    }
    fields.update(overrides)
    return make_grant(pool, **fields)
