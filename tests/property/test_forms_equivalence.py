"""The request-form registry reads every container as the old if-chain did.

``reference_demand`` is ``admission/demand.py``'s reading before the forms became
modules (issue 15), kept verbatim. Over generated pods (every form, their mixes,
canonical and broken quantities, requests that differ from limits, the SKU label or
not, init containers) ``demand.pod_demand`` must give the same requests and warnings,
or the same error: its class, reason code and message.

One precedence changed on purpose: requests are checked equal to limits for every name
the forms read before any form reads the container, so a container that writes
``gpupool.io/<sku>`` beside other GPU resources *and* sets that SKU resource's requests
unlike its limits now hears about the requests first (before: about the mix). Both are
InvalidRequest for the same container; :func:`overcommit_reported_first` recognises
exactly that case, and ``tests/unit/test_webhook_demand.py`` pins it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from admission import demand
from admission.review import parse_pod
from governance import backends
from governance.contract import Reason
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
    return {
        "limits": limits,
        "requests": {n: draw(quantities) if draw(st.booleans()) else limits[n] for n in names},
    }


@st.composite
def pods(draw: st.DrawFn, max_containers: int = 3) -> dict[str, Any]:
    labels: dict[str, str] = {}
    sku = draw(st.sampled_from([None, "small", "large", "custom", ""]))
    if sku is not None:
        labels["gpupool.io/sku"] = sku
    count = draw(st.integers(min_value=1, max_value=max_containers))
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


def overcommit_reported_first(new: tuple[Any, ...], old: tuple[Any, ...]) -> bool:
    """The deliberate change (module docstring): the old answer was the mix of a SKU
    resource with other GPU resources, the new one is that container's SKU resource set
    with requests unlike its limits."""
    if new[0] != "denied" or old[0] != "denied" or new[1:3] != old[1:3]:
        return False
    mixed = re.fullmatch(
        r"container ('[^']*') asks for (.*): ask for one SKU per container.*", old[3]
    )
    overcommitted = re.fullmatch(
        r"container ('[^']*') asks for (gpupool\.io/\S*) with requests .* cannot be "
        r"overcommitted.*",
        new[3],
    )
    return bool(
        mixed
        and overcommitted
        and mixed[1] == overcommitted[1]
        and overcommitted[2] in mixed[2].split(", ")
    )


def container(limits: dict[str, Any], requests: dict[str, Any] | None = None) -> dict[str, Any]:
    resources = {"limits": limits, **({"requests": requests} if requests else {})}
    return {"spec": {"containers": [{"name": "main", "resources": resources}]}}


def check(body: dict[str, Any]) -> None:
    pod = parse_pod(body, namespace="ml")
    new = outcome(demand.pod_demand, pod)
    old = outcome(reference_demand.pod_demand, pod)
    assert new == old or overcommit_reported_first(new, old), (new, old)


@settings(max_examples=1000, deadline=None)
@given(body=pods(max_containers=1))
@example(
    body=container({"gpupool.io/small": "1", "nvidia.com/gpu": "1"}, {"gpupool.io/small": "2"})
)
@example(body=container({"gpupool.io/small": "1k"}, {"gpupool.io/small": "1000"}))
@example(body=container({"nvidia.com/gpucores": "20"}, {"nvidia.com/gpu": "0"}))
def test_registry_reads_every_container_as_the_old_chain_did(body: dict[str, Any]) -> None:
    check(body)


@settings(max_examples=300, deadline=None)
@given(body=pods())
def test_registry_reads_every_pod_as_the_old_chain_did(body: dict[str, Any]) -> None:
    check(body)


def test_only_the_documented_precedence_is_excused() -> None:
    """The exemption is narrow: another change of message, or the same change for
    another container, is not excused."""
    mixed = (
        "container 'main' asks for gpupool.io/small, nvidia.com/gpu: ask for one SKU per "
        "container, either as gpupool.io/<sku>: N or as nvidia.com/gpu: N with the pod "
        "label gpupool.io/sku, not both."
    )
    overcommitted = (
        "container 'main' asks for gpupool.io/small with requests '2' and limits '1': GPU "
        "resources cannot be overcommitted, so set them equal (or set only limits)."
    )
    code = Reason.INVALID_REQUEST
    old = ("denied", demand.InvalidDemand, code, mixed)
    assert overcommit_reported_first(("denied", demand.InvalidDemand, code, overcommitted), old)
    for new in [
        ("denied", demand.InvalidDemand, code, overcommitted.replace("'main'", "'side'")),
        ("denied", demand.InvalidDemand, code, overcommitted.replace("small", "large")),
        ("denied", demand.InvalidDemand, code, mixed.replace("not both", "neither")),
        ("denied", demand.InvalidDemand, Reason.FORBIDDEN, overcommitted),
        ("read", (), ()),
    ]:
        assert not overcommit_reported_first(new, old), new
