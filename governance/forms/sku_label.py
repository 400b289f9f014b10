"""The SKU label: ``gpupool.io/sku: <sku>`` on the pod, ``nvidia.com/gpu: N`` in each GPU
container, is N slices of that SKU.

The SKU fixes a slice's memory and compute, so HAMi's memory and cores beside the count
are ignored, with a warning; without a count they are refused, since the user meant a
shape the label overrides. The label ``custom`` is not a SKU: it asks for the HAMi form.
"""

from __future__ import annotations

from governance.contract import LABEL_SKU, RESOURCE_NVIDIA_GPU, SKU_CUSTOM
from governance.forms import base
from governance.placement import SliceRequest


class SkuLabel:
    name = "sku-label"
    resources: tuple[str, ...] = (RESOURCE_NVIDIA_GPU,)
    prefixes: tuple[str, ...] = ()

    def read(self, resources: base.Resources) -> base.Reading | None:
        sku = resources.labels.get(LABEL_SKU)
        if not sku or sku == SKU_CUSTOM:
            return None
        value = resources.quantities.get(RESOURCE_NVIDIA_GPU)
        gpus = 0 if value is None else base.count(resources, RESOURCE_NVIDIA_GPU, value)
        # the SKU's own resources were read by the form before this one: the rest are
        # shapes (HAMi's memory and cores) that the SKU overrides
        others = [n for n in resources.quantities if n != RESOURCE_NVIDIA_GPU]
        if gpus == 0:
            if others:
                raise base.InvalidDemand(
                    f"container {resources.container!r} asks for {', '.join(sorted(others))} "
                    f"without nvidia.com/gpu, but the pod is labelled {LABEL_SKU}: {sku}: ask "
                    f"for nvidia.com/gpu: N slices of {sku}."
                )
            return base.Reading(request=None)
        request = SliceRequest(count=gpus, sku=sku)
        if not others:
            return base.Reading(request=request)
        warning = (
            f"container {resources.container!r}: {', '.join(sorted(others))} ignored: SKU "
            f"{sku} (pod label {LABEL_SKU}) fixes the memory and compute of a slice."
        )
        return base.Reading(request=request, warnings=(warning,))


FORM = SkuLabel()
