"""The reconciler's pure parts: the ledger decision, the adapter's translation of API
payloads (built with the kubernetes client's models). The watch loop and its backoff:
tests/unit/test_watching.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from kubernetes import client, watch

from admission import kube
from admission.leader import LeaseConflict, LeaseError, LeaseNotFound, LeaseRecord
from admission.reconciler import (
    EventType,
    Gone,
    PodView,
    Step,
    Suspicion,
    WatchFailed,
    decide,
)
from governance.resources import Resources
from governance.storage.ledger import Allocation, State
from tests.support.kube import (
    T0,
    FakeLeaseServer,
    RecordedPodApi,
    bookmark,
    event,
    gone,
    make_pod,
    pod_list,
    serialise,
)

pytestmark = pytest.mark.unit


def allocation(state: State, *, pod_uid: str = "", pod_name: str = "") -> Allocation:
    return Allocation(
        id="alloc-1",
        request_uid="req-1",
        state=state,
        namespace="team-a",
        pod_name=pod_name,
        pod_uid=pod_uid,
        department="research",
        queue="default",
        sku="a100-1g",
        pool="a100",
        amount=Resources(slices=1),
        borrowed=Resources(),
        subject="",
        grants={},
        created_at=T0,
        expires_at=T0 + timedelta(minutes=10),
        bound_at=None,
        ended_at=None,
    )


def view(
    phase: str = "Running", *, uid: str = "uid-1", namespace: str = "team-a", name: str = "train-x"
) -> PodView:
    return PodView(
        uid=uid,
        namespace=namespace,
        name=name,
        phase=phase,
        resource_version="7",
        allocation_id="alloc-1",
    )


BIND, RELEASE = Step.BIND, Step.RELEASE


@pytest.mark.parametrize(
    ("state", "phase", "gone", "steps"),
    [
        pytest.param(State.RESERVED, "Pending", False, (BIND,), id="reserved-pod-pending-binds"),
        pytest.param(State.RESERVED, "Running", False, (BIND,), id="reserved-pod-running-binds"),
        pytest.param(State.EXPIRED, "Running", False, (BIND,), id="expired-pod-late-binds-again"),
        pytest.param(State.BOUND, "Running", False, (), id="bound-pod-running-nothing"),
        pytest.param(State.RELEASED, "Running", False, (), id="released-never-binds-again"),
        pytest.param(State.BOUND, "Succeeded", False, (RELEASE,), id="bound-succeeded-releases"),
        pytest.param(State.BOUND, "Failed", False, (RELEASE,), id="bound-failed-releases"),
        pytest.param(State.BOUND, "Running", True, (RELEASE,), id="bound-deleted-releases"),
        pytest.param(State.RESERVED, "Pending", True, (BIND, RELEASE), id="deleted-unseen"),
        pytest.param(State.RESERVED, "Failed", False, (BIND, RELEASE), id="failed-unseen"),
        pytest.param(State.EXPIRED, "Succeeded", False, (), id="expired-ended-nothing"),
        pytest.param(State.RELEASED, "Succeeded", True, (), id="released-deleted-nothing"),
    ],
)
def test_decide_moves_the_entry_towards_the_pod(
    state: State, phase: str, gone: bool, steps: tuple[Step, ...]
) -> None:
    bound = state in (State.BOUND, State.RELEASED)
    entry = allocation(state, pod_uid="uid-1" if bound else "")
    decision = decide(view(phase), entry, gone=gone)
    assert decision.suspicion is None
    assert decision.steps == steps


@pytest.mark.parametrize(
    ("entry", "pod", "suspicion"),
    [
        pytest.param(None, view(), Suspicion.UNKNOWN_ALLOCATION, id="unknown-id"),
        pytest.param(
            allocation(State.RESERVED),
            view(namespace="team-b"),
            Suspicion.NAMESPACE_MISMATCH,
            id="other-namespace",
        ),
        pytest.param(
            allocation(State.BOUND, pod_uid="uid-1"),
            view(uid="uid-2"),
            Suspicion.POD_MISMATCH,
            id="annotation-copied-to-another-pod",
        ),
        pytest.param(
            allocation(State.RESERVED, pod_name="train-x"),
            view(name="train-y"),
            Suspicion.POD_MISMATCH,
            id="other-pod-name",
        ),
    ],
)
def test_decide_distrusts_forged_annotations(
    entry: Allocation | None, pod: PodView, suspicion: Suspicion
) -> None:
    for deleted in (False, True):
        decision = decide(pod, entry, gone=deleted)
        assert decision.steps == ()
        assert decision.suspicion is suspicion
        assert pod.uid in decision.message
        if suspicion is Suspicion.POD_MISMATCH:  # the reconciler counts it on its own
            assert "counted on an entry of its own" in decision.message
        else:
            assert "ignored" in decision.message


# -- translation -------------------------------------------------------------------------


def test_pod_event_translates_from_the_api_json() -> None:
    pod = make_pod("train-x", phase="Running", resource_version="42", allocation_id="alloc-9")
    ev = kube.event_from_json(event("MODIFIED", pod))
    assert ev.type is EventType.MODIFIED
    assert ev.resource_version == "42"
    assert ev.pod == PodView(
        uid=pod.metadata.uid,
        namespace="team-a",
        name="train-x",
        phase="Running",
        resource_version="42",
        allocation_id="alloc-9",
    )


def test_translation_matches_the_client_watch_deserialisation_path() -> None:
    """What kubernetes.watch.Watch keeps as raw_object translates the same."""
    pod = make_pod("train-x", phase="Succeeded", resource_version="8", allocation_id="alloc-9")
    line = json.dumps(event("DELETED", pod))
    unmarshalled = watch.Watch().unmarshal_event(line, "V1Pod")
    assert isinstance(unmarshalled["object"], client.V1Pod)
    raw = {"type": unmarshalled["type"], "object": unmarshalled["raw_object"]}
    assert kube.event_from_json(raw) == kube.event_from_json(json.loads(line))


def test_unannotated_pod_has_no_allocation() -> None:
    ev = kube.event_from_json(event("ADDED", make_pod("web")))
    assert ev.pod is not None and ev.pod.allocation_id is None


def test_bookmark_and_gone_translate() -> None:
    mark = kube.event_from_json(bookmark("977"))
    assert (mark.type, mark.resource_version, mark.pod) == (EventType.BOOKMARK, "977", None)
    err = kube.event_from_json(gone("5", "900"))
    assert err.type is EventType.ERROR and err.code == 410
    assert "too old resource version: 5 (900)" in err.message


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        pytest.param([], "watch event: expected an object", id="not-an-object"),
        pytest.param({"type": "RESIZED", "object": {}}, "unknown type 'RESIZED'", id="bad-type"),
        pytest.param({"type": "ADDED"}, "ADDED event object: expected an object", id="no-object"),
        pytest.param(
            {"type": "ADDED", "object": {"metadata": {"name": "p", "namespace": "n"}}},
            "pod n/p has no uid",
            id="no-uid",
        ),
    ],
)
def test_malformed_payloads_say_what_is_wrong(payload: object, needle: str) -> None:
    with pytest.raises(kube.MalformedObject) as info:
        kube.event_from_json(payload)
    assert needle in str(info.value)
    assert isinstance(info.value, WatchFailed)


def test_list_follows_continue_tokens_and_watches_from_the_last_version() -> None:
    a = make_pod("a", allocation_id="alloc-a", resource_version="3")
    b = make_pod("b", resource_version="4")
    raw = RecordedPodApi(lists=[pod_list([a], "10", cont="tok"), pod_list([b], "10")])
    snap = kube.KubePods(raw, page_size=1).list_pods()
    assert [p.name for p in snap.pods] == ["a", "b"]
    assert snap.resource_version == "10"
    assert raw.listed == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [pytest.param(410, Gone, id="410-gone"), pytest.param(500, WatchFailed, id="500")],
)
def test_api_errors_become_reconciler_errors(status: int, error: type[Exception]) -> None:
    failing = kube.ApiStatusError(status, "boom")
    pods = kube.KubePods(RecordedPodApi(lists=[failing], watches=[failing]))
    with pytest.raises(error):
        pods.list_pods()
    with pytest.raises(error):
        list(pods.watch_pods("5"))


def test_lease_round_trips_through_the_client_model() -> None:
    record = LeaseRecord(
        holder="rec-1",
        lease_duration_s=15,
        acquire_time=T0,
        renew_time=T0 + timedelta(seconds=3, microseconds=250),
        transitions=2,
        resource_version="77",
    )
    body = kube.lease_to_json("gpupool-reconciler", "gpupool", record)
    assert body["spec"]["renewTime"] == "2026-11-27T04:00:03.000250Z"
    model = client.ApiClient().deserialize(json.dumps(body), "V1Lease", "application/json")
    assert model.spec.holder_identity == "rec-1"
    assert kube.lease_from_json(serialise(model)) == record


def test_lease_api_errors_translate() -> None:
    server = FakeLeaseServer()
    leases = kube.KubeLeases(server.api("l"), name="l", namespace="gpupool")
    with pytest.raises(LeaseNotFound):
        leases.get()
    first = leases.create(LeaseRecord(holder="a", lease_duration_s=15, renew_time=T0))
    with pytest.raises(LeaseConflict):
        leases.create(LeaseRecord(holder="b", lease_duration_s=15))
    leases.update(
        LeaseRecord(holder="a", lease_duration_s=15, resource_version=first.resource_version)
    )
    with pytest.raises(LeaseConflict):  # written at a version that is no longer current
        leases.update(
            LeaseRecord(holder="b", lease_duration_s=15, resource_version=first.resource_version)
        )
    server.down = True
    with pytest.raises(LeaseError, match="HTTP 503"):
        leases.get()
