"""The SKU's own extended resource: ``gpupool.io/<sku>: N`` is N slices of that SKU.

First in the registry: a container that names a SKU this way names it alone, so any
other GPU resource beside it (another SKU, ``nvidia.com/gpu``, HAMi's memory or cores)
is refused rather than guessed at.
"""

from __future__ import annotations

from governance.contract import LABEL_SKU, SKU_RESOURCE_PREFIX
from governance.forms import base
from governance.placement import SliceRequest


class SkuResource:
    name = "sku-resource"
    resources: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = (SKU_RESOURCE_PREFIX,)

    def read(self, resources: base.Resources) -> base.Reading | None:
        q = resources.quantities
        for name in q:
            if name.startswith(SKU_RESOURCE_PREFIX):
                break
        else:
            return None
        if len(q) > 1:  # q holds only names some form reads: all are GPU requests
            raise base.InvalidDemand(
                f"container {resources.container!r} asks for {', '.join(sorted(q))}: ask "
                "for one SKU per container, either as gpupool.io/<sku>: N or as "
                f"nvidia.com/gpu: N with the pod label {LABEL_SKU}, not both."
            )
        ((name, value),) = q.items()
        slices = base.count(resources, name, value)
        if slices == 0:
            return base.Reading(request=None)
        sku = name[len(SKU_RESOURCE_PREFIX) :]
        return base.Reading(request=SliceRequest(count=slices, sku=sku))


FORM = SkuResource()
