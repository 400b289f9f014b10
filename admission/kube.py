"""The reconciler's one Kubernetes adapter: pods (list, watch) and the leader Lease.

This is the only module of the reconciler that calls the ``kubernetes`` client. It has
two thin layers:

- *raw* APIs (:class:`ClientPodApi`, :class:`ClientLeaseApi`) make the HTTP calls with
  the client and hand back JSON exactly as the API server sends it (``dict`` bodies,
  one ``dict`` per watch line), turning the client's ``ApiException`` into
  :class:`ApiStatusError`. They hold no logic, so tests replace them with recorded
  payloads (``tests/support/kube.py``) built from the client's own models;
- *translators* (:class:`KubePods`, :class:`KubeLeases` and the ``*_from_json``
  functions) turn those payloads into the reconciler's values and the API's failures
  into its exceptions (410 Gone -> :class:`admission.reconciler.Gone`, 404/409 ->
  :class:`admission.leader.LeaseNotFound` / :class:`~admission.leader.LeaseConflict`).

Watch lines are parsed here rather than through ``kubernetes.watch.Watch``, whose
stream retries a 410 from the same stale version by itself; the reconciler must list
again instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from admission.leader import LeaseConflict, LeaseError, LeaseNotFound, LeaseRecord
from admission.reconciler import (
    EventType,
    Gone,
    PodView,
    Snapshot,
    WatchEvent,
    WatchFailed,
)
from governance.contract import ANNOTATION_ALLOCATION_ID

JSON = dict[str, Any]

IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ApiStatusError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"HTTP {status}: {reason}" if reason else f"HTTP {status}")
        self.status = status
        self.reason = reason


class MalformedObject(WatchFailed):
    """A payload that is not what the API server sends."""


# -- translation -------------------------------------------------------------------------


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedObject(f"{what}: expected an object, got {type(value).__name__}")
    return value


def pod_from_json(obj: Any) -> PodView:
    """A V1Pod as the API server serialises it -> :class:`PodView`."""
    pod = _mapping(obj, "pod")
    meta = _mapping(pod.get("metadata"), "pod metadata")
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    uid = meta.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedObject(f"pod {meta.get('namespace')}/{meta.get('name')} has no uid")
    allocation_id = annotations.get(ANNOTATION_ALLOCATION_ID)
    return PodView(
        uid=uid,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        phase=str(_mapping(status, "pod status").get("phase") or "Pending"),
        resource_version=str(meta.get("resourceVersion") or ""),
        allocation_id=str(allocation_id) if allocation_id else None,
    )


def event_from_json(raw: Any) -> WatchEvent:
    """One watch line (``{"type": ..., "object": ...}``) -> :class:`WatchEvent`."""
    event = _mapping(raw, "watch event")
    try:
        kind = EventType(str(event.get("type")))
    except ValueError as exc:
        raise MalformedObject(f"watch event of unknown type {event.get('type')!r}") from exc
    obj = _mapping(event.get("object"), f"{kind.value} event object")
    if kind is EventType.ERROR:
        code = obj.get("code")
        return WatchEvent(
            type=kind,
            code=code if isinstance(code, int) else None,
            message=f"{obj.get('reason', '')}: {obj.get('message', '')}".strip(": "),
        )
    meta = _mapping(obj.get("metadata"), f"{kind.value} event metadata")
    version = str(meta.get("resourceVersion") or "")
    if kind is EventType.BOOKMARK:
        return WatchEvent(type=kind, resource_version=version)
    return WatchEvent(type=kind, pod=pod_from_json(obj), resource_version=version)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise LeaseError(f"Lease time {value!r} is not RFC 3339") from exc


def _micro_time(value: datetime | None) -> str | None:
    # MicroTime: RFC 3339 with microseconds, in UTC.
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_from_json(obj: Any) -> LeaseRecord:
    lease = _mapping(obj, "lease")
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_time(spec.get("acquireTime")),
        renew_time=_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def lease_to_json(name: str, namespace: str, record: LeaseRecord) -> JSON:
    metadata: JSON = {"name": name, "namespace": namespace}
    if record.resource_version:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder or None,
            "leaseDurationSeconds": record.lease_duration_s,
            "acquireTime": _micro_time(record.acquire_time),
            "renewTime": _micro_time(record.renew_time),
            "leaseTransitions": record.transitions,
        },
    }


# -- pods --------------------------------------------------------------------------------


class RawPodApi(Protocol):
    def list_page(self, *, limit: int, continue_token: str | None) -> JSON:
        """One page of the PodList."""
        ...

    def watch(self, *, resource_version: str, timeout_s: int) -> Iterator[JSON]:
        """Watch lines, each decoded from JSON, until the server closes the stream."""
        ...


class KubePods:
    """The reconciler's :class:`admission.reconciler.PodSource` over a raw pod API."""

    def __init__(self, raw: RawPodApi, *, page_size: int = 500, watch_timeout_s: int = 300):
        self.raw = raw
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s

    def list_pods(self) -> Snapshot:
        pods: list[PodView] = []
        token: str | None = None
        version = ""
        while True:
            try:
                page = _mapping(
                    self.raw.list_page(limit=self.page_size, continue_token=token), "pod list"
                )
            except ApiStatusError as exc:
                # 410 here: the continue token expired mid-list; the caller lists again.
                raise (Gone if exc.status == 410 else WatchFailed)(str(exc)) from exc
            meta = _mapping(page.get("metadata") or {}, "pod list metadata")
            pods.extend(pod_from_json(item) for item in page.get("items") or [])
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if token is None:
                break
        if not version:
            raise MalformedObject("the pod list has no resourceVersion to watch from")
        return Snapshot(pods=tuple(pods), resource_version=version)

    def watch_pods(self, resource_version: str) -> Iterator[WatchEvent]:
        try:
            for line in self.raw.watch(
                resource_version=resource_version, timeout_s=self.watch_timeout_s
            ):
                yield event_from_json(line)
        except ApiStatusError as exc:
            raise (Gone if exc.status == 410 else WatchFailed)(str(exc)) from exc


class ClientPodApi:
    """Pods through ``kubernetes.client.CoreV1Api``, in one namespace or all."""

    def __init__(
        self, core: Any, *, namespace: str | None = None, label_selector: str = ""
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.label_selector = label_selector

    def _call(self, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        try:
            if self.namespace:
                return self.core.list_namespaced_pod(self.namespace, **kwargs)
            return self.core.list_pod_for_all_namespaces(**kwargs)
        except ApiException as exc:
            raise ApiStatusError(int(exc.status or 0), str(exc.reason or "")) from exc

    def list_page(self, *, limit: int, continue_token: str | None) -> JSON:
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if continue_token:
            kwargs["_continue"] = continue_token
        resp = self._call(**kwargs)
        try:
            body: JSON = json.loads(resp.data)
        finally:
            resp.release_conn()
        return body

    def watch(self, *, resource_version: str, timeout_s: int) -> Iterator[JSON]:
        from kubernetes.watch.watch import iter_resp_lines

        resp = self._call(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_s,
            _preload_content=False,
            # The server closes the stream after timeout_s; the read timeout only
            # catches a connection that died silently.
            _request_timeout=(10, timeout_s + 30),
        )
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.close()
            resp.release_conn()


# -- the Lease ---------------------------------------------------------------------------


class RawLeaseApi(Protocol):
    def read(self) -> JSON: ...

    def create(self, body: JSON) -> JSON: ...

    def replace(self, body: JSON) -> JSON: ...


class KubeLeases:
    """:class:`admission.leader.LeaseApi` over a raw Lease API."""

    def __init__(self, raw: RawLeaseApi, *, name: str, namespace: str) -> None:
        self.raw = raw
        self.name = name
        self.namespace = namespace

    def _translate(self, exc: ApiStatusError) -> LeaseError:
        where = f"Lease {self.namespace}/{self.name}"
        if exc.status == 404:
            return LeaseNotFound(f"{where} does not exist")
        if exc.status == 409:
            return LeaseConflict(f"{where} was written by someone else: {exc.reason}")
        return LeaseError(f"{where}: {exc}")

    def get(self) -> LeaseRecord:
        try:
            return lease_from_json(self.raw.read())
        except ApiStatusError as exc:
            raise self._translate(exc) from exc

    def create(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_to_json(self.name, self.namespace, record)
        body["metadata"].pop("resourceVersion", None)
        try:
            return lease_from_json(self.raw.create(body))
        except ApiStatusError as exc:
            raise self._translate(exc) from exc

    def update(self, record: LeaseRecord) -> LeaseRecord:
        try:
            return lease_from_json(
                self.raw.replace(lease_to_json(self.name, self.namespace, record))
            )
        except ApiStatusError as exc:
            raise self._translate(exc) from exc


class ClientLeaseApi:
    """One Lease through ``kubernetes.client.CoordinationV1Api``."""

    def __init__(self, coordination: Any, *, name: str, namespace: str) -> None:
        self.api = coordination
        self.name = name
        self.namespace = namespace

    def _json(self, call: Any, *args: Any) -> JSON:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = call(*args, _preload_content=False)
        except ApiException as exc:
            raise ApiStatusError(int(exc.status or 0), str(exc.reason or "")) from exc
        try:
            body: JSON = json.loads(resp.data)
        finally:
            resp.release_conn()
        return body

    def read(self) -> JSON:
        return self._json(self.api.read_namespaced_lease, self.name, self.namespace)

    def create(self, body: JSON) -> JSON:
        return self._json(self.api.create_namespaced_lease, self.namespace, body)

    def replace(self, body: JSON) -> JSON:
        return self._json(self.api.replace_namespaced_lease, self.name, self.namespace, body)


# -- configuration -----------------------------------------------------------------------


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient``: from ``kubeconfig`` if given, in-cluster inside a pod, else the
    default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    return config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context
    )


def core_api(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def coordination_api(api: Any) -> Any:
    from kubernetes import client

    return client.CoordinationV1Api(api)


def own_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (in-cluster), else ``default``."""
    try:
        with open(IN_CLUSTER_NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or default
    except OSError:
        return default
