"""Cambricon MLUs shared through HAMi (dynamic sMLU), with HAMi's resource names.

HAMi's chart defaults (``mluResourceName``, ``mluResourceMem``, ``mluResourceCores``)
are ``cambricon.com/vmlu`` (MLUs), ``cambricon.com/mlu.smlu.vmemory`` (memory, in units
of 256 MiB: HAMi multiplies it by 256) and ``cambricon.com/mlu.smlu.vcore`` (percent of
an MLU's compute). Per container this writes the count, and for a fraction of a card
the memory units and the cores; a whole card is the count alone. The pod is pinned to
the pool's MLU model with HAMi's ``cambricon.com/use-mlutype`` annotation and scheduled
by HAMi's scheduler.

A SKU's memory must be a whole number of 256 MiB units, or the MLU would hold a
different amount than was sold. A request in the HAMi form is rounded up to the next unit.

Options: ``count_resource``, ``memory_resource``, ``cores_resource`` (some device plugin
builds name them per model, e.g. ``cambricon.com/mlu370.smlu.vmemory``),
``scheduler_name``, ``mlu_type`` (the use-mlutype value; ``pool.model`` by default,
empty disables the pin).
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import SliceGrant
from governance.model import Pool, Sku

RESOURCE_COUNT = "cambricon.com/vmlu"
RESOURCE_MEMORY = "cambricon.com/mlu.smlu.vmemory"
RESOURCE_CORES = "cambricon.com/mlu.smlu.vcore"
RESOURCE_MLU = "cambricon.com/mlu"
"""The device plugin's whole-MLU resource (HAMi's flag default for the count)."""
ANNOTATION_USE_MLUTYPE = "cambricon.com/use-mlutype"
ANNOTATION_NOUSE_MLUTYPE = "cambricon.com/nouse-mlutype"
MEMORY_UNIT_MIB = 256
DEFAULT_SCHEDULER = "hami-scheduler"
OPTIONS = ("count_resource", "memory_resource", "cores_resource", "scheduler_name", "mlu_type")


class CambriconBackend:
    name = "cambricon"
    vendor = "cambricon"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES,
        (RESOURCE_COUNT, RESOURCE_MEMORY, RESOURCE_CORES, RESOURCE_MLU),
    )
    gpu_annotations: tuple[str, ...] = (ANNOTATION_USE_MLUTYPE, ANNOTATION_NOUSE_MLUTYPE)

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        options = _common.Options(pool, OPTIONS)
        resources = {
            options.resource("count_resource", RESOURCE_COUNT): _common.quantity(grant.gpus)
        }
        if not _common.is_whole_card(grant.memory_mib, grant.compute_pct, pool):
            memory = min(grant.memory_mib, pool.memory_mib_per_gpu)
            units = _common.ceil_div(memory, MEMORY_UNIT_MIB)
            resources[options.resource("memory_resource", RESOURCE_MEMORY)] = _common.quantity(
                units
            )
            resources[options.resource("cores_resource", RESOURCE_CORES)] = _common.quantity(
                max(1, min(grant.compute_pct, 100))
            )
        return ContainerChanges(resources=resources)

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        options = _common.Options(pool, OPTIONS)
        scheduler = options.string("scheduler_name", DEFAULT_SCHEDULER)
        mlu_type = options.string("mlu_type", pool.model)
        annotations = {ANNOTATION_USE_MLUTYPE: mlu_type} if mlu_type else {}
        return _common.base_pod(pool, annotations=annotations, scheduler_name=scheduler or None)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        for key, default in (
            ("count_resource", RESOURCE_COUNT),
            ("memory_resource", RESOURCE_MEMORY),
            ("cores_resource", RESOURCE_CORES),
        ):
            options.resource(key, default)
        options.string("scheduler_name", DEFAULT_SCHEDULER)
        options.string("mlu_type", pool.model)
        for sku in skus:
            memory = sku.memory_mib_on(pool)
            whole = _common.is_whole_card(memory, sku.compute_pct, pool)
            if not whole and memory % MEMORY_UNIT_MIB:
                raise _common.sku_error(
                    pool,
                    sku,
                    f"its memory, {memory} MiB per MLU, is not a whole number of the "
                    f"{MEMORY_UNIT_MIB} MiB units in which HAMi allocates MLU memory",
                    f"Use a multiple of {MEMORY_UNIT_MIB} MiB, for example "
                    f"{memory // MEMORY_UNIT_MIB * MEMORY_UNIT_MIB or MEMORY_UNIT_MIB} or "
                    f"{_common.ceil_div(memory, MEMORY_UNIT_MIB) * MEMORY_UNIT_MIB} MiB.",
                )


BACKEND = CambriconBackend()
