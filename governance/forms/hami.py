"""HAMi's form: ``nvidia.com/gpu: N`` with ``nvidia.com/gpumem`` (MiB per GPU) or
``nvidia.com/gpumem-percentage``, and/or ``nvidia.com/gpucores`` (percent per GPU).

Checked against the pool's cards and counted against quota as SKU ``custom`` by
placement; this form only reads it. Memory or cores without a count ask for one GPU, as
HAMi reads them: a GPU request, never a way around the checks. The pod label
``gpupool.io/sku: custom`` asks for this form even without memory or cores (whole cards,
counted as ``custom``).
"""

from __future__ import annotations

from governance import quantity
from governance.contract import (
    LABEL_SKU,
    RESOURCE_HAMI_GPUCORES,
    RESOURCE_HAMI_GPUMEM,
    RESOURCE_HAMI_GPUMEM_PERCENTAGE,
    RESOURCE_NVIDIA_GPU,
    SKU_CUSTOM,
)
from governance.forms import base
from governance.placement import SliceRequest

SHAPE = (RESOURCE_HAMI_GPUMEM, RESOURCE_HAMI_GPUMEM_PERCENTAGE, RESOURCE_HAMI_GPUCORES)
"""The names that give a GPU's share: any of them puts a container in this form."""

MIB = 1024 * 1024


class Hami:
    name = "hami"
    resources: tuple[str, ...] = (RESOURCE_NVIDIA_GPU, *SHAPE)
    prefixes: tuple[str, ...] = ()

    def read(self, resources: base.Resources) -> base.Reading | None:
        q = resources.quantities
        if q.keys().isdisjoint(SHAPE) and resources.labels.get(LABEL_SKU) != SKU_CUSTOM:
            return None
        shape = sorted(n for n in SHAPE if n in q)  # for messages
        value = q.get(RESOURCE_NVIDIA_GPU)
        warnings: tuple[str, ...] = ()
        if value is None:
            gpus = 1
            warnings = (
                f"container {resources.container!r} asks for {', '.join(shape)} without "
                "nvidia.com/gpu: counted as 1 GPU.",
            )
        else:
            gpus = base.count(resources, RESOURCE_NVIDIA_GPU, value)
            if gpus == 0:
                raise base.InvalidDemand(
                    f"container {resources.container!r} asks for {', '.join(shape)} with "
                    "nvidia.com/gpu: 0: ask for at least 1 GPU, or remove the GPU memory and "
                    "cores."
                )
        memory_mib = memory_pct = compute_pct = None
        if RESOURCE_HAMI_GPUMEM in q:
            memory_mib = _memory_mib(resources, RESOURCE_HAMI_GPUMEM, q[RESOURCE_HAMI_GPUMEM])
        if RESOURCE_HAMI_GPUMEM_PERCENTAGE in q:
            if memory_mib is not None:
                raise base.InvalidDemand(
                    f"container {resources.container!r} asks for both {RESOURCE_HAMI_GPUMEM} "
                    f"and {RESOURCE_HAMI_GPUMEM_PERCENTAGE}: write one of them."
                )
            memory_pct = base.count(
                resources, RESOURCE_HAMI_GPUMEM_PERCENTAGE, q[RESOURCE_HAMI_GPUMEM_PERCENTAGE]
            )
        if RESOURCE_HAMI_GPUCORES in q:
            compute_pct = base.count(resources, RESOURCE_HAMI_GPUCORES, q[RESOURCE_HAMI_GPUCORES])
        request = SliceRequest(
            count=gpus,
            custom=True,
            memory_mib=memory_mib,
            memory_pct=memory_pct,
            compute_pct=compute_pct,
        )
        return base.Reading(request=request, warnings=warnings)


def _memory_mib(resources: base.Resources, name: str, value: base.Quantity) -> int:
    """HAMi's gpumem: a count of MiB, read as HAMi reads it (the quantity's value), so
    ``3000`` and its canonical form ``3k`` are both 3000 MiB; a binary unit is bytes
    (``8Gi`` is 8192 MiB), since nobody writes ``8Gi`` meaning 8 Gi of MiB."""
    expected = "MiB as a whole number (or a binary unit such as 8Gi)"
    parsed = base.parse(resources, name, value, expected)
    number = quantity.whole(parsed.value)
    if number is not None and parsed.format is quantity.Format.BINARY_SI:
        number = number // MIB if number % MIB == 0 else None
    if number is None:
        raise base.invalid(resources, name, value, "a whole number of MiB")
    if number < 0:
        raise base.invalid(resources, name, value, "a whole number of MiB, 0 or more")
    return number


FORM = Hami()
