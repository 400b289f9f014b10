"""What a pod asks for: each GPU container's request, read by the request forms. Pure.

The forms users write (DESIGN.md, "What a user writes") are modules of
:mod:`governance.forms`, asked per container in order, first match wins. This module
does the pod-level work around them:

- which containers ask for GPUs at all: any resource name a form reads, or a data
  plane's own; the rest are never looked at;
- a container that names a data plane's own resource (``nvidia.com/mig-1g.10gb``,
  ``huawei.com/Ascend910B`` ...) is refused: the webhook writes those names, users ask
  in one of the forms;
- quantities are read from ``limits``, else ``requests``, which must be equal as
  quantities where both are set (Kubernetes requires it for extended resources);
- every container's request, and the warnings for the user, gathered for the pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from admission.review import Container, Pod, Quantity
from governance import forms, quantity
from governance.contract import LABEL_SKU, PREFIX
from governance.forms import InvalidDemand as InvalidDemand  # the webhook denies with it
from governance.placement import SliceRequest

USER_RESOURCES = frozenset(forms.USER_RESOURCES)
"""The resource names users write (read from the forms' registry)."""


@dataclass(frozen=True, kw_only=True)
class GpuNames:
    """Which resource names mean "a GPU": the user's names and every data plane's."""

    native: frozenset[str]
    """Every backend's own resource names (written by the webhook, not by users)."""
    annotations: frozenset[str] = frozenset()
    """Every backend's pod annotations that hand out or steer GPUs (KAI's
    ``gpu-memory``...): written by the webhook only, removed from any pod that has them."""

    @classmethod
    def of(cls, backend_resources: Iterable[str], annotations: Iterable[str] = ()) -> GpuNames:
        return cls(
            native=frozenset(backend_resources) - USER_RESOURCES,
            annotations=frozenset(annotations),
        )

    def is_gpu(self, name: str) -> bool:
        return forms.is_user_resource(name) or name in self.native


def is_gpu_container(container: Container, names: GpuNames) -> bool:
    return any(names.is_gpu(n) for n in container.limits) or any(
        names.is_gpu(n) for n in container.requests
    )


def is_gpu_pod(pod: Pod, names: GpuNames) -> bool:
    """Whether any container asks for anything GPU-like (cheap: no store, no Org)."""
    return any(is_gpu_container(c, names) for c in pod.containers)


@dataclass(frozen=True, kw_only=True)
class ContainerDemand:
    container: Container
    request: SliceRequest


@dataclass(frozen=True, kw_only=True)
class PodDemand:
    """Every GPU container's request (init containers first) and what to tell the user."""

    containers: tuple[ContainerDemand, ...]
    warnings: tuple[str, ...] = ()


def pod_demand(pod: Pod, names: GpuNames) -> PodDemand:
    """Each GPU container's :class:`SliceRequest`; InvalidDemand when one cannot be read."""
    found: list[ContainerDemand] = []
    warnings: list[str] = []
    for container in pod.containers:
        quantities = _gpu_quantities(container, names)
        if quantities is None:
            continue
        reading = forms.read(forms.Resources(container.name, quantities, pod.labels))
        if reading is None:
            continue
        warnings.extend(reading.warnings)
        if reading.request is not None:
            found.append(ContainerDemand(container=container, request=reading.request))
    return PodDemand(containers=tuple(found), warnings=tuple(warnings))


_ORDER = {name: i for i, name in enumerate(forms.USER_RESOURCES)}


def _gpu_quantities(container: Container, names: GpuNames) -> dict[str, Quantity] | None:
    """The quantity of each name the forms read (the limit, else the request), or None
    when the container asks for no GPU.

    Refused: a data plane's own name, or requests unequal to limits (the first in the
    registry's order of names, then the SKU resources by name). One pass over the
    container's resources: every container of every GPU pod goes through here.
    """
    limits, requests = container.limits, container.requests
    native = names.native
    found: dict[str, Quantity] = {}
    own: list[str] = []
    for name, value in limits.items():
        if name in native:
            own.append(name)
        elif forms.is_user_resource(name):
            found[name] = value
    overcommitted: list[str] = []
    for name, value in requests.items():
        if name in native:
            if name not in limits:
                own.append(name)
        elif forms.is_user_resource(name):
            limit = found.setdefault(name, value)
            if limit is not value and limit != value and not _same(limit, value):
                overcommitted.append(name)
    if own:
        raise InvalidDemand(
            f"container {container.name!r} asks for {', '.join(sorted(own))} directly: these "
            "are the data plane's own resources, which gpupool writes. Ask for nvidia.com/gpu: "
            f"N with the pod label {LABEL_SKU}: <sku> (or gpupool.io/<sku>: N) instead."
        )
    if overcommitted:
        name = min(overcommitted, key=lambda n: (_ORDER.get(n, len(_ORDER)), n))
        raise InvalidDemand(
            f"container {container.name!r} asks for {name} with requests {requests[name]!r} "
            f"and limits {limits[name]!r}: GPU resources cannot be overcommitted, so set them "
            "equal (or set only limits)."
        )
    return found or None


def _same(a: Quantity, b: Quantity) -> bool:
    """Equal as quantities (``1k`` and ``1000``); a text that does not parse compares as
    text, and is reported when it is read."""
    try:
        return quantity.parse(a).value == quantity.parse(b).value
    except quantity.InvalidQuantity:
        return str(a) == str(b)


def gpu_fields(pod: Pod, names: GpuNames) -> dict[str, dict[str, str]]:
    """The GPU resources of each container (for comparing an UPDATE with the old pod)."""
    out: dict[str, dict[str, str]] = {}
    for c in pod.containers:
        fields = {
            f"{kind}:{n}": str(v)
            for kind, values in (("limits", c.limits), ("requests", c.requests))
            for n, v in values.items()
            if names.is_gpu(n)
        }
        if fields:
            out[c.name] = fields
    return out


def gpupool_metadata(pod: Pod, names: GpuNames) -> dict[str, str]:
    """The pod's gpupool.io/ labels and annotations, and the data planes' GPU annotations."""
    found = {f"label:{k}": v for k, v in pod.labels.items() if k.startswith(PREFIX)}
    found.update(
        {
            f"annotation:{k}": v
            for k, v in pod.annotations.items()
            if k.startswith(PREFIX) or k in names.annotations
        }
    )
    return found
