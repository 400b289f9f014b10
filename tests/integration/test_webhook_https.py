"""The webhook end to end over real HTTPS on loopback, with AdmissionReviews built from
the `kubernetes` client's models, a real SQLite store, and each returned patch applied
with jsonpatch and validated against the Kubernetes schema."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from admission.admitter import Settings
from governance import scopes
from governance.contract import (
    ANNOTATION_ALLOCATION_ID,
    ANNOTATION_SLICES,
    LABEL_DEPARTMENT,
    LABEL_QUEUE,
    LABEL_SKU,
    Reason,
    load_slices,
)
from governance.storage import ledger
from governance.storage.store import Store
from tests.support import admission as A

JSON_HEADERS = {"content-type": "application/json"}

pytestmark = pytest.mark.integration


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    s = Store(sqlite_url)
    A.apply_org(s)
    yield s
    s.close()


@pytest.fixture
def hook(store: Store, tmp_path: Path) -> Iterator[A.Served]:
    with A.serve(store, tmp_path) as served:
        yield served


def admitted(hook: A.Served, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post, expect allowed, apply the patch, validate; return (response, patched pod)."""
    response = hook.mutate(body)
    assert response["allowed"], response.get("status")
    pod = A.apply_patch(body["request"]["object"], response)
    A.validate_pod(pod)
    return response, pod


def denied(hook: A.Served, body: dict[str, Any], reason: Reason) -> str:
    response = hook.mutate(body)
    assert response["allowed"] is False
    status = response["status"]
    assert status["reason"] == reason.value, status
    assert status["code"] == reason.http_code
    assert "patch" not in response
    message: str = status["message"]
    return message


def limits_of(pod: dict[str, Any], index: int = 0, init: bool = False) -> dict[str, str]:
    key = "initContainers" if init else "containers"
    limits: dict[str, str] = pod["spec"][key][index]["resources"]["limits"]
    return limits


# -- admitted pods ---------------------------------------------------------------------


def test_deployment_pod_is_authorised_as_its_service_account_and_rewritten(
    hook: A.Served, store: Store
) -> None:
    pod = A.deployment_pod(A.container(limits=A.gpu(2)), labels={"app": "trainer"})
    body = A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))
    response, out = admitted(hook, body)
    meta = out["metadata"]
    assert meta["generateName"] == "trainer-7d9f8c6b5-" and "name" not in meta
    assert meta["labels"] == {
        "app": "trainer",
        LABEL_DEPARTMENT: "ml",
        LABEL_QUEUE: "train",
        LABEL_SKU: "small",
    }
    assert limits_of(out) == {
        "cpu": "1",
        "memory": "1Gi",
        "nvidia.com/gpu": "2",
        "nvidia.com/gpumem": "20480",
        "nvidia.com/gpucores": "25",
    }
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    assert out["spec"]["nodeSelector"] == {"gpupool.io/pool": "a100"}
    slices = load_slices(meta["annotations"][ANNOTATION_SLICES])
    assert slices["main"].count == 2 and slices["main"].sku == "small"
    alloc = ledger.get(store, meta["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None and alloc.request_uid == body["request"]["uid"]
    assert alloc.subject == "system:serviceaccount:ml:trainer"
    assert (alloc.amount.slices, alloc.amount.memory_mib, alloc.amount.compute_pct) == (
        2,
        40960,
        50,
    )
    assert not response.get("warnings")


def test_replicas_follow_a_new_configuration_revision(store: Store, tmp_path: Path) -> None:
    """Two replicas of one workload get the same slices; after a revision that changes
    the SKU, the next replica gets the new one (in its patch and in the ledger), while
    the webhook keeps serving."""

    def replica() -> dict[str, Any]:
        pod = A.deployment_pod(A.container(limits=A.gpu(2)), labels={"app": "trainer"})
        return A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))

    def placed(served: A.Served, body: dict[str, Any]) -> tuple[dict[str, str], ledger.Allocation]:
        _, out = admitted(served, body)
        alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
        assert alloc is not None and alloc.request_uid == body["request"]["uid"]
        return limits_of(out), alloc

    with A.serve(store, tmp_path, refresh_s=0.0) as served:
        first, a1 = placed(served, replica())
        second, a2 = placed(served, replica())
        assert first == second and first["nvidia.com/gpumem"] == "20480"
        assert a1.id != a2.id and a1.grants == a2.grants and a1.amount == a2.amount
        document = A.org_document()
        small = next(s for s in document["skus"] if s["name"] == "small")
        small.update(memory="10Gi", compute=20)
        A.apply_org(store, document)
        third, a3 = placed(served, replica())
        assert (third["nvidia.com/gpumem"], third["nvidia.com/gpucores"]) == ("10240", "20")
        assert (a3.amount.memory_mib, a3.amount.compute_pct) == (20480, 40)


def test_controller_pod_whose_service_account_is_not_bound_is_denied(hook: A.Served) -> None:
    pod = A.deployment_pod(A.container(limits=A.gpu(1)), service_account="builder")
    body = A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))
    message = denied(hook, body, Reason.FORBIDDEN)
    assert "system:serviceaccount:ml:builder" in message
    assert "use queue ml/train with SKU small" in message
    assert "bind that service account" in message


@pytest.mark.parametrize(
    ("user", "groups", "allowed"),
    [
        pytest.param("ana", ("ml-team",), True, id="member-through-group"),
        pytest.param("alice", (), True, id="dept-admin"),
        pytest.param("mallory", ("system:authenticated",), False, id="no-binding"),
        pytest.param("dora", ("vision-team",), False, id="member-of-another-department"),
    ],
)
def test_directly_created_pod_is_authorised_as_the_requesting_user(
    hook: A.Served, user: str, groups: tuple[str, ...], allowed: bool
) -> None:
    # The pod names a bound service account, but a pod created directly is checked
    # against the person who created it.
    pod = A.pod(A.container(limits=A.gpu(1)), service_account="trainer")
    body = A.review(pod, user=user, groups=groups)
    if allowed:
        admitted(hook, body)
    else:
        message = denied(hook, body, Reason.FORBIDDEN)
        assert f"user:{user}" in message and "dept-admin of ml (user:alice)" in message


@pytest.mark.parametrize(
    ("user", "groups", "labels"),
    [
        pytest.param("bob", (), {LABEL_QUEUE: "train"}, id="member-of-another-queue"),
        pytest.param("vic", (), {}, id="viewer"),
    ],
)
def test_a_made_up_controller_owner_does_not_make_a_user_its_service_account(
    store: Store, tmp_path: Path, user: str, groups: tuple[str, ...], labels: dict[str, str]
) -> None:
    """Owner references and serviceAccountName are the pod author's to write: a pod sent
    by a person is authorised as that person, whatever controller it claims (issue 13)."""
    document = A.org_document()
    document["role_bindings"].append(
        {"role": "viewer", "department": "ml", "subjects": ["user:vic"]}
    )
    A.apply_org(store, document)
    forged = A.pod(
        A.container(limits=A.gpu(1)),
        labels=labels,
        service_account="trainer",  # bound as a member of every queue of ml
        owner_kind="ReplicaSet",
    )
    with A.serve(store, tmp_path) as hook:
        message = denied(hook, A.review(forged, user=user, groups=groups), Reason.FORBIDDEN)
        assert f"user:{user}" in message and "system:serviceaccount:ml:trainer" not in message
        assert "is not a trusted controller" in message
        # the same pod sent by the ReplicaSet controller is the service account's
        admitted(hook, A.review(forged, user=A.REPLICASET_CONTROLLER, groups=()))
    assert len(ledger.list_allocations(store)) == 1


def test_an_operator_configured_as_trusted_creates_pods_as_their_service_account(
    store: Store, tmp_path: Path
) -> None:
    operator = "system:serviceaccount:kubeflow:training-operator"
    pod = A.pod(A.container(limits=A.gpu(1)), service_account="trainer", owner_kind="Job")
    with A.serve(store, tmp_path) as hook:
        message = denied(hook, A.review(pod, user=operator, groups=()), Reason.FORBIDDEN)
        assert f"(as {operator})" in message
    settings = Settings(
        trusted_controllers=(
            "system:serviceaccount:kube-system:*",
            "system:serviceaccount:kubeflow:*",
        )
    )
    with A.serve(store, tmp_path, settings=settings) as hook:
        _, out = admitted(hook, A.review(pod, user=operator, groups=()))
    alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None and alloc.subject == "system:serviceaccount:ml:trainer"


def test_member_narrowed_to_a_queue_is_denied_other_queues(hook: A.Served) -> None:
    ok = A.review(
        A.pod(A.container(limits=A.gpu(1)), labels={LABEL_QUEUE: "serve"}), user="bob", groups=()
    )
    admitted(hook, ok)
    no = A.review(A.pod(A.container(limits=A.gpu(1))), user="bob", groups=())
    message = denied(hook, no, Reason.FORBIDDEN)
    assert "use a queue you may use: ml/serve" in message


def test_job_with_several_gpu_containers_is_charged_their_sum(hook: A.Served, store: Store) -> None:
    pod = A.pod(
        A.container("worker", limits=A.gpu(1)),
        A.container("ps", limits=A.gpu(2)),
        A.container("logger", limits={"cpu": "100m"}),
        name=None,
        generate_name="train-job-",
        owner_kind="Job",
        service_account="trainer",
    )
    _response, out = admitted(hook, A.review(pod, user=A.JOB_CONTROLLER, groups=()))
    assert limits_of(out, 2) == {"cpu": "100m"}
    assert set(load_slices(out["metadata"]["annotations"][ANNOTATION_SLICES])) == {"worker", "ps"}
    alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None and alloc.amount.slices == 3


def test_init_containers_and_sidecars_count_as_kubernetes_effective_demand(
    hook: A.Served, store: Store
) -> None:
    # sidecar (1) runs beside the regular init container (4): peak 5; steady state
    # sidecar + app (1 + 2) = 3. The pod's demand is 5 slices.
    pod = A.pod(
        A.container("app", limits=A.gpu(2)),
        init_containers=[
            A.container("proxy", limits=A.gpu(1), restart_policy="Always"),
            A.container("warmup", limits=A.gpu(4)),
        ],
    )
    _, out = admitted(hook, A.review(pod))
    assert limits_of(out, 0, init=True)["nvidia.com/gpu"] == "1"
    assert limits_of(out, 1, init=True)["nvidia.com/gpu"] == "4"
    alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None and alloc.amount.slices == 5
    assert alloc.amount.memory_mib == 5 * 20480


def test_hami_form_is_checked_counted_and_passed_through(hook: A.Served, store: Store) -> None:
    pod = A.pod(A.container(limits=A.gpu(2, gpumem="10000", gpucores="30")))
    _, out = admitted(hook, A.review(pod))
    limits = limits_of(out)
    assert (
        limits["nvidia.com/gpu"],
        limits["nvidia.com/gpumem"],
        limits["nvidia.com/gpucores"],
    ) == ("2", "10000", "30")
    assert out["metadata"]["labels"][LABEL_SKU] == "custom"
    alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None
    assert (alloc.amount.memory_mib, alloc.amount.compute_pct) == (20000, 60)


def test_hami_readme_example_arrives_in_canonical_form_and_is_admitted(
    hook: A.Served, store: Store
) -> None:
    """HAMi's README asks for gpumem 3000 and gpucores 30; kube-apiserver sends the 3000
    as "3k", which HAMi (and so gpupool) reads as 3000 MiB."""
    body = A.review(A.pod(A.container(limits=A.gpu(1, gpumem="3000", gpucores="30"))))
    assert (
        body["request"]["object"]["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpumem"
        ]
        == "3k"
    )
    _, out = admitted(hook, body)
    assert limits_of(out)["nvidia.com/gpumem"] == "3000"
    alloc = ledger.get(store, out["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID])
    assert alloc is not None
    assert (alloc.amount.memory_mib, alloc.amount.compute_pct) == (3000, 30)


def test_a_thousand_gpus_arrive_as_1k_and_are_denied_for_what_they_are(hook: A.Served) -> None:
    body = A.review(A.pod(A.container(limits=A.gpu(1000))))
    assert (
        body["request"]["object"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == "1k"
    )
    message = denied(hook, body, Reason.BORROWING_LIMIT_EXCEEDED)
    assert "ana asked for 1000 slice(s) of SKU small" in message


def test_gpu_memory_without_a_count_is_a_one_gpu_request(hook: A.Served, store: Store) -> None:
    pod = A.pod(A.container(limits={"nvidia.com/gpumem": "8000"}))
    response, out = admitted(hook, A.review(pod))
    assert limits_of(out)["nvidia.com/gpu"] == "1"
    assert any("counted as 1 GPU" in w for w in response["warnings"])


@pytest.mark.parametrize(
    ("labels", "limits", "sku", "count"),
    [
        pytest.param({LABEL_SKU: "large"}, A.gpu(1), "large", 1, id="label-sku"),
        pytest.param({}, {"gpupool.io/large": "2"}, "large", 2, id="sku-resource"),
        pytest.param({}, A.gpu(3), "small", 3, id="queue-default-sku"),
    ],
)
def test_request_forms(
    hook: A.Served, labels: dict[str, str], limits: dict[str, str], sku: str, count: int
) -> None:
    _, out = admitted(hook, A.review(A.pod(A.container(limits=limits), labels=labels)))
    grant = load_slices(out["metadata"]["annotations"][ANNOTATION_SLICES])["main"]
    assert (grant.sku, grant.count) == (sku, count)
    assert not any(k.startswith("gpupool.io/") for k in limits_of(out))


BACKEND_RESOURCES = {
    "a100": {"nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpucores"},
    "whole": {"nvidia.com/gpu"},
    "mps": {"nvidia.com/gpu"},
    "ts": {"nvidia.com/gpu.shared"},
    "mig": {"nvidia.com/mig-2g.20gb"},
    "kai": set(),
    "ascend": {"huawei.com/Ascend910B3", "huawei.com/Ascend910B3-memory"},
    "mlu": {"cambricon.com/vmlu", "cambricon.com/mlu.smlu.vmemory", "cambricon.com/mlu.smlu.vcore"},
}


@pytest.mark.parametrize("queue", sorted(BACKEND_RESOURCES))
def test_each_backend_rewrites_the_pod_into_its_data_plane(hook: A.Served, queue: str) -> None:
    pod = A.pod(A.container(limits=A.gpu(1)), namespace="lab", labels={LABEL_QUEUE: queue})
    _response, out = admitted(hook, A.review(pod, user="lee", groups=("lab-team",)))
    gpu_limits = {k for k in limits_of(out) if k not in ("cpu", "memory")}
    assert gpu_limits == BACKEND_RESOURCES[queue], gpu_limits
    if queue == "kai":  # KAI asks by pod annotation, not by extended resource
        assert out["metadata"]["annotations"]["gpu-memory"] == "20480"
        assert out["metadata"]["labels"]["kai.scheduler/queue"] == "kai"
        assert out["spec"]["schedulerName"] == "kai-scheduler"
    if queue == "mps":
        env = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
        assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert out["metadata"]["labels"][LABEL_QUEUE] == queue


# -- denials ---------------------------------------------------------------------------


def test_over_quota_denial_names_who_what_limit_use_and_advice(hook: A.Served) -> None:
    admitted(hook, A.review(A.pod(A.container(limits=A.gpu(8)), name="big-0")))
    message = denied(
        hook,
        A.review(A.pod(A.container(limits=A.gpu(5)), name="big-1")),
        Reason.BORROWING_LIMIT_EXCEEDED,
    )
    assert message.startswith("ana asked for 5 slice(s) of SKU small")
    assert "pod ml/big-1" in message and "queue ml/train" in message
    assert "is 12 slices: 8 in use + 5 requested would exceed it by 1" in message
    assert "Ask your department admin" in message


@pytest.mark.parametrize(
    ("labels", "limits", "reason", "needle"),
    [
        pytest.param(
            {LABEL_SKU: "tiny"},
            A.gpu(1),
            Reason.UNKNOWN_SKU,
            "Valid choices: large, small",
            id="unknown-sku",
        ),
        pytest.param(
            {LABEL_SKU: "h100"},
            A.gpu(1),
            Reason.SKU_NOT_OFFERED,
            "not offered in queue ml/train",
            id="sku-not-offered",
        ),
        pytest.param(
            {}, A.gpu("1.5"), Reason.INVALID_REQUEST, "not a whole number", id="fractional-count"
        ),
        pytest.param(
            {}, A.gpu("-1"), Reason.INVALID_REQUEST, "not a whole number", id="negative-count"
        ),
        pytest.param(
            {},
            A.gpu(1, gpumem="90000"),
            Reason.INVALID_REQUEST,
            "must be 1..81920 MiB",
            id="memory-above-card",
        ),
        pytest.param(
            {},
            A.gpu(1, gpucores="150"),
            Reason.INVALID_REQUEST,
            "1..100 percent",
            id="compute-above-100",
        ),
        pytest.param(
            {LABEL_QUEUE: "infer"},
            A.gpu(1),
            Reason.QUEUE_OF_OTHER_DEPARTMENT,
            "belongs to department 'vision'",
            id="queue-of-other-department",
        ),
        pytest.param(
            {LABEL_QUEUE: "nope"},
            A.gpu(1),
            Reason.UNKNOWN_QUEUE,
            "Valid choices: serve, train",
            id="unknown-queue",
        ),
        pytest.param(
            {},
            {"nvidia.com/mig-1g.10gb": "1"},
            Reason.INVALID_REQUEST,
            "data plane's own resources",
            id="native-resource",
        ),
    ],
)
def test_invalid_requests_are_422_with_the_valid_choices(
    hook: A.Served, labels: dict[str, str], limits: dict[str, str], reason: Reason, needle: str
) -> None:
    message = denied(hook, A.review(A.pod(A.container(limits=limits), labels=labels)), reason)
    assert needle in message, message
    assert message.startswith("pod ml/trainer-0 (as ana): ")


def test_denials_are_recorded_for_audit(hook: A.Served, store: Store) -> None:
    denied(
        hook, A.review(A.pod(A.container(limits=A.gpu(1))), user="eve", groups=()), Reason.FORBIDDEN
    )
    [denial] = ledger.recent_denials(store)
    assert (denial.subject, denial.reason, denial.department) == ("eve", "Forbidden", "ml")


def test_gpu_pod_in_a_namespace_of_no_department_is_denied(hook: A.Served) -> None:
    message = denied(
        hook,
        A.review(A.pod(A.container(limits=A.gpu(1)), namespace="scratch")),
        Reason.NAMESPACE_NOT_OWNED,
    )
    assert "namespace 'scratch' belongs to no department" in message


def test_setting_lets_unowned_namespaces_through_untouched(store: Store, tmp_path: Path) -> None:
    with A.serve(store, tmp_path, settings=Settings(allow_unowned_namespaces=True)) as hook:
        response = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)), namespace="scratch")))
    assert response["allowed"] and "patch" not in response
    assert ledger.usage(store) == {}


# -- idempotence and safety ------------------------------------------------------------


def test_non_gpu_pod_is_allowed_untouched(hook: A.Served) -> None:
    response = hook.mutate(A.review(A.pod(A.container(limits={"cpu": "2"}))))
    assert response == {"uid": response["uid"], "allowed": True}


def test_dry_run_is_decided_but_never_recorded(hook: A.Served, store: Store) -> None:
    _response, out = admitted(hook, A.review(A.pod(A.container(limits=A.gpu(2))), dry_run=True))
    assert ANNOTATION_ALLOCATION_ID not in out["metadata"]["annotations"]
    assert out["metadata"]["labels"][LABEL_SKU] == "small"
    denied(
        hook,
        A.review(A.pod(A.container(limits=A.gpu(13))), dry_run=True),
        Reason.BORROWING_LIMIT_EXCEEDED,
    )
    denied(
        hook,
        A.review(A.pod(A.container(limits=A.gpu(1))), user="eve", groups=(), dry_run=True),
        Reason.FORBIDDEN,
    )
    assert ledger.usage(store) == {}
    assert ledger.list_allocations(store) == [] and ledger.recent_denials(store) == []


def test_reinvocation_is_not_charged_twice_and_patches_the_same(
    hook: A.Served, store: Store
) -> None:
    body = A.review(A.pod(A.container(limits=A.gpu(2))))
    first, out = admitted(hook, body)
    again = hook.mutate(body)  # the API server retried the same request
    assert again["patch"] == first["patch"]
    reinvoked = dict(body)
    reinvoked["request"] = {**body["request"], "object": out}  # reinvocationPolicy: IfNeeded
    third = hook.mutate(reinvoked)
    assert third["allowed"]
    assert A.apply_patch(out, third) == out
    [alloc] = ledger.list_allocations(store)
    assert ledger.usage(store)[scopes.parse("queue/ml/train")].slices == 2 == alloc.amount.slices


def test_forged_allocation_id_and_gpupool_labels_are_replaced(hook: A.Served, store: Store) -> None:
    _, victim = admitted(hook, A.review(A.pod(A.container(limits=A.gpu(1)), name="victim")))
    stolen = victim["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID]
    forged = A.pod(
        A.container(limits=A.gpu(1)),
        name="thief",
        labels={LABEL_DEPARTMENT: "vision", "gpupool.io/owner": "me"},
        annotations={ANNOTATION_ALLOCATION_ID: stolen, ANNOTATION_SLICES: "{}"},
    )
    response, out = admitted(hook, A.review(forged))
    meta = out["metadata"]
    assert meta["annotations"][ANNOTATION_ALLOCATION_ID] != stolen
    assert meta["labels"] == {LABEL_DEPARTMENT: "ml", LABEL_QUEUE: "train", LABEL_SKU: "small"}
    assert any("was not issued for this request" in w for w in response["warnings"])
    assert ledger.usage(store)[scopes.parse("queue/ml/train")].slices == 2  # both charged


def test_forged_allocation_id_on_a_non_gpu_pod_is_removed(hook: A.Served) -> None:
    body = A.review(A.pod(A.container(), annotations={ANNOTATION_ALLOCATION_ID: "alloc-x"}))
    response = hook.mutate(body)
    assert response["allowed"]
    assert ANNOTATION_ALLOCATION_ID not in A.apply_patch(body["request"]["object"], response)[
        "metadata"
    ].get("annotations", {})


def test_update_cannot_change_gpu_resources_or_gpupool_metadata(hook: A.Served) -> None:
    _, out = admitted(hook, A.review(A.pod(A.container(limits=A.gpu(1)))))
    relabel = json.loads(json.dumps(out))
    relabel["metadata"]["labels"]["team"] = "a"
    ok = hook.mutate(A.review(relabel, operation="UPDATE", old=out))
    assert ok["allowed"] and "patch" not in ok
    more = json.loads(json.dumps(out))
    more["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    message = denied(hook, A.review(more, operation="UPDATE", old=out), Reason.IMMUTABLE_GPU_FIELDS)
    assert "GPU resources" in message and "Delete the pod and create it again" in message
    moved = json.loads(json.dumps(out))
    moved["metadata"]["labels"][LABEL_QUEUE] = "serve"
    denied(hook, A.review(moved, operation="UPDATE", old=out), Reason.IMMUTABLE_GPU_FIELDS)


# -- the HTTP edge ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param(b"{not json", "Invalid JSON", id="not-json"),
        pytest.param(b"[]", "not an admission.k8s.io/v1 AdmissionReview", id="array"),
        pytest.param(
            json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "request", id="a-pod"
        ),
        pytest.param(
            json.dumps({**A.review(None), "kind": "Review"}).encode(),
            "kind is 'Review'",
            id="wrong-kind",
        ),
        pytest.param(
            json.dumps(A.review(None)).encode(),
            "request.object is missing",
            id="create-without-object",
        ),
    ],
)
def test_malformed_reviews_get_400_with_a_reason(
    hook: A.Served, content: bytes, needle: str
) -> None:
    with hook.client() as client:
        r = client.post("/mutate", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == Reason.MALFORMED_REVIEW.value
    assert needle in r.json()["message"]


def test_oversized_body_is_refused(store: Store, tmp_path: Path) -> None:
    with A.serve(store, tmp_path, max_body_bytes=10_000) as hook, hook.client() as client:
        big = A.review(A.pod(A.container(env={"BLOB": "x" * 20_000})))
        assert client.post("/mutate", json=big).status_code == 413
        small = A.review(A.pod(A.container()))
        assert client.post("/mutate", json=small).status_code == 200


def test_chunked_bodies_are_bounded_while_they_stream(store: Store, tmp_path: Path) -> None:
    """Without a Content-Length (chunked transfer), the limit applies as the body
    arrives; a body in several chunks under the limit is read whole."""

    def chunks(content: bytes, size: int) -> Iterator[bytes]:
        for start in range(0, len(content), size):
            yield content[start : start + size]

    with A.serve(store, tmp_path, max_body_bytes=10_000) as hook, hook.client() as client:
        big = json.dumps(A.review(A.pod(A.container(env={"BLOB": "x" * 20_000})))).encode()
        r = client.post("/mutate", content=chunks(big, 4096), headers=JSON_HEADERS)
        assert r.status_code == 413, r.text
        assert r.json() == {
            "reason": Reason.MALFORMED_REVIEW.value,
            "message": "request body is over the limit of 10000 bytes",
        }
        small = A.review(A.pod(A.container(limits=A.gpu(1))))
        r = client.post(
            "/mutate", content=chunks(json.dumps(small).encode(), 100), headers=JSON_HEADERS
        )
        assert r.status_code == 200, r.text
        assert r.json()["response"]["uid"] == small["request"]["uid"]
        assert r.json()["response"]["allowed"] is True


def test_mutate_takes_post_only_and_other_paths_are_not_found(hook: A.Served) -> None:
    with hook.client() as client:
        r = client.get("/mutate")
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"
        assert "takes POST only" in r.json()["message"]
        assert client.post("/mutate/", content=b"{}").status_code == 404
        assert client.get("/nowhere").status_code == 404
        answer = client.post("/mutate", json=A.review(A.pod(A.container())))
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert "server" not in answer.headers  # the software is not advertised


def test_store_down_fails_gpu_pods_closed_while_healthz_stays_up(
    store: Store, tmp_path: Path
) -> None:
    with A.serve(store, tmp_path, refresh_s=0.0) as hook, hook.client() as client:
        assert client.get("/readyz").status_code == 200
        # The database file can no longer be opened: what a lost volume looks like.
        store.engine.dispose()
        store.engine = sa.create_engine(f"sqlite:///{tmp_path}/gone/gpupool.db")
        response = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
        assert response["allowed"] is False
        assert response["status"]["reason"] == Reason.STORE_UNAVAILABLE.value
        assert "never admitted unchecked" in response["status"]["message"]
        assert hook.mutate(A.review(A.pod(A.container())), client)["allowed"]
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "cannot be reached" in ready.text
        assert client.get("/metrics").status_code == 200


def test_a_store_with_no_organisation_is_not_ready_and_says_what_to_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Not a store outage (issue 12.4): the store answers but holds no organisation."""
    empty = Store(sqlite_url)
    try:
        with A.serve(empty, tmp_path, refresh_s=0.0) as hook, hook.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "no organisation has been applied" in ready.text
            assert "gpupool apply -f org.yaml" in ready.text
            response = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
            assert response["allowed"] is False
            status = response["status"]
            assert status["reason"] == Reason.NO_ORGANISATION.value == "NoOrganisation"
            assert status["code"] == 503
            assert "has no organisation yet" in status["message"]
            assert "gpupool apply -f org.yaml" in status["message"]
            assert "cannot check its quota" not in status["message"]
            assert hook.mutate(A.review(A.pod(A.container())), client)["allowed"]
            assert client.get("/healthz").status_code == 200
            A.apply_org(empty)
            assert client.get("/readyz").text == "ready"
            admitted(hook, A.review(A.pod(A.container(limits=A.gpu(1)))))
    finally:
        empty.close()


def test_metrics_count_decisions_and_show_quota(hook: A.Served) -> None:
    admitted(hook, A.review(A.pod(A.container(limits=A.gpu(3)))))
    denied(
        hook, A.review(A.pod(A.container(limits=A.gpu(1))), user="eve", groups=()), Reason.FORBIDDEN
    )
    hook.mutate(A.review(A.pod(A.container())))
    with hook.client() as client:
        text = client.get("/metrics").text
    for line in (
        "gpupool_admission_requests_total{"
        'decision="allowed",operation="CREATE",reason="Admitted"} 1.0',
        "gpupool_admission_requests_total{"
        'decision="denied",operation="CREATE",reason="Forbidden"} 1.0',
        "gpupool_admission_requests_total{"
        'decision="allowed",operation="CREATE",reason="NotGPU"} 1.0',
        'gpupool_admission_duration_seconds_count{operation="CREATE"} 3.0',
        'gpupool_quota_used{department="ml",queue="train",resource="slices"} 3.0',
        'gpupool_quota_limit{department="ml",queue="train",resource="slices"} 8.0',
        'gpupool_quota_used{department="ml",queue="",resource="memory_mib"} 61440.0',
    ):
        assert line in text, line
    assert 'gpupool_quota_limit{department="vision",queue="infer"' not in text  # unlimited


def test_patch_is_base64_json_patch(hook: A.Served) -> None:
    response = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))))
    ops = json.loads(base64.b64decode(response["patch"]))
    assert {op["op"] for op in ops} == {"add"}


def test_data_plane_gpu_annotations_are_never_taken_from_the_user(hook: A.Served) -> None:
    # KAI hands out a GPU share by pod annotation alone: without the webhook removing
    # it, a pod with no GPU resource would get GPU memory the ledger never granted.
    body = A.review(A.pod(A.container(), annotations={"gpu-memory": "40000", "note": "n"}))
    response = hook.mutate(body)
    out = A.apply_patch(body["request"]["object"], response)
    assert out["metadata"]["annotations"] == {"note": "n"}
    assert any("removed gpu-memory" in w for w in response["warnings"])
    steered = A.pod(A.container(limits=A.gpu(1)), annotations={"nvidia.com/use-gputype": "H100"})
    _response, out = admitted(hook, A.review(steered))
    assert out["metadata"]["annotations"]["nvidia.com/use-gputype"] == "A100-SXM4-80GB"
    later = json.loads(json.dumps(out))
    later["metadata"]["annotations"]["gpu-fraction"] = "0.5"
    denied(hook, A.review(later, operation="UPDATE", old=out), Reason.IMMUTABLE_GPU_FIELDS)
