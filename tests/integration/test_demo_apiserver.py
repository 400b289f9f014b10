"""The demo's Kubernetes API stand-in over real HTTP, against the real clients: the
reconciler's adapter (list pages, watch, Lease), the exporter's node-scoped pod watch,
and the real webhook over HTTPS with the API server's client certificate; and the
demo's planned pods mean what they say to the real webhook on examples/org.yaml."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from admission import kube
from admission.leader import LeaseConflict, LeaseNotFound, LeaseRecord
from demo import models, workload
from demo.apiserver import AdmissionClient, ApiServer, Served, User, admission_review
from demo.apistore import Forbidden
from demo.pki import Authority
from exporter.pods import KubernetesPodWatch, PodIndex
from governance import config, contract
from governance.storage import revisions
from governance.storage.store import Store
from simulator import trace
from tests.support import admission as A
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "org.yaml"
TRACE = trace.shared_trace_dir(ROOT) / trace.DEFAULT_POD_LIST


def gpu_pod(
    name: str | None = None, *, namespace: str = "research", sku: str = "h100-1g.10gb"
) -> dict[str, Any]:
    """One slice of ``sku`` (a MIG slice in research's default queue, experiments)."""
    return models.serialise(
        client.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=client.V1ObjectMeta(
                name=name,
                generate_name=None if name else "experiment-",
                namespace=namespace,
                labels={contract.LABEL_SKU: sku},
            ),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(
                        name="main",
                        image="registry.example/x:1",
                        resources=client.V1ResourceRequirements(
                            limits={"nvidia.com/gpu": "1", "memory": "3000Mi", "cpu": "1500m"}
                        ),
                    )
                ]
            ),
        )
    )


def plain_pod(name: str) -> dict[str, Any]:
    """A pod without GPUs: the stand-in stores it without calling a webhook."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "research"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
    }


ANA = User("ana@northwind.example")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[ApiServer, Served, Path]]:
    api = ApiServer(admission=None)
    served = api.serve()
    try:
        yield api, served, served.kubeconfig(tmp_path / "kubeconfig")
    finally:
        served.close()


def test_the_reconcilers_adapter_pages_lists_watches_and_holds_a_lease(
    standin: tuple[ApiServer, Served, Path],
) -> None:
    api, _served, kubeconfig = standin
    for n in range(5):
        api.create_pod(plain_pod(f"p{n}"), user=ANA)
    api_client = kube.api_client(str(kubeconfig))
    pods = kube.KubePods(
        kube.ClientPodApi(kube.core_api(api_client)), page_size=2, watch_timeout_s=1
    )
    snapshot = pods.list_pods()
    assert [p.name for p in snapshot.pods] == [f"p{n}" for n in range(5)]
    api.bind("research", "p1", "node-1")
    api.delete_pod("research", "p2")
    seen = [
        (e.type.value, e.pod.name if e.pod else "")
        for e in pods.watch_pods(snapshot.resource_version)
    ]
    assert seen[:3] == [("MODIFIED", "p1"), ("MODIFIED", "p2"), ("DELETED", "p2")]

    leases = kube.KubeLeases(
        kube.ClientLeaseApi(
            kube.coordination_api(api_client), name="r", namespace="gpupool-system"
        ),
        name="r",
        namespace="gpupool-system",
    )
    with pytest.raises(LeaseNotFound):
        leases.get()
    now = dt.datetime.now(dt.UTC)
    record = LeaseRecord(
        holder="me",
        lease_duration_s=15,
        acquire_time=now,
        renew_time=now,
        transitions=0,
        resource_version="",
    )
    held = leases.create(record)
    assert leases.get().holder == "me"
    leases.update(held)
    with pytest.raises(LeaseConflict):
        leases.update(held)  # the version it read is no longer current


def test_the_exporters_pod_watch_follows_the_pods_bound_to_its_node(
    standin: tuple[ApiServer, Served, Path],
) -> None:
    api, _served, kubeconfig = standin
    api.create_pod(plain_pod("early"), user=ANA)
    api.bind("research", "early", "node-1")
    index = PodIndex()
    watch = KubernetesPodWatch.in_cluster(
        index=index, node_name="node-1", kubeconfig=str(kubeconfig)
    )
    watch.start()
    try:
        wait_for(lambda: [p.name for p in index.pods()] == ["early"], "the listed pod")
        api.create_pod(plain_pod("late"), user=ANA)
        api.create_pod(plain_pod("elsewhere"), user=ANA)
        api.bind("research", "late", "node-1")
        api.bind("research", "elsewhere", "node-2")
        wait_for(lambda: sorted(p.name for p in index.pods()) == ["early", "late"], "the bound pod")
        api.delete_pod("research", "early")
        wait_for(lambda: [p.name for p in index.pods()] == ["late"], "the deleted pod to leave")
    finally:
        watch.stop()


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[tuple[A.Served, Authority]]:
    document = config.load_file(EXAMPLE)
    store = Store(f"sqlite:///{tmp_path / 'gpupool.db'}")
    try:
        revisions.apply(store, document, source=str(EXAMPLE))
        pki = Authority(tmp_path / "pki", "apiserver-client-ca")
        with A.serve(store, tmp_path, client_ca=pki.file) as served:
            yield served, pki
    finally:
        store.close()


def admission_client(served: A.Served, pki: Authority) -> AdmissionClient:
    cert, key = pki.client("kube-apiserver")
    return AdmissionClient(
        f"{served.url}/mutate", ca_file=served.cert, client_cert=cert, client_key=key
    )


def test_pods_are_admitted_by_the_real_webhook_as_the_api_server_calls_it(
    hook: tuple[A.Served, Authority],
) -> None:
    served, pki = hook
    api = ApiServer(admission=admission_client(served, pki))
    try:
        ravi = User("ravi@northwind.example", ("research", "system:authenticated"))
        pod = api.create_pod(gpu_pod(), user=ravi)
        meta = pod["metadata"]
        assert (
            meta["name"].startswith("experiment-") and len(meta["name"]) == len("experiment-") + 5
        )
        assert meta["labels"][contract.LABEL_DEPARTMENT] == "research"
        assert meta["labels"][contract.LABEL_QUEUE] == "experiments"
        grants = contract.load_slices(meta["annotations"][contract.ANNOTATION_SLICES])
        assert grants["main"].pool == "h100-mig"
        assert meta["annotations"][contract.ANNOTATION_ALLOCATION_ID].startswith("alloc-")
        assert pod["spec"]["nodeSelector"] == {"gpupool.io/pool": "h100-mig"}
        (managed,) = meta["managedFields"]  # as the webhook received it, and ignored it
        assert (managed["manager"], managed["operation"]) == ("kubectl-create", "Update")

        intern = User("ivan@northwind.example", ("interns", "system:authenticated"))
        with pytest.raises(Forbidden) as denied:
            api.create_pod(gpu_pod(namespace="search", sku="l40s-half"), user=intern)
        assert denied.value.reason == contract.Reason.FORBIDDEN.value
        assert denied.value.message.startswith(
            'admission webhook "pods.gpupool.io" denied the request: '
        )
        assert "ivan@northwind.example" in denied.value.message

        assert api.create_pod(plain_pod("web"), user=intern)["metadata"]["name"] == "web"
    finally:
        assert api.admission is not None
        api.admission.close()


def test_a_caller_without_the_client_certificate_fails_closed(
    hook: tuple[A.Served, Authority],
) -> None:
    served, _pki = hook
    stranger = Authority(served.cert.parent / "other", "some-other-ca")
    api = ApiServer(admission=admission_client(served, stranger))
    try:
        with pytest.raises(Forbidden) as refused:
            api.create_pod(gpu_pod(), user=User("ravi@northwind.example", ("research",)))
        assert refused.value.code == 500
        assert "failed calling webhook" in refused.value.message
        assert api.store.list("pods")[0] == []
    finally:
        assert api.admission is not None
        api.admission.close()


@pytest.mark.skipif(not TRACE.exists(), reason=f"the Alibaba trace is not at {TRACE}")
def test_planned_pods_get_the_decisions_their_intents_say_on_an_empty_ledger(
    hook: tuple[A.Served, Authority],
) -> None:
    served, pki = hook
    expected = {
        workload.Intent.ADMIT: contract.Reason.ADMITTED,
        workload.Intent.FORBIDDEN: contract.Reason.FORBIDDEN,
        workload.Intent.UNOWNED: contract.Reason.NAMESPACE_NOT_OWNED,
        workload.Intent.NOT_OFFERED: contract.Reason.SKU_NOT_OFFERED,
    }
    plan = workload.plan(trace.read_pods(TRACE), seed=3, speed=60, fleet_gpus=208)
    caller = admission_client(served, pki)
    seen: dict[workload.Intent, set[str]] = {}
    try:
        for planned in itertools.islice(plan, 600):
            review = admission_review(
                planned.pod(), user=planned.requester.identity(), uid=f"u{planned.seq}"
            )
            review["request"]["dryRun"] = True  # decided, never recorded: the ledger stays empty
            response = caller.review(review)
            reason = (response.get("status") or {}).get("reason", contract.Reason.ADMITTED.value)
            assert reason == expected[planned.intent].value, (planned, response)
            seen.setdefault(planned.intent, set()).add(planned.tenant)
    finally:
        caller.close()
    assert set(seen) == set(workload.Intent)
    assert seen[workload.Intent.ADMIT] == {t.name for t in workload.TENANTS}


def test_a_webhook_whose_certificate_the_caller_does_not_trust_is_not_called(
    hook: tuple[A.Served, Authority],
) -> None:
    served, pki = hook
    cert, key = pki.client("kube-apiserver")
    impostor_ca = Authority(served.cert.parent / "impostor", "not-the-webhooks-ca")
    caller = AdmissionClient(
        f"{served.url}/mutate", ca_file=impostor_ca.file, client_cert=cert, client_key=key
    )
    api = ApiServer(admission=caller)
    try:
        with pytest.raises(Forbidden, match="CERTIFICATE_VERIFY_FAILED"):
            api.create_pod(gpu_pod(), user=User("ravi@northwind.example", ("research",)))
    finally:
        caller.close()
