"""NVIDIA's device plugin without sharing: whole GPUs only.

Writes ``nvidia.com/gpu: count x gpus_per_slice`` (the resource name is configurable
with the ``resource`` option, for a device plugin that renames it). Every SKU offered
on the pool must be a whole card (all of its memory and 100% compute): anything less
would be sold as a fraction but use a whole card, so it is a configuration error.
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import RESOURCE_NVIDIA_GPU, SliceGrant
from governance.model import Pool, Sku

OPTIONS = ("resource",)


class NvidiaWholeBackend:
    name = "nvidia-whole"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.USER_RESOURCES
    gpu_annotations: tuple[str, ...] = ()

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        if not _common.is_whole_card(grant.memory_mib, grant.compute_pct, pool):
            raise _common.cannot_serve(
                grant,
                pool,
                "this pool hands out whole GPUs only",
                f"Ask for whole GPUs ({pool.memory_mib_per_gpu} MiB, 100% each) or use a "
                "queue on a pool that shares GPUs.",
            )
        resource = _common.Options(pool, OPTIONS).resource("resource", RESOURCE_NVIDIA_GPU)
        return ContainerChanges(resources={resource: _common.quantity(grant.gpus)})

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        return _common.base_pod(pool)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.resource("resource", RESOURCE_NVIDIA_GPU)
        for sku in skus:
            memory = sku.memory_mib_on(pool)
            if not _common.is_whole_card(memory, sku.compute_pct, pool):
                raise _common.sku_error(
                    pool,
                    sku,
                    f"it is {memory} MiB and {sku.compute_pct}% per GPU, but this backend "
                    f"hands out whole cards ({pool.memory_mib_per_gpu} MiB, 100%)",
                    "Offer it on a pool with a sharing backend (hami, nvidia-mps, "
                    "nvidia-timeslice, nvidia-mig, kai), or make it a whole card.",
                )


BACKEND = NvidiaWholeBackend()
