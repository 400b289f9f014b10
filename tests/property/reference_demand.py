"""The reading of a pod's GPU demand as it was before request forms became modules
(``admission/demand.py`` at ec0f56c, issue 15): the reference that
``test_forms_equivalence.py`` compares the registry against, and the baseline of
``bench/demand.py``. Kept verbatim on purpose: do not fix or tidy it; it is what the
new code must answer exactly as.
"""

from __future__ import annotations

from admission.demand import (
    ContainerDemand,
    GpuNames,
    InvalidDemand,
    PodDemand,
    is_gpu_container,
)
from admission.review import Container, Pod, Quantity
from governance import quantity
from governance.contract import (
    LABEL_SKU,
    RESOURCE_HAMI_GPUCORES,
    RESOURCE_HAMI_GPUMEM,
    RESOURCE_HAMI_GPUMEM_PERCENTAGE,
    RESOURCE_NVIDIA_GPU,
    SKU_CUSTOM,
    SKU_RESOURCE_PREFIX,
)
from governance.placement import SliceRequest

HAMI_EXTRAS = (RESOURCE_HAMI_GPUMEM, RESOURCE_HAMI_GPUMEM_PERCENTAGE, RESOURCE_HAMI_GPUCORES)


def _read(container: Container, name: str, value: Quantity, expected: str) -> quantity.Quantity:
    """The quantity as apimachinery reads it: the API server sends it in canonical form
    (``3000`` arrives as ``3k``, ``1000`` as ``1k``), so suffixes must be honoured."""
    try:
        return quantity.parse(value)
    except quantity.InvalidQuantity as exc:
        raise _bad(container, name, value, expected, why=exc.reason) from None


def _integer(container: Container, name: str, value: Quantity) -> int:
    """A count: a non-negative whole number (Kubernetes' rule for extended resources);
    ``1k`` is 1000 and ``1500m`` is not whole."""
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)  # the common case, without building a Decimal
    expected = "a whole number"
    number = quantity.whole(_read(container, name, value, expected).value)
    if number is None:
        raise _bad(container, name, value, expected)
    if number < 0:
        raise _bad(container, name, value, "a whole number, 0 or more")
    return number


MIB = 1024 * 1024


def _memory_mib(container: Container, name: str, value: Quantity) -> int:
    """HAMi's gpumem: a count of MiB, read as HAMi reads it (the quantity's value), so
    ``3000`` and its canonical form ``3k`` are both 3000 MiB; a binary unit is bytes
    (``8Gi`` is 8192 MiB), since nobody writes ``8Gi`` meaning 8 Gi of MiB."""
    expected = "MiB as a whole number (or a binary unit such as 8Gi)"
    parsed = _read(container, name, value, expected)
    number = quantity.whole(parsed.value)
    if number is not None and parsed.format is quantity.Format.BINARY_SI:
        number = number // MIB if number % MIB == 0 else None
    if number is None:
        raise _bad(container, name, value, "a whole number of MiB")
    if number < 0:
        raise _bad(container, name, value, "a whole number of MiB, 0 or more")
    return number


def _bad(
    container: Container, name: str, value: object, expected: str, *, why: str = ""
) -> InvalidDemand:
    detail = f"; {why}" if why else ""
    return InvalidDemand(
        f"container {container.name!r} asks for {name}: {value!r}, which is not {expected}"
        f"{detail}. Write it as {expected} in resources.limits."
    )


def _quantity(container: Container, name: str) -> Quantity | None:
    limit = container.limits.get(name)
    request = container.requests.get(name)
    if limit is not None and request is not None and not _same(limit, request):
        raise InvalidDemand(
            f"container {container.name!r} asks for {name} with requests {request!r} and "
            f"limits {limit!r}: GPU resources cannot be overcommitted, so set them equal "
            "(or set only limits)."
        )
    return limit if limit is not None else request


def _same(a: Quantity, b: Quantity) -> bool:
    """Equal as quantities (``1k`` and ``1000``); a text that does not parse compares as
    text, and is reported when it is read."""
    try:
        return quantity.parse(a).value == quantity.parse(b).value
    except quantity.InvalidQuantity:
        return str(a) == str(b)


def pod_demand(pod: Pod, names: GpuNames) -> PodDemand:
    """Each GPU container's :class:`SliceRequest`; InvalidDemand when one cannot be read."""
    label_sku = pod.labels.get(LABEL_SKU) or None
    found: list[ContainerDemand] = []
    warnings: list[str] = []
    for container in pod.containers:
        if not is_gpu_container(container, names):
            continue
        request = _container_request(container, label_sku, names, warnings)
        if request is not None:
            found.append(ContainerDemand(container=container, request=request))
    return PodDemand(containers=tuple(found), warnings=tuple(warnings))


def _container_request(
    container: Container, label_sku: str | None, names: GpuNames, warnings: list[str]
) -> SliceRequest | None:
    resource_names = sorted(container.resource_names())
    native = [n for n in resource_names if n in names.native]
    if native:
        raise InvalidDemand(
            f"container {container.name!r} asks for {', '.join(native)} directly: these are "
            "the data plane's own resources, which gpupool writes. Ask for nvidia.com/gpu: N "
            f"with the pod label {LABEL_SKU}: <sku> (or gpupool.io/<sku>: N) instead."
        )
    sku_resources = [n for n in resource_names if n.startswith(SKU_RESOURCE_PREFIX)]
    gpu_value = _quantity(container, RESOURCE_NVIDIA_GPU)
    extras: dict[str, Quantity] = {}
    for extra in HAMI_EXTRAS:
        value = _quantity(container, extra)
        if value is not None:
            extras[extra] = value
    if sku_resources:
        if len(sku_resources) > 1 or gpu_value is not None or extras:
            asked = {*sku_resources, *extras}
            if gpu_value is not None:
                asked.add(RESOURCE_NVIDIA_GPU)
            raise InvalidDemand(
                f"container {container.name!r} asks for {', '.join(sorted(asked))}: "
                "ask for one SKU per container, either as gpupool.io/<sku>: N or as "
                f"nvidia.com/gpu: N with the pod label {LABEL_SKU}, not both."
            )
        name = sku_resources[0]
        sku_value = _quantity(container, name)
        assert sku_value is not None
        count = _integer(container, name, sku_value)
        if count == 0:
            return None
        return SliceRequest(count=count, sku=name[len(SKU_RESOURCE_PREFIX) :])
    count = 0 if gpu_value is None else _integer(container, RESOURCE_NVIDIA_GPU, gpu_value)
    if label_sku is not None and label_sku != SKU_CUSTOM:
        if count == 0:
            if extras:
                raise InvalidDemand(
                    f"container {container.name!r} asks for {', '.join(sorted(extras))} "
                    f"without nvidia.com/gpu, but the pod is labelled {LABEL_SKU}: "
                    f"{label_sku}: ask for nvidia.com/gpu: N slices of {label_sku}."
                )
            return None
        if extras:
            warnings.append(
                f"container {container.name!r}: {', '.join(sorted(extras))} ignored: SKU "
                f"{label_sku} (pod label {LABEL_SKU}) fixes the memory and compute of a slice."
            )
        return SliceRequest(count=count, sku=label_sku)
    if extras or label_sku == SKU_CUSTOM:
        if gpu_value is None:
            count = 1
            warnings.append(
                f"container {container.name!r} asks for {', '.join(sorted(extras))} "
                "without nvidia.com/gpu: counted as 1 GPU."
            )
        elif count == 0:
            raise InvalidDemand(
                f"container {container.name!r} asks for {', '.join(sorted(extras))} with "
                "nvidia.com/gpu: 0: ask for at least 1 GPU, or remove the GPU memory and "
                "cores."
            )
        memory_mib = memory_pct = compute_pct = None
        if RESOURCE_HAMI_GPUMEM in extras:
            memory_mib = _memory_mib(container, RESOURCE_HAMI_GPUMEM, extras[RESOURCE_HAMI_GPUMEM])
        if RESOURCE_HAMI_GPUMEM_PERCENTAGE in extras:
            if memory_mib is not None:
                raise InvalidDemand(
                    f"container {container.name!r} asks for both {RESOURCE_HAMI_GPUMEM} and "
                    f"{RESOURCE_HAMI_GPUMEM_PERCENTAGE}: write one of them."
                )
            memory_pct = _integer(
                container, RESOURCE_HAMI_GPUMEM_PERCENTAGE, extras[RESOURCE_HAMI_GPUMEM_PERCENTAGE]
            )
        if RESOURCE_HAMI_GPUCORES in extras:
            compute_pct = _integer(
                container, RESOURCE_HAMI_GPUCORES, extras[RESOURCE_HAMI_GPUCORES]
            )
        return SliceRequest(
            count=count,
            custom=True,
            memory_mib=memory_mib,
            memory_pct=memory_pct,
            compute_pct=compute_pct,
        )
    if count == 0:
        return None
    return SliceRequest(count=count)
