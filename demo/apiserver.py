"""A DEMO STAND-IN for the Kubernetes API server: what ``gpupool demo`` needs, no more.

This is not Kubernetes. ``gpupool demo`` runs the real webhook, reconciler, exporter and
console, and they need an API server: the webhook is called by one, the reconciler and
the exporter list and watch its pods, the reconciler holds a Lease in it. This module
plays that part on loopback, for exactly what those components use:

- pods: list (with ``limit``/``continue``), watch from a resourceVersion (with
  BOOKMARKs when asked, 410 Gone past the kept history), get; field selectors on
  ``spec.nodeName`` (the exporter's node-scoped watch) and label selectors;
- Leases (``coordination.k8s.io/v1``): get, create, replace with optimistic
  concurrency (409 Conflict), as the reconciler's leader election needs;
- Events and Nodes, read-only over HTTP: the demo writes them for people to read
  (``curl .../api/v1/events``); no component reads them.

Pod creation goes through the admission chain as in a cluster (:meth:`ApiServer.create_pod`):
a GPU pod is sent to the webhook as an AdmissionReview built the way kube-apiserver
builds it (canonical quantities, a new request uid on every call, the caller's
userInfo, no name for a ``generateName`` pod), over HTTPS with the client certificate
the webhook's ``--client-ca`` verifies; a denial is refused with the webhook's code and
message, an admission applies the JSONPatch before the pod is stored (failure policy
Fail: a webhook that does not answer refuses the pod). The demo's driver creates pods
in process (no HTTP create): it plays the users and controllers that would.

Objects are built with the ``kubernetes`` client's models (:mod:`demo.models`) and kept
in :class:`demo.apistore.ObjectStore`. No authentication (loopback only, refused
elsewhere), no validation beyond what the demo's own pods need.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import logging
import random
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonpatch

from demo import models
from demo.apistore import (
    EVENTS,
    LEASES,
    NODES,
    PODS,
    ApiError,
    BadRequest,
    Forbidden,
    Gone,
    NotFound,
    ObjectStore,
    Selector,
)
from demo.quantities import canonical_resources
from governance import rbac

log = logging.getLogger("gpupool.demo.apiserver")

JSON = dict[str, Any]

WEBHOOK_NAME = "pods.gpupool.io"
"""The webhook's name in the chart's MutatingWebhookConfiguration (it prefixes denials)."""
WEBHOOK_TIMEOUT_S = 10.0
"""The chart's ``timeoutSeconds``: the webhook answers within its request budget (8 s)."""
GPU_RESOURCE_PREFIXES = (
    "nvidia.com/",
    "gpupool.io/",
    "huawei.com/",
    "cambricon.com/",
    "hygon.com/",
    "metax-tech.com/",
    "iluvatar.ai/",
)

"""Resources whose pods reach the webhook (the chart's matchConditions; a superset)."""
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""What the API server appends to a ``generateName`` (apimachinery's name generator)."""
CONTINUE_TTL_S = 60.0
MAX_EVENTS = 2000
"""Events kept (the API server lets them expire after an hour; a demo makes several a
second)."""


@dataclass(frozen=True)
class User:
    """Who makes a request, as the API server's authenticator says (``userInfo``)."""

    name: str
    groups: tuple[str, ...] = (rbac.AUTHENTICATED,)


class AdmissionClient:
    """The API server's side of calling the mutating webhook: an AdmissionReview v1 POSTed
    over HTTPS to ``url`` (``.../mutate``), verifying the webhook's certificate against
    ``ca_file`` (the configuration's caBundle) and presenting ``client_cert`` (the API
    server's ``--admission-control-config-file`` kubeconfig)."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path,
        client_cert: Path,
        client_key: Path,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
    ) -> None:
        self.url = url
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(client_cert), str(client_key))
        self._client = httpx.Client(verify=context, timeout=timeout_s)

    def review(self, body: JSON) -> JSON:
        """The webhook's ``response``; raises :class:`httpx.HTTPError` when it cannot
        be called or answers with an HTTP error."""
        answer = self._client.post(self.url, json=body)
        answer.raise_for_status()
        response: JSON = answer.json()["response"]
        return response

    def close(self) -> None:
        self._client.close()


def manager_of(user: User) -> str:
    """The field manager the API server records for ``user``'s writes: the controller
    manager for its controllers, ``kubectl`` (its default ``--field-manager``) for people."""
    if user.name.startswith("system:serviceaccount:kube-system:"):
        return "kube-controller-manager"
    return "kubectl-create"


def asks_for_gpu(pod: Mapping[str, Any]) -> bool:
    """Whether a pod reaches the webhook: a GPU vendor's resource in any container, or
    gpupool metadata (the chart's matchConditions)."""
    spec = pod.get("spec") or {}
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or ():
            resources = container.get("resources") or {}
            for values in (resources.get("limits") or {}, resources.get("requests") or {}):
                if any(str(name).startswith(GPU_RESOURCE_PREFIXES) for name in values):
                    return True
    meta = pod.get("metadata") or {}
    return any(
        str(key).startswith("gpupool.io/")
        for key in (*(meta.get("labels") or {}), *(meta.get("annotations") or {}))
    )


def admission_review(pod: JSON, *, user: User, uid: str) -> JSON:
    """The AdmissionReview request for creating ``pod``, as kube-apiserver writes it."""
    from kubernetes import client

    body = canonical_resources(copy.deepcopy(pod))
    meta = body.get("metadata") or {}
    resource = {"group": "", "version": "v1", "resource": "pods"}
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": meta.get("name") or "",
            "namespace": meta.get("namespace") or "",
            "operation": "CREATE",
            "userInfo": models.serialise(
                client.V1UserInfo(username=user.name, groups=list(user.groups))
            ),
            "object": body,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class ApiServer:
    """The stand-in: objects, the admission chain, and (:meth:`serve`) the HTTP front.

    ``rng`` names generated pods and gives uids (seeded: the same run names the same
    pods); ``clock`` stamps objects.
    """

    def __init__(
        self,
        *,
        admission: AdmissionClient | None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        store: ObjectStore | None = None,
    ) -> None:
        self.store = store or ObjectStore()
        self.admission = admission
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._events = itertools.count(1)
        self._continues: dict[str, tuple[list[JSON], int, float]] = {}

    def now(self) -> datetime:
        """The stand-in's clock (what it stamps objects with)."""
        return self._clock()

    def _uid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _suffix(self) -> str:
        with self._lock:
            return "".join(self._rng.choice(NAME_ALPHABET) for _ in range(5))

    # -- pods --------------------------------------------------------------------------

    def create_pod(self, pod: JSON, *, user: User) -> JSON:
        """Create ``pod`` (API JSON) as ``user``: admission, then storage.

        Raises :class:`demo.apistore.Forbidden` with the webhook's code, reason code and
        message when it denies the pod (or cannot be called), and the store's errors.
        """
        obj = copy.deepcopy(pod)
        meta = obj.setdefault("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        meta["namespace"] = namespace
        # the field manager has recorded the creator before admission runs
        meta["managedFields"] = [models.managed_fields(manager_of(user), self._clock(), obj)]
        if asks_for_gpu(obj):
            obj = self._admit(obj, user=user)
            meta = obj["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise BadRequest("metadata.name or metadata.generateName is required")
            meta["name"] = f"{meta['generateName']}{self._suffix()}"
        meta["uid"] = self._uid()
        meta["creationTimestamp"] = _rfc3339(self._clock())
        spec = obj.setdefault("spec", {})
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("restartPolicy", "Always")
        obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        return self.store.create(PODS, obj)

    def _admit(self, obj: JSON, *, user: User) -> JSON:
        if self.admission is None:
            raise Forbidden(
                f'Internal error occurred: failed calling webhook "{WEBHOOK_NAME}": no '
                "webhook configured",
                code=500,
                reason="InternalError",
            )
        review = admission_review(obj, user=user, uid=self._uid())
        try:
            response = self.admission.review(review)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            # failurePolicy: Fail
            raise Forbidden(
                f'Internal error occurred: failed calling webhook "{WEBHOOK_NAME}": {exc}',
                code=500,
                reason="InternalError",
            ) from exc
        if not response.get("allowed"):
            status = response.get("status") or {}
            raise Forbidden(
                f'admission webhook "{WEBHOOK_NAME}" denied the request: '
                f"{status.get('message', '')}",
                code=int(status.get("code") or 403),
                reason=str(status.get("reason") or "Forbidden"),
            )
        patch = response.get("patch")
        if patch:
            ops = json.loads(base64.b64decode(patch))
            patched: JSON = jsonpatch.apply_patch(review["request"]["object"], ops)
            return patched
        return obj

    def bind(self, namespace: str, name: str, node: str) -> JSON:
        """The scheduler's Binding: the pod is assigned to ``node``."""

        def assign(pod: JSON) -> None:
            pod["spec"]["nodeName"] = node
            status = pod.setdefault("status", {})
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": _rfc3339(self._clock()),
                }
            ]

        return self.store.modify(PODS, namespace, name, assign)

    def set_status(self, namespace: str, name: str, status: JSON) -> JSON:
        """The kubelet's (or scheduler's) status update."""

        def update(pod: JSON) -> None:
            pod["status"] = status

        return self.store.modify(PODS, namespace, name, update)

    def delete_pod(self, namespace: str, name: str, *, grace_s: int = 30) -> JSON:
        """Graceful deletion as the API server and kubelet do it: the pod is marked
        (``deletionTimestamp``, a MODIFIED event), its containers stop, then it goes."""
        now = _rfc3339(self._clock())

        def mark(pod: JSON) -> None:
            pod["metadata"]["deletionTimestamp"] = now
            pod["metadata"]["deletionGracePeriodSeconds"] = grace_s

        self.store.modify(PODS, namespace, name, mark)
        return self.store.delete(PODS, namespace, name)

    def pod(self, namespace: str, name: str) -> JSON:
        return self.store.get(PODS, namespace, name)

    # -- nodes and events --------------------------------------------------------------

    def add_node(self, node: JSON) -> JSON:
        return self.store.create(NODES, node)

    def record_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "gpupool-demo",
    ) -> JSON:
        meta = involved.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        base = meta.get("name") or meta.get("generateName") or "object"
        name = f"{str(base).rstrip('-')}.{next(self._events):x}{secrets.token_hex(4)}"
        self.store.trim(EVENTS, MAX_EVENTS - 1)
        return self.store.create(
            EVENTS,
            models.event(
                name=name,
                namespace=namespace,
                involved=involved,
                reason=reason,
                message=message,
                type_=type_,
                component=component,
                at=self._clock(),
            ),
        )

    # -- HTTP --------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Served:
        """Serve the HTTP API on ``host`` (loopback only) from daemon threads."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the demo's API stand-in serves loopback only, not {host}")
        server = _HttpServer((host, port), _Handler)
        server.api = self
        thread = threading.Thread(target=server.serve_forever, name="apiserver", daemon=True)
        thread.start()
        url = f"http://{host}:{server.server_address[1]}"
        log.debug("Kubernetes API stand-in (a demo stand-in, not Kubernetes) on %s", url)
        return Served(url=url, server=server, store=self.store)

    def handle(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> Answer:
        """One request -> an answer (a JSON body or a stream of watch events)."""
        parts = [p for p in path.split("/") if p]
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return Answer(200, text="ok")
        if parts == ["version"]:
            return Answer(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-gpupool-demo"})
        namespace = ""
        if len(parts) >= 4 and parts[:2] == ["api", "v1"] and parts[2] == "namespaces":
            namespace, rest = parts[3], parts[4:]
            group = "core"
        elif len(parts) >= 2 and parts[:2] == ["api", "v1"]:
            rest, group = parts[2:], "core"
        elif parts[:3] == ["apis", "coordination.k8s.io", "v1"] and len(parts) >= 6:
            if parts[3] != "namespaces":
                raise NotFound("the server could not find the requested resource")
            namespace, rest, group = parts[4], parts[5:], "coordination"
        else:
            raise NotFound("the server could not find the requested resource")
        if not rest:
            raise NotFound("the server could not find the requested resource")
        kind, name = rest[0], (rest[1] if len(rest) > 1 else "")
        allowed = {"core": (PODS, EVENTS, NODES), "coordination": (LEASES,)}[group]
        if kind not in allowed or len(rest) > 2:
            raise NotFound(f"the server could not find the requested resource ({'/'.join(rest)})")
        if kind == NODES and namespace:
            raise NotFound("nodes are not namespaced")
        if method == "GET":
            if name:
                return Answer(200, self.store.get(kind, namespace, name))
            return self._list_or_watch(kind, namespace, query)
        if kind != LEASES:
            raise ApiError405(f"{method} {kind}: this stand-in serves them read-only")
        if method == "POST" and not name:
            return Answer(201, self.store.create(LEASES, _lease(body, namespace)))
        if method == "PUT" and name:
            lease = _lease(body, namespace)
            if lease["metadata"].get("name") != name:
                raise BadRequest("the name of the object does not match the name in the URL")
            return Answer(200, self.store.update(LEASES, lease))
        if method == "DELETE" and name:
            self.store.delete(LEASES, namespace, name)
            return Answer(200, models.status(200, "", "deleted") | {"status": "Success"})
        raise ApiError405(f"{method} is not allowed here")

    def _list_or_watch(self, kind: str, namespace: str, query: Mapping[str, str]) -> Answer:
        selector = Selector.parse(query.get("fieldSelector", ""), query.get("labelSelector", ""))
        if query.get("watch") in ("true", "1", "True"):
            given = query.get("resourceVersion", "")
            try:
                since = int(given) if given not in ("", "0") else None
            except ValueError:
                raise BadRequest(f"resourceVersion {given!r} is not a number") from None
            timeout = float(query.get("timeoutSeconds") or 1800)
            events = self.store.watch(
                kind,
                since=since,
                namespace=namespace,
                selector=selector,
                timeout_s=timeout,
                bookmarks=query.get("allowWatchBookmarks") in ("true", "1", "True"),
            )
            return Answer(200, stream=events)
        token = query.get("continue")
        if token:
            with self._lock:
                found = self._continues.pop(token, None)
            if found is None or found[2] < time.monotonic():
                raise Gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
            items, version, _expiry = found
        else:
            items, version = self.store.list(kind, namespace=namespace, selector=selector)
        limit = int(query.get("limit") or 0)
        cont = None
        if limit and len(items) > limit:
            cont = secrets.token_urlsafe(12)
            with self._lock:
                now = time.monotonic()
                self._continues = {k: v for k, v in self._continues.items() if v[2] > now}
                self._continues[cont] = (items[limit:], version, now + CONTINUE_TTL_S)
            items = items[:limit]
        return Answer(200, models.object_list(kind, items, version, cont))


class ApiError405(ApiError):
    code, reason = 405, "MethodNotAllowed"


def _lease(body: bytes, namespace: str) -> JSON:
    try:
        raw = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") not in (None, "Lease"):
        raise BadRequest("the body is not a Lease")
    try:
        lease: JSON = models.serialise(models.parse(raw, "V1Lease"))
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"the body is not a valid Lease: {exc}") from exc
    meta = lease.setdefault("metadata", {})
    if meta.get("namespace", namespace) != namespace:
        raise BadRequest("the namespace of the object does not match the namespace in the URL")
    meta["namespace"] = namespace
    lease.setdefault("apiVersion", "coordination.k8s.io/v1")
    lease.setdefault("kind", "Lease")
    return lease


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Answer:
    code: int
    body: JSON | None = None
    text: str = ""
    stream: Iterator[JSON] | None = None


@dataclass
class Served:
    """A running HTTP front; :meth:`close` ends watches, stops serving and frees the port."""

    url: str
    server: _HttpServer
    store: ObjectStore

    def kubeconfig(self, path: Path, *, user: str = "gpupool-demo") -> Path:
        """A kubeconfig that points a ``kubernetes`` client at this stand-in."""
        import yaml

        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "gpupool-demo", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {}}],
            "contexts": [
                {"name": "gpupool-demo", "context": {"cluster": "gpupool-demo", "user": user}}
            ],
            "current-context": "gpupool-demo",
        }
        path.write_text(
            "# gpupool demo: its Kubernetes API stand-in (not a cluster)\n"
            + yaml.safe_dump(document, sort_keys=False)
        )
        return path

    def close(self) -> None:
        self.store.close()
        self.server.shutdown()
        self.server.server_close()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer
    server_version = "gpupool-demo-apiserver"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            answer = self.server.api.handle(method, split.path, query, body)
        except ApiError as exc:
            answer = Answer(exc.code, models.status(exc.code, exc.reason, exc.message))
        except Exception as exc:  # a bug here must answer, not hang the client
            log.exception("%s %s failed", method, self.path)
            answer = Answer(500, models.status(500, "InternalError", str(exc)))
        if answer.stream is not None:
            self._stream(answer.stream)
            return
        if answer.body is not None:
            data, kind = json.dumps(answer.body).encode(), "application/json"
        else:
            data, kind = answer.text.encode(), "text/plain; charset=utf-8"
        self.send_response(answer.code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[JSON]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(events, "close", None)
            if callable(close):
                close()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
