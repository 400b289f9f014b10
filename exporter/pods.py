"""The node's pods, kept fresh by a watch; read by the sampler, never by a scrape.

``PodIndex`` is the pure part: it takes pods in the Kubernetes API's JSON form (what
``ApiClient().sanitize_for_serialization(V1Pod)`` or a raw watch event gives) and
answers "which pod has this UID". ``KubernetesPodWatch`` is the one thin adapter to the
Kubernetes API: a node-scoped list + watch (``spec.nodeName=<node>``) that feeds the
index, on the list-then-watch loop the reconciler shares
(:func:`governance.watching.list_then_watch`). The ``kubernetes`` package is imported
only there, so the exporter runs (simulated, or NVML without attribution) where it is
absent.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.cgroups import strip_container_id
from exporter.model import PodMeta
from governance.watching import Backoff, Gone, Listing, ResumePoint, list_then_watch

log = logging.getLogger(__name__)


class PodSource(Protocol):
    """Anything that knows the node's pods by UID."""

    def get(self, uid: str) -> PodMeta | None: ...

    def pods(self) -> list[PodMeta]: ...


def pod_from_json(obj: Mapping[str, Any]) -> PodMeta:
    """Convert a pod in the API's JSON form; raise ValueError when it has no UID."""
    metadata = obj.get("metadata") or {}
    uid = str(metadata.get("uid") or "")
    if not uid:
        raise ValueError("pod without metadata.uid")
    status = obj.get("status") or {}
    container_ids: dict[str, str] = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for container in status.get(key) or ():
            cid = strip_container_id(str(container.get("containerID") or ""))
            if cid:
                container_ids[cid] = str(container.get("name") or "")
    return PodMeta(
        uid=uid,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        container_ids=container_ids,
        phase=str(status.get("phase") or ""),
    )


class PodIndex:
    """Pods by UID; updated by watch events, read by the sampler (thread-safe)."""

    def __init__(self, pods: Iterable[PodMeta] = ()) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, PodMeta] = {pod.uid: pod for pod in pods}

    def get(self, uid: str) -> PodMeta | None:
        with self._lock:
            return self._pods.get(uid)

    def pods(self) -> list[PodMeta]:
        with self._lock:
            return list(self._pods.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods)

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Replace the whole index with a fresh list (after a (re)list)."""
        pods = {}
        for obj in objects:
            pod = pod_from_json(obj)
            pods[pod.uid] = pod
        with self._lock:
            self._pods = pods

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED)."""
        pod = pod_from_json(obj)
        with self._lock:
            if event_type == "DELETED":
                self._pods.pop(pod.uid, None)
            elif event_type in ("ADDED", "MODIFIED"):
                self._pods[pod.uid] = pod


@dataclass(frozen=True, kw_only=True)
class PodEvent:
    """One watch event: its type, the object as API JSON, the version to resume from."""

    type: str
    object: Mapping[str, Any]
    resource_version: str


class KubernetesPodWatch:
    """Node-scoped pod list + watch through the ``kubernetes`` client, feeding an index.

    ``api`` is a ``kubernetes.client.CoreV1Api`` (or anything with its
    ``list_pod_for_all_namespaces``); ``serialize`` turns a model into API JSON
    (``ApiClient().sanitize_for_serialization``); ``stream`` is ``Watch().stream``,
    which, given a timeout, raises the client's ``ApiException`` for an ERROR event;
    one with status 410 becomes :class:`governance.watching.Gone`.

    The loop is the one the reconciler runs on
    (:func:`governance.watching.list_then_watch`): list, then watch from the list's
    version with bookmarks; resume from the last version applied when the server ends
    the watch or a connection breaks; list again only at start and after 410 Gone; back
    off with full jitter on errors.
    """

    def __init__(
        self,
        *,
        index: PodIndex,
        node_name: str,
        api: Any,
        serialize: Callable[[Any], Any],
        stream: Callable[..., Iterator[Mapping[str, Any]]],
        timeout_seconds: int = 300,
        backoff: Backoff | None = None,
        rewatch_pause_s: float = 1.0,
    ) -> None:
        self._index = index
        self._selector = f"spec.nodeName={node_name}"
        self._api = api
        self._serialize = serialize
        self._stream = stream
        self._timeout = timeout_seconds
        self._backoff = backoff
        self._rewatch_pause_s = rewatch_pause_s
        self.cursor = ResumePoint()
        """Where the next watch resumes; None until the first list is applied."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def in_cluster(
        cls, *, index: PodIndex, node_name: str, kubeconfig: str | None = None
    ) -> KubernetesPodWatch:
        """Build from ``kubeconfig`` when given, else the pod's service account, else
        $KUBECONFIG or ~/.kube/config (outside a cluster)."""
        client = importlib.import_module("kubernetes.client")
        config = importlib.import_module("kubernetes.config")
        watch = importlib.import_module("kubernetes.watch")
        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        return cls(
            index=index,
            node_name=node_name,
            api=client.CoreV1Api(api_client),
            serialize=api_client.sanitize_for_serialization,
            stream=watch.Watch().stream,
        )

    def list_pods(self) -> Listing[Mapping[str, Any]]:
        """The node's pods, as API JSON."""
        listing = self._api.list_pod_for_all_namespaces(field_selector=self._selector)
        version = str(listing.metadata.resource_version or "")
        if not version:
            raise ValueError("the pod list has no resourceVersion to watch from")
        return Listing(
            items=tuple(self._serialize(pod) for pod in listing.items), resource_version=version
        )

    def watch_pods(self, resource_version: str) -> Iterator[PodEvent]:
        """The node's pod events after ``resource_version`` until the server ends the
        watch; :class:`governance.watching.Gone` when the version is too old."""
        try:
            for raw in self._stream(
                self._api.list_pod_for_all_namespaces,
                field_selector=self._selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._timeout,
            ):
                yield self._event(raw)
        except Exception as exc:
            # the client's ApiException; imported nowhere here (see the module)
            if getattr(exc, "status", None) == 410:
                raise Gone(str(exc)) from exc
            raise

    def _event(self, raw: Mapping[str, Any]) -> PodEvent:
        kind = str(raw["type"])
        obj: Mapping[str, Any] = self._serialize(raw["object"]) or {}
        if kind == "ERROR":  # Watch.stream raises instead; a raw stream sends them
            message = f"watch error {obj.get('code')}: {obj.get('message', '')}"
            raise Gone(message) if obj.get("code") == 410 else RuntimeError(message)
        metadata = obj.get("metadata") or {}
        return PodEvent(
            type=kind, object=obj, resource_version=str(metadata.get("resourceVersion") or "")
        )

    def _apply(self, event: PodEvent) -> None:
        if event.type != "BOOKMARK":  # a bookmark only moves the resume point
            self._index.apply(event.type, event.object)

    def run(self, *, max_rounds: int | None = None) -> None:
        """Feed the index until :meth:`stop` (``max_rounds``: for tests)."""
        list_then_watch(
            list_=self.list_pods,
            watch=self.watch_pods,
            on_list=lambda listing: self._index.replace(listing.items),
            on_event=self._apply,
            stop=self._stop,
            cursor=self.cursor,
            backoff=self._backoff,
            rewatch_pause_s=self._rewatch_pause_s,
            max_rounds=max_rounds,
            name="exporter pod watch",
            log=log,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
