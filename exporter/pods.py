"""The node's pods, kept fresh by a watch; read by the sampler, never by a scrape.

``PodIndex`` is the pure part: it takes pods in the Kubernetes API's JSON form (what
``ApiClient().sanitize_for_serialization(V1Pod)`` or a raw watch event gives) and
answers "which pod has this UID". ``KubernetesPodWatch`` is the one thin adapter to the
Kubernetes API: a node-scoped list + watch (``spec.nodeName=<node>``) that feeds the
index, reconnecting after errors. The ``kubernetes`` package is imported only there,
so the exporter runs (simulated, or NVML without attribution) where it is absent.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from exporter.cgroups import strip_container_id
from exporter.model import PodMeta

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


class KubernetesPodWatch:
    """Node-scoped pod list + watch through the ``kubernetes`` client, feeding an index.

    ``api`` is a ``kubernetes.client.CoreV1Api`` (or anything with its
    ``list_pod_for_all_namespaces``); ``serialize`` turns a model into API JSON
    (``ApiClient().sanitize_for_serialization``); ``stream`` is ``Watch().stream``.
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
    ) -> None:
        self._index = index
        self._node = node_name
        self._api = api
        self._serialize = serialize
        self._stream = stream
        self._timeout = timeout_seconds
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

    def sync_once(self) -> None:
        """One list, then one watch until it times out or the adapter stops."""
        selector = f"spec.nodeName={self._node}"
        listing = self._api.list_pod_for_all_namespaces(field_selector=selector)
        self._index.replace(self._serialize(pod) for pod in listing.items)
        version = listing.metadata.resource_version
        for event in self._stream(
            self._api.list_pod_for_all_namespaces,
            field_selector=selector,
            resource_version=version,
            timeout_seconds=self._timeout,
        ):
            if self._stop.is_set():
                return
            self._index.apply(str(event["type"]), self._serialize(event["object"]))

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.sync_once()
                backoff = 1.0
            except Exception:  # the watch must outlive any API hiccup
                log.exception("pod watch failed; retrying in %.0f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
