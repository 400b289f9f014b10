"""Huawei Ascend NPUs shared through HAMi (vNPU), with HAMi's resource names.

HAMi names the resources after the chip's ``commonWord`` in its device config
(``huawei.com/Ascend910B3``, ``huawei.com/Ascend910B3-memory`` in MiB; likewise
Ascend910A, Ascend910B2, Ascend910B4, Ascend310P). Per container this writes:

- ``huawei.com/<chip>``: NPUs, ``count x gpus_per_slice``;
- ``huawei.com/<chip>-memory``: memory per NPU in MiB, only for a fraction of a card.

In HAMi's default (hard-split) mode the vNPU template fixes the compute (AI cores) and
HAMi rounds the memory up to the nearest template, so sell SKUs whose memory is one of
the chip's templates (for 910B3: 16384 and 32768 MiB) to sell exactly what is used.
HAMi refuses a fraction on more than one NPU ("vNPU not supported for multiple
devices"): a fractional SKU must be one NPU per slice, and a container gets one slice.
The ``-core`` resource exists only in HAMi's soft-split ``hami-core`` mode and is not
written.

Options: ``chip`` (the commonWord; ``pool.model`` by default), ``scheduler_name``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import SliceGrant
from governance.errors import ConfigError
from governance.model import Pool, Sku

PREFIX = "huawei.com/"
CHIPS = (
    "Ascend910A",
    "Ascend910B",
    "Ascend910B2",
    "Ascend910B3",
    "Ascend910B4",
    "Ascend910B4-1",
    "Ascend910C",
    "Ascend310P",
)
"""The commonWords of HAMi's shipped device config (charts/hami device-configmap)."""
ANNOTATION_VNPU_MODE = "huawei.com/vnpu-mode"
"""HAMi: ``hami-core`` switches to soft split, where memory is not a template."""
DEFAULT_SCHEDULER = "hami-scheduler"
OPTIONS = ("chip", "scheduler_name")
_CHIP = re.compile(r"^Ascend[0-9][0-9A-Za-z]*(-[0-9A-Za-z]+)?$")


def chip_of(pool: Pool) -> str:
    chip = _common.Options(pool, OPTIONS).string("chip", pool.model)
    if not _CHIP.match(chip):
        raise ConfigError(
            f"pool {pool.name!r}: {chip!r} is not an Ascend chip name as HAMi writes it "
            f"(its commonWord, for example {', '.join(CHIPS)}); set backend_options.chip",
            path=f"pools.{pool.name}.backend_options.chip",
        )
    return chip


class AscendBackend:
    name = "ascend"
    vendor = "huawei"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES,
        (f"{PREFIX}{chip}{suffix}" for chip in CHIPS for suffix in ("", "-memory", "-core")),
    )
    gpu_annotations: tuple[str, ...] = (ANNOTATION_VNPU_MODE,)

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        chip = chip_of(pool)
        resources = {f"{PREFIX}{chip}": _common.quantity(grant.gpus)}
        if grant.memory_mib < pool.memory_mib_per_gpu:
            if grant.gpus > 1:
                raise _common.cannot_serve(
                    grant,
                    pool,
                    "HAMi shares an Ascend NPU only when a container asks for one NPU",
                    "Ask for one slice of a fractional SKU, or for whole NPUs.",
                )
            resources[f"{PREFIX}{chip}-memory"] = _common.quantity(grant.memory_mib)
        return ContainerChanges(resources=resources)

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        scheduler = _common.Options(pool, OPTIONS).string("scheduler_name", DEFAULT_SCHEDULER)
        return _common.base_pod(pool, scheduler_name=scheduler or None)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.string("scheduler_name", DEFAULT_SCHEDULER)
        chip_of(pool)
        for sku in skus:
            if sku.memory_mib_on(pool) < pool.memory_mib_per_gpu and sku.gpus_per_slice > 1:
                raise _common.sku_error(
                    pool,
                    sku,
                    f"it is a fraction of an NPU on {sku.gpus_per_slice} NPUs per slice, and "
                    "HAMi shares an Ascend NPU only for single-NPU requests",
                    "Make it one NPU per slice, or whole NPUs.",
                )


BACKEND = AscendBackend()
