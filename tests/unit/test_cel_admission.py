"""The CEL the chart puts in the API server, evaluated by a real CEL evaluator
(common-expression-language, cel-rust) on pods built with the ``kubernetes`` client's
models and serialised as the API server sends them.

Two expressions: the MutatingWebhookConfiguration's matchCondition (which pods reach
the webhook: a superset of GPU pods, so that none escapes) and the
ValidatingAdmissionPolicy (the backstop: a GPU pod without a gpupool allocation is
rejected). Both use standard CEL only; Kubernetes' extension libraries (quantity,
lists, regex...) stay out, so an evaluator without them decides as the API server does.
Missing fields raise here as they error in Kubernetes: a test that passes proves the
``has()`` guards are where they must be (an error would apply the failurePolicy).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from kubernetes import client

from admission.demand import GpuNames
from governance import backends
from governance.backends import _common
from governance.contract import ANNOTATION_ALLOCATION_ID, LABEL_QUEUE
from tests.support import chart

cel = pytest.importorskip("cel", reason="common-expression-language is not installed")
pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

pytestmark = pytest.mark.unit

JSON = dict[str, Any]
_api = client.ApiClient()
_uids = itertools.count(1)


def _rendered() -> tuple[str, JSON]:
    objects = chart.manifests()
    hook = chart.find(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    (condition,) = hook["matchConditions"]
    policy = chart.find(objects, "ValidatingAdmissionPolicy")
    return condition["expression"], policy["spec"]


MATCH_CONDITION, POLICY = _rendered()
_MATCH = cel.compile(MATCH_CONDITION)
_POLICY_CONDITIONS = [cel.compile(c["expression"]) for c in POLICY["matchConditions"]]
_VARIABLES = [(v["name"], cel.compile(v["expression"])) for v in POLICY["variables"]]
_VALIDATION = cel.compile(POLICY["validations"][0]["expression"])
_MESSAGE = cel.compile(POLICY["validations"][0]["messageExpression"])


def pod(
    *,
    limits: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    init_limits: dict[str, str] | None = None,
    sidecar_limits: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    generate_name: bool = False,
) -> JSON:
    """A pod as the API server sends it: no empty maps, canonical quantities."""
    resources = None
    if limits or requests:
        resources = client.V1ResourceRequirements(limits=limits, requests=requests)
    init = []
    if init_limits:
        init.append(
            client.V1Container(
                name="fetch",
                image="busybox",
                resources=client.V1ResourceRequirements(limits=init_limits),
            )
        )
    if sidecar_limits:
        init.append(
            client.V1Container(
                name="sidecar",
                image="envoy",
                restart_policy="Always",
                resources=client.V1ResourceRequirements(limits=sidecar_limits),
            )
        )
    model = client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=None if generate_name else "train-0",
            generate_name="train-" if generate_name else None,
            namespace="ml-team",
            uid=f"uid-{next(_uids)}",
            labels=labels,
            annotations=annotations,
            managed_fields=[
                client.V1ManagedFieldsEntry(manager="kubectl", operation="Update", api_version="v1")
            ],
        ),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="pytorch", resources=resources)],
            init_containers=init or None,
        ),
    )
    body: JSON = _api.sanitize_for_serialization(model)
    return body


def _request(operation: str = "CREATE", *, dry_run: bool = False) -> JSON:
    return {
        "uid": f"req-{next(_uids)}",
        "operation": operation,
        "namespace": "ml-team",
        "dryRun": dry_run,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    }


def reaches_webhook(obj: JSON | None, old: JSON | None = None) -> bool:
    operation = "CREATE" if old is None else "UPDATE"
    context = {"object": obj, "oldObject": old, "request": _request(operation)}
    return bool(_MATCH.execute(context))


def policy_denies(obj: JSON, *, dry_run: bool = False) -> bool:
    """Whether the ValidatingAdmissionPolicy rejects this CREATE (as the API server
    evaluates it: matchConditions, then the variables in order, then the validation)."""
    context: dict[str, Any] = {
        "object": obj,
        "oldObject": None,
        "request": _request(dry_run=dry_run),
    }
    if not all(condition.execute(context) for condition in _POLICY_CONDITIONS):
        return False
    variables: dict[str, Any] = {}
    context["variables"] = variables
    for name, program in _VARIABLES:
        variables[name] = program.execute(context)
    return not _VALIDATION.execute(context)


def allocated(body: JSON) -> JSON:
    """The pod after the webhook admitted it."""
    body["metadata"].setdefault("annotations", {})[ANNOTATION_ALLOCATION_ID] = "0190a1b2c3d4e5f6"
    return body


CASES = [
    # id, pod, reaches the webhook, rejected by the policy without an allocation
    ("cpu-only", pod(limits={"cpu": "2", "memory": "3Gi"}), False, False),
    ("no-resources-no-metadata", pod(generate_name=True), False, False),
    ("gpu-limit", pod(limits={"nvidia.com/gpu": "1", "cpu": "3k"}), True, True),
    ("gpu-requests-only", pod(requests={"nvidia.com/gpu": "2"}), True, True),
    ("gpu-in-init-container", pod(init_limits={"nvidia.com/gpu": "1"}), True, True),
    ("gpu-in-sidecar", pod(sidecar_limits={"nvidia.com/gpu": "1"}), True, True),
    ("sku-resource", pod(limits={"gpupool.io/a100-half": "2"}), True, True),
    ("hami-memory-only", pod(limits={"nvidia.com/gpumem": "8k"}), True, True),
    ("mig-profile", pod(limits={"nvidia.com/mig-1g.10gb": "1"}), True, True),
    ("ascend", pod(limits={"huawei.com/Ascend910B": "1"}), True, True),
    ("kai-fraction-annotation", pod(annotations={"gpu-fraction": "0.5"}), True, True),
    ("hami-gputype-annotation", pod(annotations={"nvidia.com/use-gputype": "A100"}), True, True),
    ("gpupool-label-on-cpu-pod", pod(labels={LABEL_QUEUE: "train"}), True, False),
    (
        "forged-allocation-on-cpu-pod",
        pod(annotations={ANNOTATION_ALLOCATION_ID: "x"}),
        True,
        False,
    ),
    ("nvidia-network-resource", pod(limits={"nvidia.com/rdma_shared_device_a": "1"}), True, False),
    ("other-vendor-device", pod(limits={"example.com/fpga": "1"}), False, False),
    ("unrelated-annotation", pod(annotations={"prometheus.io/scrape": "true"}), False, False),
]


@pytest.mark.parametrize(
    ("body", "reaches", "denied"),
    [pytest.param(body, reaches, denied, id=name) for name, body, reaches, denied in CASES],
)
def test_match_condition_and_policy_on_sample_pods(body: JSON, reaches: bool, denied: bool) -> None:
    assert reaches_webhook(body) is reaches
    assert policy_denies(body) is denied
    # After the webhook admitted it, the policy lets it through.
    assert policy_denies(allocated(body)) is False


def test_an_update_that_takes_gpu_metadata_off_still_reaches_the_webhook() -> None:
    before = pod(annotations={"gpu-fraction": "0.5"})
    after = pod()
    assert reaches_webhook(after) is False
    assert reaches_webhook(after, old=before) is True
    assert reaches_webhook(pod(), old=pod()) is False


def test_a_kai_pod_as_the_webhook_rewrote_it_passes_the_policy() -> None:
    # KAI fractions leave the container without a GPU resource: the annotation marks it.
    rewritten = pod(annotations={"gpu-fraction": "0.25", "gpu-fraction-container-name": "main"})
    assert policy_denies(rewritten) is True
    assert policy_denies(allocated(rewritten)) is False


def test_an_empty_allocation_id_is_no_allocation() -> None:
    body = pod(limits={"nvidia.com/gpu": "1"}, annotations={ANNOTATION_ALLOCATION_ID: ""})
    assert policy_denies(body) is True


def test_server_side_dry_runs_are_left_to_the_webhook() -> None:
    assert policy_denies(pod(limits={"nvidia.com/gpu": "1"}), dry_run=True) is False


def test_the_denial_says_who_what_and_what_to_do() -> None:
    body = pod(limits={"nvidia.com/gpu": "1"}, generate_name=True)
    context: dict[str, Any] = {"object": body, "oldObject": None, "request": _request()}
    message = _MESSAGE.execute(context)
    assert message.startswith("NoGpupoolAllocation: ")
    assert "system:serviceaccount:kube-system:replicaset-controller" in message
    assert "ml-team/train-*" in message
    assert "MutatingWebhookConfiguration gpupool" in message


USER_AND_BACKEND_RESOURCES = sorted(
    {*backends.all_gpu_resources(), *_common.USER_RESOURCES, "gpupool.io/a100-quarter"}
)


@pytest.mark.parametrize("resource", USER_AND_BACKEND_RESOURCES)
def test_every_resource_the_webhook_governs_reaches_it_and_is_a_gpu_to_the_policy(
    resource: str,
) -> None:
    names = GpuNames.of(
        (r for b in backends.BACKENDS.values() for r in b.gpu_resources),
        (a for b in backends.BACKENDS.values() for a in b.gpu_annotations),
    )
    assert names.is_gpu(resource)
    body = pod(limits={resource: "1"})
    assert reaches_webhook(body)
    assert policy_denies(body)


@pytest.mark.parametrize(
    "annotation",
    sorted({a for b in backends.BACKENDS.values() for a in b.gpu_annotations}),
)
def test_every_data_plane_gpu_annotation_reaches_the_webhook_and_the_policy(
    annotation: str,
) -> None:
    body = pod(annotations={annotation: "1"})
    assert reaches_webhook(body)
    assert policy_denies(body)


def test_the_policy_knows_exactly_the_backends_gpu_annotations() -> None:
    listed = cel.evaluate(
        POLICY["variables"][2]["expression"].split(" k in ", 1)[1].rstrip(")"), {}
    )
    assert sorted(listed) == sorted(
        {a for b in backends.BACKENDS.values() for a in b.gpu_annotations}
    )
