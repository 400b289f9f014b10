"""For any valid grant, every backend writes what Kubernetes accepts.

The SKU is drawn first and checked by the backend's ``validate`` (as applying the
configuration would); a grant of one slice of an accepted SKU must then be served
without error, with positive integer quantities that the ``kubernetes`` client's own
parser accepts, valid resource names, and string env/annotation/label values.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity

import governance.backends as backends
from governance.backends import _common, kai, nvidia_timeslice
from governance.contract import SliceGrant
from governance.errors import ConfigError
from governance.model import Pool, Sku

pytestmark = pytest.mark.property

MIG_BOARDS = (
    ("A100-SXM4-40GB", 40960),
    ("A100-SXM4-80GB", 81920),
    ("NVIDIA H100 80GB HBM3", 81559),
    ("NVIDIA H200", 143771),
    ("A30", 24576),
)


@st.composite
def pools(draw: st.DrawFn, name: str) -> Pool:
    backend = backends.get(name)
    memory = draw(st.integers(min_value=1024, max_value=200_000))
    model = "A100-SXM4-80GB"
    options: dict[str, Any] = {}
    if name == "nvidia-mig":
        model, memory = draw(st.sampled_from(MIG_BOARDS))
    elif name == "nvidia-timeslice":
        options["replicas"] = draw(st.integers(min_value=1, max_value=16))
        options["fail_requests_greater_than_one"] = draw(st.booleans())
    elif name == "nvidia-mps":
        options["replicas"] = draw(st.none() | st.integers(min_value=1, max_value=16))
        options = {k: v for k, v in options.items() if v is not None}
    elif name == "kai":
        options["fraction_by"] = draw(st.sampled_from(["memory", "fraction"]))
    elif name == "ascend":
        model = draw(st.sampled_from(["Ascend910B3", "Ascend310P", "Ascend910B4-1"]))
    elif name == "cambricon":
        model = "MLU370-X8"
    return Pool(
        name="pool-a",
        vendor=backend.vendor,
        model=model,
        backend=name,
        gpus=8,
        memory_mib_per_gpu=memory,
        node_selector={"gpupool.io/pool": "pool-a"},
        backend_options=options,
    )


@st.composite
def pool_and_sku(draw: st.DrawFn) -> tuple[Pool, Sku]:
    name = draw(st.sampled_from(sorted(backends.BACKENDS)))
    pool = draw(pools(name))
    whole = draw(st.booleans())
    if whole:
        memory, compute = pool.memory_mib_per_gpu, 100
    else:
        memory = draw(st.integers(min_value=1, max_value=pool.memory_mib_per_gpu))
        compute = draw(st.integers(min_value=1, max_value=100))
    sku = Sku(
        name="s",
        compute_pct=compute,
        memory_mib=memory,
        gpus_per_slice=draw(st.integers(min_value=1, max_value=8)),
        pools=(pool.name,),
    )
    return pool, sku


def check_quantity(value: str) -> None:
    assert value.isdigit(), value
    parsed = parse_quantity(value)
    assert parsed > 0 and parsed == int(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_and_sku(), st.sampled_from(["main", "trainer"]))
def test_an_accepted_sku_is_served_with_valid_kubernetes_values(
    drawn: tuple[Pool, Sku], container: str
) -> None:
    pool, sku = drawn
    backend = backends.get(pool.backend)
    try:
        backend.validate(pool, [sku])
    except ConfigError as exc:
        assert "SKU 's'" in str(exc), "a refused SKU is named"
        assume(False)
    grant = SliceGrant(
        count=1,
        memory_mib=sku.memory_mib_on(pool),
        compute_pct=sku.compute_pct,
        backend=pool.backend,
        pool=pool.name,
        sku=sku.name,
        gpus_per_slice=sku.gpus_per_slice,
    )
    changes = backend.container(grant, pool)
    pod = backend.pod({container: grant}, pool, "research")
    for resource, value in changes.resources.items():
        assert _common.is_resource_name(resource), resource
        check_quantity(value)
    assert all(isinstance(v, str) and v for v in changes.env.values())
    assert all(isinstance(v, str) for v in pod.annotations.values())
    assert set(pod.annotations) <= set(backend.gpu_annotations), "it strips what it writes"
    assert all(isinstance(v, str) and v for v in pod.labels.values())
    assert dict(pod.node_selector) == dict(pool.node_selector)
    if not changes.resources:
        # Only KAI asks for a fraction on the pod instead of on the container.
        assert pool.backend == "kai"
        if kai.ANNOTATION_GPU_MEMORY in pod.annotations:
            check_quantity(pod.annotations[kai.ANNOTATION_GPU_MEMORY])
        else:
            assert 0 < float(pod.annotations[kai.ANNOTATION_GPU_FRACTION]) < 1
        assert pod.annotations[kai.ANNOTATION_CONTAINER_NAME] == container


@given(
    memory=st.integers(min_value=1, max_value=300_000),
    card=st.integers(min_value=1024, max_value=200_000),
    compute=st.integers(min_value=1, max_value=100),
    replicas=st.integers(min_value=1, max_value=64),
)
def test_timeslice_replicas_match_a_naive_reference(
    memory: int, card: int, compute: int, replicas: int
) -> None:
    pool = Pool(
        name="p",
        vendor="nvidia",
        model="T4",
        backend="nvidia-timeslice",
        gpus=1,
        memory_mib_per_gpu=card,
    )
    share = max(Fraction(compute, 100), Fraction(min(memory, card), card))
    expected = max(1, math.ceil(share * replicas))
    assert nvidia_timeslice.replicas_per_gpu(memory, compute, pool, replicas) == expected
    assert expected <= replicas
