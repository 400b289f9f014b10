"""Reinvocation as kube-apiserver does it (issue 12.2): after another mutating webhook
changed the pod (a sidecar injector), gpupool is called again under a *new* request uid,
with the pod it patched, quantities in canonical form. The pod keeps its allocation and
nothing more is charged; the same id on any other pod is replaced and charged anew."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from admission.admitter import Admitter, Settings
from admission.review import parse_review
from governance import scopes
from governance.contract import ANNOTATION_ALLOCATION_ID, LABEL_QUEUE, Reason
from governance.resources import Resources
from governance.storage import ledger
from governance.storage.source import SnapshotSource
from governance.storage.store import Store
from tests.integration.test_webhook_https import admitted
from tests.support import admission as A
from tests.support.kube import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    A.apply_org(s)
    yield s
    s.close()


@pytest.fixture
def hook(store: Store, tmp_path: Path) -> Iterator[A.Served]:
    with A.serve(store, tmp_path) as served:
        yield served


def with_sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    """What Istio's injector does between gpupool's two calls: a container, an init
    container, volumes, labels and annotations, none of them asking for a GPU."""
    out = copy.deepcopy(pod)
    proxy = {
        "name": "istio-proxy",
        "image": "docker.io/istio/proxyv2:1.22.0",
        "resources": {
            "limits": {"cpu": "2", "memory": "1Gi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        },
    }
    out["spec"]["containers"].append(proxy)
    out["spec"].setdefault("initContainers", []).append({**proxy, "name": "istio-init"})
    out["spec"].setdefault("volumes", []).append({"name": "istio-envoy", "emptyDir": {}})
    out["metadata"]["labels"]["security.istio.io/tlsMode"] = "istio"
    out["metadata"]["annotations"]["sidecar.istio.io/status"] = '{"containers":["istio-proxy"]}'
    return out


def reinvoke(first: dict[str, Any], pod: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same admission request called again: a new uid, the pod as it is now."""
    request = first["request"]
    return A.review(
        pod,
        user=changes.get("user", request["userInfo"]["username"]),
        groups=tuple(changes.get("groups", request["userInfo"]["groups"])),
        namespace=changes.get("namespace", request["namespace"]),
    )


def allocation_of(pod: dict[str, Any]) -> str:
    allocation_id: str = pod["metadata"]["annotations"][ANNOTATION_ALLOCATION_ID]
    return allocation_id


def deployment_review(**kwargs: Any) -> dict[str, Any]:
    pod = A.deployment_pod(A.container(limits=A.gpu(2)), labels={"app": "trainer"}, **kwargs)
    return A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(deployment_review, id="replicaset-pod-without-a-name"),
        pytest.param(
            lambda: A.review(A.pod(A.container(limits=A.gpu(1, gpumem="3000", gpucores="30")))),
            id="hami-form-whose-3000-comes-back-as-3k",
        ),
        pytest.param(
            lambda: A.review(
                A.pod(A.container(limits=A.gpu(1)), namespace="lab", labels={LABEL_QUEUE: "mig"}),
                user="lee",
                groups=("lab-team",),
            ),
            id="mig-backend",
        ),
    ],
)
def test_reinvocation_after_a_sidecar_keeps_the_allocation_and_charges_nothing(
    hook: A.Served, store: Store, first: Any
) -> None:
    body = first()
    response, patched = admitted(hook, body)
    allocation_id = allocation_of(patched)
    usage = ledger.usage(store)

    again = reinvoke(body, with_sidecar(patched))
    assert again["request"]["uid"] != body["request"]["uid"]
    response2, repatched = admitted(hook, again)
    assert allocation_of(repatched) == allocation_id
    assert not any("was not issued" in w for w in response2.get("warnings", ()))
    # gpupool's fields come out as they were; the other webhook's changes stay
    assert repatched["spec"]["containers"][0] == patched["spec"]["containers"][0]
    assert repatched["spec"]["containers"][-1]["name"] == "istio-proxy"
    assert repatched["metadata"]["annotations"]["sidecar.istio.io/status"]
    assert ledger.usage(store) == usage  # ledger +0
    [entry] = ledger.list_allocations(store)
    assert entry.id == allocation_id and entry.request_uid == body["request"]["uid"]
    assert response["allowed"]


def test_the_same_id_on_another_pod_is_replaced_and_charged_anew(
    hook: A.Served, store: Store
) -> None:
    body = deployment_review()
    _, patched = admitted(hook, body)
    stolen = allocation_of(patched)

    def presented(body: dict[str, Any]) -> str:
        response, out = admitted(hook, body)
        assert any("was not issued for this request" in w for w in response["warnings"])
        assert allocation_of(out) != stolen
        return allocation_of(out)

    # another workload: another ReplicaSet (owner uid) and generateName, same id
    other = copy.deepcopy(patched)
    other["metadata"]["generateName"] = "other-5c7d9-"
    other["metadata"]["ownerReferences"][0]["uid"] = str(uuid.uuid4())
    presented(reinvoke(body, other))
    # a person copying the pod, id included
    presented(reinvoke(body, patched, user="ana", groups=("ml-team",)))
    # the GPU demand changed between the calls: a new request
    more = copy.deepcopy(patched)
    more["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpucores"] = "50"
    more["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpucores"] = "50"
    response = hook.mutate(reinvoke(body, more))
    assert not response["allowed"] or allocation_of(A.apply_patch(more, response)) != stolen
    # the pod was created and bound: its id on a later pod is a copy
    ledger.bind(store, stolen, pod_uid=str(uuid.uuid4()), pod_name="trainer-7d9f8c6b5-abcde")
    presented(reinvoke(body, patched))
    assert ledger.get(store, stolen).state is ledger.State.BOUND  # type: ignore[union-attr]
    charged = [a for a in ledger.list_allocations(store) if a.state.live]
    assert len(charged) >= 4
    assert ledger.usage(store)[scopes.parse("queue/ml/train")] == sum(
        (a.amount for a in charged), start=Resources()
    )


def test_the_same_id_in_another_namespace_is_replaced(hook: A.Served, store: Store) -> None:
    body = A.review(A.pod(A.container(limits=A.gpu(1)), name="twin"))
    _, patched = admitted(hook, body)
    elsewhere = copy.deepcopy(patched)
    elsewhere["metadata"]["namespace"] = "ml-dev"  # ml-* belongs to the same department
    response, out = admitted(hook, reinvoke(body, elsewhere, namespace="ml-dev"))
    assert allocation_of(out) != allocation_of(patched)
    assert len(ledger.list_allocations(store)) == 2
    assert response["allowed"]


def test_a_reinvocation_after_the_reservation_ttl_is_charged_anew(store: Store) -> None:
    clock = FakeClock(datetime.now(UTC))
    source = SnapshotSource(store)
    admitter = Admitter(
        store=store,
        snapshot=source.get,
        settings=Settings(reservation_ttl=timedelta(minutes=10)),
        clock=clock,
    )
    try:
        body = A.review(A.pod(A.container(limits=A.gpu(1)), name="slow"))
        first = admitter.admit(parse_review(A.json_bytes(body)))
        assert first.allowed and first.reason is Reason.ADMITTED
        patched = A.apply_patch(body["request"]["object"], A.response_of(body, first))
        clock.advance(9 * 60)
        again = admitter.admit(parse_review(A.json_bytes(reinvoke(body, patched))))
        assert again.allowed and not again.warnings
        clock.advance(2 * 60)  # past the TTL: the reservation may be expired any moment
        late = admitter.admit(parse_review(A.json_bytes(reinvoke(body, patched))))
        assert late.allowed and any("was not issued" in w for w in late.warnings)
        assert len(ledger.list_allocations(store)) == 2
    finally:
        admitter.close()


@pytest.mark.parametrize("queue", ["a100", "whole", "mps", "ts", "mig", "kai", "ascend", "mlu"])
def test_every_backends_patched_pod_is_recognised_when_it_comes_back(
    hook: A.Served, store: Store, queue: str
) -> None:
    """The fingerprint recorded from the backend's grant is the one read back from the
    patched pod, quantities canonicalised, for every data plane."""
    body = A.review(
        A.pod(A.container(limits=A.gpu(1)), namespace="lab", labels={LABEL_QUEUE: queue}),
        user="lee",
        groups=("lab-team",),
    )
    _, patched = admitted(hook, body)
    _, again = admitted(hook, reinvoke(body, with_sidecar(patched)))
    assert allocation_of(again) == allocation_of(patched)
    assert len(ledger.list_allocations(store)) == 1
