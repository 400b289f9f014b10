"""Plain ``nvidia.com/gpu: N``: N slices of the queue's default SKU (a whole card unless
the queue is configured otherwise). Last in the registry: what no other form claimed."""

from __future__ import annotations

from governance.contract import RESOURCE_NVIDIA_GPU
from governance.forms import base
from governance.placement import SliceRequest


class Plain:
    name = "plain"
    resources: tuple[str, ...] = (RESOURCE_NVIDIA_GPU,)
    prefixes: tuple[str, ...] = ()

    def read(self, resources: base.Resources) -> base.Reading | None:
        value = resources.quantities.get(RESOURCE_NVIDIA_GPU)
        if value is None:
            return None
        gpus = base.count(resources, RESOURCE_NVIDIA_GPU, value)
        return base.Reading(request=SliceRequest(count=gpus) if gpus else None)


FORM = Plain()
