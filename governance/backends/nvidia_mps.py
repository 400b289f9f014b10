"""NVIDIA's device plugin with MPS sharing: per-client limits through MPS's environment.

Writes, per GPU container, one replica of the shared resource per GPU
(``nvidia.com/gpu`` by default; ``nvidia.com/gpu.shared`` when the device plugin runs
with ``renameByDefault``; set it with the ``resource`` option) and the MPS client's
environment, as NVIDIA's MPS guide documents it:

- ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``: the percent of each GPU's SMs the client may use;
- ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``: ``ordinal=limit`` pairs, comma-separated, one per
  GPU the container sees (ordinals start at 0 inside the container), in MiB with the
  ``M`` suffix, e.g. ``0=8192M,1=8192M``.

A client's environment can only *lower* the limits that the MPS control daemon set.
NVIDIA's device plugin sets them to ``1/replicas`` of the card; give the same number as
the ``replicas`` option and every SKU is checked to fit in one replica.
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import RESOURCE_NVIDIA_GPU, SliceGrant
from governance.model import Pool, Sku

ENV_ACTIVE_THREAD_PERCENTAGE = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
ENV_PINNED_DEVICE_MEM_LIMIT = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
RESOURCE_SHARED = "nvidia.com/gpu.shared"
OPTIONS = ("resource", "replicas")


def pinned_mem_limit(memory_mib: int, gpus: int) -> str:
    """``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` for ``gpus`` devices of ``memory_mib`` each."""
    return ",".join(f"{ordinal}={memory_mib}M" for ordinal in range(gpus))


def _replica_share(pool: Pool, replicas: int) -> tuple[int, int]:
    """Memory (MiB) and compute (%) of one replica, as the device plugin divides a card."""
    return pool.memory_mib_per_gpu // replicas, 100 // replicas


class NvidiaMpsBackend:
    name = "nvidia-mps"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES, (RESOURCE_SHARED,)
    )
    gpu_annotations: tuple[str, ...] = ()

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        options = _common.Options(pool, OPTIONS)
        resource = options.resource("resource", RESOURCE_NVIDIA_GPU)
        replicas = options.integer("replicas", None)
        if replicas is not None:
            memory, compute = _replica_share(pool, replicas)
            if grant.memory_mib > memory or grant.compute_pct > compute:
                raise _common.cannot_serve(
                    grant,
                    pool,
                    f"one MPS client gets at most {memory} MiB and {compute}% of a GPU here "
                    f"({replicas} replicas per GPU)",
                    "Ask for a smaller slice, or use a queue on a pool with larger replicas.",
                )
        compute_pct = max(1, min(grant.compute_pct, 100))
        return ContainerChanges(
            resources={resource: _common.quantity(grant.gpus)},
            env={
                ENV_ACTIVE_THREAD_PERCENTAGE: str(compute_pct),
                ENV_PINNED_DEVICE_MEM_LIMIT: pinned_mem_limit(grant.memory_mib, grant.gpus),
            },
        )

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        return _common.base_pod(pool)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.resource("resource", RESOURCE_NVIDIA_GPU)
        replicas = options.integer("replicas", None)
        if replicas is None:
            return
        memory, compute = _replica_share(pool, replicas)
        for sku in skus:
            sku_memory = sku.memory_mib_on(pool)
            if sku_memory > memory or sku.compute_pct > compute:
                raise _common.sku_error(
                    pool,
                    sku,
                    f"it is {sku_memory} MiB and {sku.compute_pct}% per GPU, more than one "
                    f"MPS replica ({memory} MiB, {compute}% with {replicas} replicas per GPU); "
                    "an MPS client can only lower the daemon's limits",
                    "Make the SKU fit one replica, or lower the pool's replicas.",
                )


BACKEND = NvidiaMpsBackend()
