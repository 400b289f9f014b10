"""The pure parts of the webhook: reading GPU requests from pods, building the patch."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from admission import demand, patch
from admission.review import MalformedReview, parse_pod, parse_review, render
from admission.review import Response as Answer
from governance import backends
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import Reason, SliceGrant
from governance.placement import SliceRequest
from tests.support import admission as A

pytestmark = pytest.mark.unit

NAMES = demand.GpuNames.of(backends.all_gpu_resources())


def parsed(*containers: Any, **kwargs: Any) -> Any:
    return parse_pod(A.serialize(A.pod(*containers, **kwargs)), namespace="ml")


def requests_of(pod: Any) -> dict[str, SliceRequest]:
    return {c.container.name: c.request for c in demand.pod_demand(pod, NAMES).containers}


@pytest.mark.parametrize(
    ("labels", "limits", "expected"),
    [
        pytest.param(
            {"gpupool.io/sku": "large"},
            {"nvidia.com/gpu": "2"},
            SliceRequest(count=2, sku="large"),
            id="label-sku",
        ),
        pytest.param(
            {}, {"gpupool.io/large": "3"}, SliceRequest(count=3, sku="large"), id="sku-resource"
        ),
        pytest.param(
            {},
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8Gi"},
            SliceRequest(count=1, custom=True, memory_mib=8192),
            id="hami-gpumem-unit",
        ),
        pytest.param(
            {},
            {
                "nvidia.com/gpu": 2,
                "nvidia.com/gpumem-percentage": "50",
                "nvidia.com/gpucores": "30",
            },
            SliceRequest(count=2, custom=True, memory_pct=50, compute_pct=30),
            id="hami-percentage",
        ),
        pytest.param(
            {},
            {"nvidia.com/gpucores": "20"},
            SliceRequest(count=1, custom=True, compute_pct=20),
            id="cores-without-count",
        ),
        pytest.param({}, {"nvidia.com/gpu": "4"}, SliceRequest(count=4), id="plain-count"),
        pytest.param(
            {"gpupool.io/sku": "custom"},
            {"nvidia.com/gpu": "1"},
            SliceRequest(count=1, custom=True),
            id="custom-label-is-hami-form",
        ),
    ],
)
def test_request_forms(
    labels: dict[str, str], limits: dict[str, Any], expected: SliceRequest
) -> None:
    pod = parse_pod(
        {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]},
        },
        namespace="ml",
    )
    assert requests_of(pod) == {"main": expected}


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3k", "nvidia.com/gpucores": "30"},
            SliceRequest(count=1, custom=True, memory_mib=3000, compute_pct=30),
            id="gpumem-3k-is-3000-mib",
        ),
        pytest.param(
            {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "10k"},
            SliceRequest(count=2, custom=True, memory_mib=10000),
            id="gpumem-10k",
        ),
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1Gi"},
            SliceRequest(count=1, custom=True, memory_mib=1024),
            id="gpumem-binary-is-bytes",
        ),
        pytest.param({"nvidia.com/gpu": "1k"}, SliceRequest(count=1000), id="gpu-1k"),
        pytest.param({"nvidia.com/gpu": "1e1"}, SliceRequest(count=10), id="gpu-exponent"),
        pytest.param({"gpupool.io/large": "2"}, SliceRequest(count=2, sku="large"), id="sku"),
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "10k"},
            SliceRequest(count=1, custom=True, compute_pct=10000),
            id="cores-read-then-judged-by-placement",
        ),
    ],
)
def test_canonical_quantities_are_read_with_each_resources_unit(
    limits: dict[str, str], expected: SliceRequest
) -> None:
    pod = parse_pod(
        {"spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]}},
        namespace="ml",
    )
    assert requests_of(pod) == {"main": expected}


def test_requests_and_limits_equal_as_quantities_are_equal() -> None:
    pod = parsed(A.container(limits={"nvidia.com/gpu": "1k"}, requests={"nvidia.com/gpu": "1000"}))
    assert requests_of(pod)["main"].count == 1000


def test_requests_alone_count_and_must_equal_limits() -> None:
    pod = parsed(A.container(requests={"nvidia.com/gpu": "2"}))
    assert requests_of(pod)["main"].count == 2
    both = parsed(A.container(limits={"nvidia.com/gpu": "2"}, requests={"nvidia.com/gpu": "1"}))
    with pytest.raises(demand.InvalidDemand, match="cannot be overcommitted"):
        demand.pod_demand(both, NAMES)


def test_an_overcommitted_sku_resource_is_reported_before_a_mix_of_forms() -> None:
    """Requests are checked equal to limits for every name a form reads before any form
    reads the container; before request forms were modules (issue 15) the mix came first."""
    pod = parsed(
        A.container(
            limits={"gpupool.io/small": "1", "nvidia.com/gpu": "1"},
            requests={"gpupool.io/small": "2"},
        )
    )
    with pytest.raises(demand.InvalidDemand) as err:
        demand.pod_demand(pod, NAMES)
    assert str(err.value) == (
        "container 'main' asks for gpupool.io/small with requests '2' and limits '1': GPU "
        "resources cannot be overcommitted, so set them equal (or set only limits)."
    )
    assert err.value.code is Reason.INVALID_REQUEST


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        pytest.param({"nvidia.com/gpu": "500m"}, "not a whole number", id="milli"),
        pytest.param({"nvidia.com/gpu": "1500m"}, "not a whole number", id="one-and-a-half"),
        pytest.param({"nvidia.com/gpu": "2mi"}, "unknown suffix 'mi'", id="not-a-quantity"),
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1500m"},
            "not a whole number of MiB",
            id="milli-mib",
        ),
        pytest.param({"nvidia.com/gpu": "-2"}, "not a whole number", id="negative"),
        pytest.param(
            {"nvidia.com/gpu": "0", "nvidia.com/gpumem": "100"},
            "at least 1 GPU",
            id="memory-with-zero-gpus",
        ),
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1", "nvidia.com/gpumem-percentage": "5"},
            "write one of them",
            id="two-memory-forms",
        ),
        pytest.param({"gpupool.io/small": "1", "nvidia.com/gpu": "1"}, "not both", id="two-forms"),
        pytest.param({"huawei.com/Ascend910B3": "1"}, "data plane's own", id="native"),
        pytest.param(
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1.5Gi"},
            "MiB",
            id="fractional-mib-ok-or-not",
        ),
    ],
)
def test_unreadable_requests_are_invalid(limits: dict[str, str], needle: str) -> None:
    pod = parsed(A.container(limits=limits))
    if needle == "MiB":  # 1.5Gi is 1536 MiB: a whole number, accepted
        assert requests_of(pod)["main"].memory_mib == 1536
        return
    with pytest.raises(demand.InvalidDemand, match=needle) as err:
        demand.pod_demand(pod, NAMES)
    assert err.value.code is Reason.INVALID_REQUEST


def test_non_gpu_pods_are_recognised_without_an_org() -> None:
    assert not demand.is_gpu_pod(parsed(A.container(limits={"cpu": "1"})), NAMES)
    assert demand.is_gpu_pod(parsed(A.container(limits={"nvidia.com/gpumem": "10"})), NAMES)
    assert demand.is_gpu_pod(parsed(A.container(limits={"nvidia.com/mig-1g.10gb": "1"})), NAMES)
    zero = parsed(A.container(limits={"nvidia.com/gpu": "0"}))
    assert demand.pod_demand(zero, NAMES).containers == ()


def test_patch_replaces_gpu_resources_and_gpupool_metadata_and_is_idempotent() -> None:
    pod_obj = A.serialize(
        A.pod(
            A.container(
                "a",
                limits={"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1", "cpu": "1"},
                env={"KEEP": "1", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "99"},
            ),
            A.container("b", limits={"cpu": "1"}),
            labels={"gpupool.io/department": "forged", "app": "x"},
            annotations={"gpupool.io/allocation-id": "alloc-forged", "note": "n"},
            node_selector={"zone": "a"},
        )
    )
    grant = SliceGrant(
        count=1, memory_mib=100, compute_pct=25, backend="nvidia-mps", pool="p", sku="s"
    )
    ops = patch.build(
        parse_pod(pod_obj, namespace="ml"),
        grants={"a": grant},
        containers={
            "a": ContainerChanges(
                resources={"nvidia.com/gpu": "1"}, env={"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"}
            )
        },
        pod_changes=PodChanges(
            scheduler_name="sched", node_selector={"pool": "p"}, labels={"extra": "1"}
        ),
        department="ml",
        queue="train",
        sku="s",
        allocation_id="alloc-1",
        names=NAMES,
    )
    out = jsonpatch.apply_patch(pod_obj, ops)
    a, b = out["spec"]["containers"]
    assert a["resources"] == {
        "limits": {"cpu": "1", "nvidia.com/gpu": "1"},
        "requests": {"nvidia.com/gpu": "1"},
    }
    assert a["env"] == [
        {"name": "KEEP", "value": "1"},
        {"name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": "25"},
    ]
    assert b == pod_obj["spec"]["containers"][1]
    assert out["metadata"]["labels"] == {
        "app": "x",
        "extra": "1",
        "gpupool.io/department": "ml",
        "gpupool.io/queue": "train",
        "gpupool.io/sku": "s",
    }
    assert out["metadata"]["annotations"]["gpupool.io/allocation-id"] == "alloc-1"
    assert out["metadata"]["annotations"]["note"] == "n"
    assert out["spec"]["nodeSelector"] == {"zone": "a", "pool": "p"}
    assert out["spec"]["schedulerName"] == "sched"
    A.validate_pod(out)
    again = jsonpatch.apply_patch(
        out,
        patch.build(
            parse_pod(out, namespace="ml"),
            grants={"a": grant},
            containers={
                "a": ContainerChanges(
                    resources={"nvidia.com/gpu": "1"},
                    env={"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"},
                )
            },
            pod_changes=PodChanges(
                scheduler_name="sched", node_selector={"pool": "p"}, labels={"extra": "1"}
            ),
            department="ml",
            queue="train",
            sku="s",
            allocation_id="alloc-1",
            names=NAMES,
        ),
    )
    assert again == out


def test_strip_metadata_escapes_json_pointer() -> None:
    pod = parse_pod({"metadata": {"labels": {"gpupool.io/x~y": "1", "a": "b"}}}, namespace="ml")
    out = jsonpatch.apply_patch(
        {"metadata": {"labels": {"gpupool.io/x~y": "1", "a": "b"}}},
        patch.strip_metadata(pod, NAMES),
    )
    assert out == {"metadata": {"labels": {"a": "b"}}}


def test_render_carries_the_reason_code_and_http_code() -> None:
    body = render("u1", Answer(allowed=False, reason=Reason.QUEUE_QUOTA_EXCEEDED, message="m"))
    assert b'"code":403' in body and b'"reason":"QueueQuotaExceeded"' in body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"",'
        b'"kind":{"kind":"Pod"},"operation":"CREATE"}}',
    ],
)
def test_parse_review_rejects_non_reviews(body: bytes) -> None:
    with pytest.raises(MalformedReview):
        parse_review(body)


@pytest.mark.parametrize(
    ("pod", "plain"),
    [
        pytest.param(A.pod(A.container(limits={"cpu": "1"}), labels={"app": "x"}), True, id="cpu"),
        pytest.param(A.pod(A.container(limits=A.gpu(1))), False, id="nvidia-gpu"),
        pytest.param(A.pod(A.container(limits={"gpupool.io/small": "1"})), False, id="sku"),
        pytest.param(A.pod(A.container(), labels={"gpupool.io/queue": "q"}), False, id="label"),
        pytest.param(A.pod(A.container(), annotations={"gpu-memory": "1"}), False, id="kai"),
        pytest.param(A.pod(A.container(limits={"huawei.com/Ascend910B": "1"})), False, id="npu"),
        pytest.param(A.pod(A.container(env={"MODE": "mps"})), False, id="mps-value-full-path"),
    ],
)
def test_plain_bodies_are_those_that_cannot_ask_for_a_gpu(pod: Any, plain: bool) -> None:
    import json

    from admission.admitter import Admitter

    admitter = Admitter(store=type("S", (), {"is_sqlite": True})(), snapshot=lambda: None)  # type: ignore[arg-type,return-value]
    assert admitter.plain(json.dumps(A.review(pod)).encode()) is plain
