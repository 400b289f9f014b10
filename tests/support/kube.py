"""Builders for the reconciler's tests: pods and watch streams made with the
``kubernetes`` client's own models and serialised as the API server sends them
(``ApiClient().sanitize_for_serialization``), fakes of the *raw* Kubernetes API that
sit behind :mod:`admission.kube`'s translators, a settable clock, and ledger seeds;
and (from :mod:`demo.quantities`, where ``gpupool demo``'s API stand-in uses them)
:func:`canonical_quantity`, which writes a resource quantity back as kube-apiserver
does before it calls a webhook, and :func:`canonical_resources`.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from admission.kube import ApiStatusError
from demo.models import parse
from demo.models import serialise as serialise
from demo.quantities import canonical_quantity as canonical_quantity
from demo.quantities import canonical_resources as canonical_resources
from governance import scopes
from governance.contract import ANNOTATION_ALLOCATION_ID, LABEL_SKU, SliceGrant
from governance.model import Department, Org, Pool, Queue, Sku
from governance.quotas import Demand
from governance.resources import Resources
from governance.storage import ledger
from governance.storage.store import Store
from tests.support.recorded import next_stream

JSON = dict[str, Any]
T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


# -- pods and watch events ---------------------------------------------------------------


def make_pod(
    name: str,
    *,
    namespace: str = "team-a",
    uid: str | None = None,
    phase: str = "Pending",
    resource_version: str = "1",
    allocation_id: str | None = None,
    deleting: bool = False,
) -> client.V1Pod:
    annotations = {ANNOTATION_ALLOCATION_ID: allocation_id} if allocation_id else None
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
            resource_version=resource_version,
            creation_timestamp=T0,
            deletion_timestamp=T0 if deleting else None,
            annotations=annotations,
            labels={LABEL_SKU: "a100-1g"} if allocation_id else {"app": "web"},
        ),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="registry.example/train:1",
                    resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
                )
            ]
        ),
        status=client.V1PodStatus(phase=phase),
    )


def with_state(
    pod: client.V1Pod, *, resource_version: str, phase: str | None = None
) -> client.V1Pod:
    """The same pod at a later version (a deep copy through the API JSON)."""
    copy = parse(serialise(pod), "V1Pod")
    copy.metadata.resource_version = resource_version
    if phase is not None:
        copy.status.phase = phase
    return copy


def event(kind: str, pod: client.V1Pod) -> JSON:
    return {"type": kind, "object": serialise(pod)}


def bookmark(resource_version: str) -> JSON:
    # A bookmark carries an object of the watched kind with only its resourceVersion.
    return {
        "type": "BOOKMARK",
        "object": serialise(
            client.V1Pod(
                api_version="v1",
                kind="Pod",
                metadata=client.V1ObjectMeta(
                    resource_version=resource_version,
                    annotations={"k8s.io/initial-events-end": "true"},
                ),
            )
        ),
    }


def gone(requested: str, oldest: str) -> JSON:
    """The ERROR event the API server sends when the watch's version was compacted."""
    return {
        "type": "ERROR",
        "object": serialise(
            client.V1Status(
                api_version="v1",
                kind="Status",
                metadata=client.V1ListMeta(),
                status="Failure",
                message=f"too old resource version: {requested} ({oldest})",
                reason="Expired",
                code=410,
            )
        ),
    }


def pod_list(pods: Sequence[client.V1Pod], resource_version: str, cont: str | None = None) -> JSON:
    return serialise(
        client.V1PodList(
            api_version="v1",
            kind="PodList",
            items=list(pods),
            metadata=client.V1ListMeta(resource_version=resource_version, _continue=cont),
        )
    )


Stream = Sequence[JSON | Exception]


@dataclass
class RecordedPodApi:
    """A raw pod API (:class:`admission.kube.RawPodApi`) replaying recorded answers.

    ``lists``: one answer per list page request (a PodList JSON or an exception);
    ``watches``: one stream per watch request, each a sequence of event JSON
    (an exception in it is raised there, as a broken connection would be). A watch
    request after the last recorded one yields nothing (the server's timeout).
    """

    lists: list[JSON | Exception]
    watches: list[Stream | Exception] = field(default_factory=list)
    watched_from: list[str] = field(default_factory=list)
    listed: int = 0

    def list_page(self, *, limit: int, continue_token: str | None) -> JSON:
        self.listed += 1
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self, *, resource_version: str, timeout_s: int) -> Iterator[JSON]:
        self.watched_from.append(resource_version)
        # Each line crosses the wire as JSON text.
        return (json.loads(json.dumps(item)) for item in next_stream(self.watches))


# -- the Lease API -----------------------------------------------------------------------


class FakeLeaseServer:
    """One namespace's Leases as the API server keeps them: bodies are parsed with the
    client's V1Lease model (so a malformed time fails as it would there), every write
    bumps the resourceVersion, and a write at a stale version gets 409 Conflict."""

    def __init__(self) -> None:
        self.leases: dict[str, JSON] = {}
        self._versions = itertools.count(100)
        self.down = False

    def api(self, name: str) -> FakeLeaseApi:
        return FakeLeaseApi(self, name)

    def _check(self) -> None:
        if self.down:
            raise ApiStatusError(503, "Service Unavailable")

    def _store(self, name: str, body: JSON) -> JSON:
        model = parse(body, "V1Lease")
        if model.metadata.name != name:
            raise ApiStatusError(400, "name in body does not match the URL")
        model.metadata.resource_version = str(next(self._versions))
        stored = serialise(model)
        self.leases[name] = stored
        return json.loads(json.dumps(stored))

    def read(self, name: str) -> JSON:
        self._check()
        if name not in self.leases:
            raise ApiStatusError(404, "Not Found")
        return json.loads(json.dumps(self.leases[name]))

    def create(self, name: str, body: JSON) -> JSON:
        self._check()
        if name in self.leases:
            raise ApiStatusError(409, "AlreadyExists")
        return self._store(name, body)

    def replace(self, name: str, body: JSON) -> JSON:
        self._check()
        if name not in self.leases:
            raise ApiStatusError(404, "Not Found")
        current = self.leases[name]["metadata"]["resourceVersion"]
        if body.get("metadata", {}).get("resourceVersion") != current:
            raise ApiStatusError(409, "Conflict: the object has been modified")
        return self._store(name, body)


@dataclass
class FakeLeaseApi:
    """A raw Lease API (:class:`admission.kube.RawLeaseApi`) on a :class:`FakeLeaseServer`."""

    server: FakeLeaseServer
    name: str

    def read(self) -> JSON:
        return self.server.read(self.name)

    def create(self, body: JSON) -> JSON:
        return self.server.create(self.name, body)

    def replace(self, body: JSON) -> JSON:
        return self.server.replace(self.name, body)


# -- clock -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- ledger seeds ------------------------------------------------------------------------

DEPARTMENT = "research"
NAMESPACE = "team-a"


def small_org() -> Org:
    """One department owning ``team-a``, one queue, one pool, one SKU; no limits."""
    return Org(
        skus={"a100-1g": Sku(name="a100-1g", compute_pct=14, memory_mib=10240, pools=("a100",))},
        pools={
            "a100": Pool(
                name="a100",
                vendor="nvidia",
                model="A100",
                backend="hami",
                gpus=8,
                memory_mib_per_gpu=81920,
            )
        },
        departments={
            DEPARTMENT: Department(
                name=DEPARTMENT, namespaces=(NAMESPACE,), default_queue="default"
            )
        },
        queues={(DEPARTMENT, "default"): Queue(name="default", department=DEPARTMENT, pool="a100")},
    )


def reserve(
    store: Store,
    *,
    namespace: str = NAMESPACE,
    pod_name: str = "",
    now: datetime = T0,
    ttl: timedelta = ledger.DEFAULT_TTL,
) -> str:
    """Reserve one slice as the webhook does; returns the allocation id."""
    grant = SliceGrant(
        count=1, memory_mib=10240, compute_pct=14, backend="hami", pool="a100", sku="a100-1g"
    )
    reservation = ledger.reserve(
        store,
        small_org(),
        demand=Demand(
            department=DEPARTMENT,
            queue="default",
            sku="a100-1g",
            pool="a100",
            amount=Resources(slices=1, memory_mib=10240, compute_pct=14),
        ),
        request_uid=str(uuid.uuid4()),
        namespace=namespace,
        grants={"main": grant},
        pod_name=pod_name,
        ttl=ttl,
        now=now,
    )
    assert reservation.allocation is not None, reservation.decision
    return reservation.allocation.id


def slices_in_use(store: Store) -> int:
    return ledger.usage(store).get(scopes.department(DEPARTMENT), Resources()).slices
