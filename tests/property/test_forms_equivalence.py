"""The request-form registry reads every container as the old if-chain did.

``reference_demand`` is ``admission/demand.py``'s reading before the forms became
modules (issue 15), kept verbatim. Over generated pods (every form, their mixes,
canonical and broken quantities, requests that differ from limits, the SKU label or
not, init containers) ``demand.pod_demand`` must give the same requests and warnings,
or the same error: its class, reason code and message.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from admission import demand
from admission.review import parse_pod
from governance import backends
from tests.property import reference_demand

pytestmark = pytest.mark.property

NAMES = demand.GpuNames.of(backends.all_gpu_resources())

RESOURCE_NAMES = (
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "gpupool.io/small",
    "gpupool.io/large",
    "gpupool.io/",
    "nvidia.com/mig-1g.10gb",
    "huawei.com/Ascend910B3",
    "cpu",
    "memory",
)
GPU_NAMES = RESOURCE_NAMES[:7]

valid_quantities = st.sampled_from(
    ["0", "1", "2", "4", "30", "100", "3k", "1k", "1e1", "8Gi", "1.5Gi", "1000m", 2, 50]
)
broken_quantities = st.sampled_from(
    ["-1", "", "abc", "2mi", "1.5", "1500m", "500m", "0.5Gi", "1e400", 1.5, -2, float("nan")]
)
quantities = st.one_of(*[valid_quantities] * 5, broken_quantities)

HAMI = list(GPU_NAMES[1:4])
SHAPES = st.one_of(
    st.just(["gpupool.io/small"]),
    st.just(["nvidia.com/gpu"]),
    st.lists(st.sampled_from(HAMI), min_size=1, unique=True).map(lambda n: ["nvidia.com/gpu", *n]),
    st.lists(st.sampled_from(HAMI), min_size=1, unique=True),
    st.lists(st.sampled_from(GPU_NAMES), max_size=4, unique=True),
    st.lists(st.sampled_from(RESOURCE_NAMES), max_size=4, unique=True),
)
"""Each form as written, then any mix of the names (data planes' own and cpu too)."""


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """limits, and requests that are usually absent or equal, sometimes different."""
    names = draw(SHAPES)
    limits = {name: draw(quantities) for name in names}
    shape = draw(st.sampled_from(["limits", "limits", "requests", "equal", "some", "other"]))
    if shape == "limits":
        return {"limits": limits}
    if shape == "requests":
        return {"requests": limits}
    if shape == "equal":
        return {"limits": limits, "requests": dict(limits)}
    if shape == "some":
        kept = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
        return {"limits": limits, "requests": {n: limits[n] for n in kept}}
    return {"limits": limits, "requests": {n: draw(quantities) for n in names}}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    labels: dict[str, str] = {}
    sku = draw(st.sampled_from([None, "small", "large", "custom", ""]))
    if sku is not None:
        labels["gpupool.io/sku"] = sku
    count = draw(st.integers(min_value=1, max_value=3))
    containers = [{"name": f"c{i}", "resources": draw(resources())} for i in range(count)]
    init = draw(st.integers(min_value=0, max_value=len(containers) - 1))
    spec: dict[str, Any] = {"containers": containers[init:]}
    if init:
        spec["initContainers"] = [
            {**c, **({"restartPolicy": "Always"} if draw(st.booleans()) else {})}
            for c in containers[:init]
        ]
    return {"metadata": {"labels": labels}, "spec": spec}


def outcome(read: Any, pod: Any) -> tuple[Any, ...]:
    try:
        found = read(pod, NAMES)
    except demand.InvalidDemand as exc:
        return ("denied", type(exc), exc.code, str(exc))
    return (
        "read",
        tuple((c.container.name, c.request) for c in found.containers),
        found.warnings,
    )


@settings(max_examples=600, deadline=None)
@given(body=pods())
def test_registry_reads_every_pod_as_the_old_chain_did(body: dict[str, Any]) -> None:
    pod = parse_pod(body, namespace="ml")
    assert outcome(demand.pod_demand, pod) == outcome(reference_demand.pod_demand, pod)
