"""HAMi on NVIDIA GPUs: memory and compute limits enforced in the container by HAMi-core.

What it writes, per GPU container (HAMi's default resource names, chart values
``resourceName``, ``resourceMem``, ``resourceMemPercentage``, ``resourceCores``):

- ``nvidia.com/gpu``: GPUs, ``count x gpus_per_slice``;
- ``nvidia.com/gpumem``: memory per GPU in MiB, or ``nvidia.com/gpumem-percentage: 100``
  for a whole card's memory (a card reports a little less than its nominal size, so a
  whole card asked for in MiB might never fit);
- ``nvidia.com/gpucores``: percent of each GPU's compute.

And on the pod: ``schedulerName`` (HAMi's scheduler extender, ``hami-scheduler`` by
default) and the annotation ``nvidia.com/use-gputype`` so that the slice lands on the
pool's GPU model (HAMi matches it, case-insensitively, as a substring of the card type).

Options (``pool.backend_options``): ``scheduler_name`` (string; empty leaves the pod's
scheduler alone), ``gpu_type`` (the use-gputype value; defaults to ``pool.model``, empty
disables the pin).
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import (
    RESOURCE_HAMI_GPUCORES,
    RESOURCE_HAMI_GPUMEM,
    RESOURCE_HAMI_GPUMEM_PERCENTAGE,
    RESOURCE_NVIDIA_GPU,
    SliceGrant,
)
from governance.model import Pool, Sku

ANNOTATION_USE_GPUTYPE = "nvidia.com/use-gputype"
"""HAMi: comma-separated GPU types the pod may use (pkg/device/nvidia, GPUInUse)."""
ANNOTATION_NOUSE_GPUTYPE = "nvidia.com/nouse-gputype"
DEFAULT_SCHEDULER = "hami-scheduler"
OPTIONS = ("scheduler_name", "gpu_type")


class HamiBackend:
    name = "hami"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.USER_RESOURCES
    gpu_annotations: tuple[str, ...] = (ANNOTATION_USE_GPUTYPE, ANNOTATION_NOUSE_GPUTYPE)

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        resources = {RESOURCE_NVIDIA_GPU: _common.quantity(grant.gpus)}
        if grant.memory_mib >= pool.memory_mib_per_gpu:
            resources[RESOURCE_HAMI_GPUMEM_PERCENTAGE] = "100"
        else:
            resources[RESOURCE_HAMI_GPUMEM] = _common.quantity(grant.memory_mib)
        resources[RESOURCE_HAMI_GPUCORES] = _common.quantity(min(grant.compute_pct, 100))
        return ContainerChanges(resources=resources)

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        options = _common.Options(pool, OPTIONS)
        scheduler = options.string("scheduler_name", DEFAULT_SCHEDULER)
        gpu_type = options.string("gpu_type", pool.model)
        annotations = {ANNOTATION_USE_GPUTYPE: gpu_type} if gpu_type else {}
        return _common.base_pod(pool, annotations=annotations, scheduler_name=scheduler or None)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.string("scheduler_name", DEFAULT_SCHEDULER)
        options.string("gpu_type", pool.model)


BACKEND = HamiBackend()
