"""Hygon DCUs shared through HAMi, with HAMi's resource names.

HAMi's chart defaults (``dcuResourceName``, ``dcuResourceMem``, ``dcuResourceCores``):
``hygon.com/dcunum`` (DCUs), ``hygon.com/dcumem`` (memory per DCU, in MiB, or in units
of HAMi's ``memoryFactor`` MiB when that is set) and ``hygon.com/dcucores`` (percent of
a DCU's compute). The pod is pinned to the pool's DCU model with HAMi's
``hygon.com/use-dcutype`` annotation and scheduled by HAMi's scheduler.

Options: ``memory_factor`` (HAMi's ``memoryFactor``, 1 by default: SKU memory must then
be a multiple of it), ``scheduler_name``, ``dcu_type`` (default ``pool.model``, empty
disables the pin).
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import SliceGrant
from governance.model import Pool, Sku

RESOURCE_COUNT = "hygon.com/dcunum"
RESOURCE_MEMORY = "hygon.com/dcumem"
RESOURCE_CORES = "hygon.com/dcucores"
ANNOTATION_USE_DCUTYPE = "hygon.com/use-dcutype"
ANNOTATION_NOUSE_DCUTYPE = "hygon.com/nouse-dcutype"
DEFAULT_SCHEDULER = "hami-scheduler"
OPTIONS = ("memory_factor", "scheduler_name", "dcu_type")


def _factor(pool: Pool) -> int:
    factor = _common.Options(pool, OPTIONS).integer("memory_factor", 1)
    assert factor is not None
    return factor


class HygonBackend:
    name = "hygon"
    vendor = "hygon"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES, (RESOURCE_COUNT, RESOURCE_MEMORY, RESOURCE_CORES)
    )
    gpu_annotations: tuple[str, ...] = (ANNOTATION_USE_DCUTYPE, ANNOTATION_NOUSE_DCUTYPE)

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        resources = {RESOURCE_COUNT: _common.quantity(grant.gpus)}
        if not _common.is_whole_card(grant.memory_mib, grant.compute_pct, pool):
            memory = min(grant.memory_mib, pool.memory_mib_per_gpu)
            units = _common.ceil_div(memory, _factor(pool))
            resources[RESOURCE_MEMORY] = _common.quantity(units)
            resources[RESOURCE_CORES] = _common.quantity(max(1, min(grant.compute_pct, 100)))
        return ContainerChanges(resources=resources)

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        options = _common.Options(pool, OPTIONS)
        scheduler = options.string("scheduler_name", DEFAULT_SCHEDULER)
        dcu_type = options.string("dcu_type", pool.model)
        annotations = {ANNOTATION_USE_DCUTYPE: dcu_type} if dcu_type else {}
        return _common.base_pod(pool, annotations=annotations, scheduler_name=scheduler or None)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.string("scheduler_name", DEFAULT_SCHEDULER)
        options.string("dcu_type", pool.model)
        factor = _factor(pool)
        for sku in skus:
            memory = sku.memory_mib_on(pool)
            whole = _common.is_whole_card(memory, sku.compute_pct, pool)
            if not whole and memory % factor:
                raise _common.sku_error(
                    pool,
                    sku,
                    f"its memory, {memory} MiB per DCU, is not a whole number of the "
                    f"{factor} MiB units (memory_factor) in which HAMi allocates DCU memory",
                    f"Use a multiple of {factor} MiB.",
                )


BACKEND = HygonBackend()
