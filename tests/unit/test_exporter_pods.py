"""The pod index and the one Kubernetes adapter, fed with the kubernetes client's models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from exporter.pods import KubernetesPodWatch, PodIndex, pod_from_json
from governance import contract
from governance.watching import Backoff
from tests.support.exporter import grant, make_pod, make_pod_json
from tests.support.recorded import Recording, next_stream

pytestmark = pytest.mark.unit


def test_pod_from_json_reads_labels_annotations_and_container_ids() -> None:
    pod = pod_from_json(
        make_pod_json(
            name="p",
            containers={"main": "a" * 64, "side": "b" * 64},
            grants={"main": grant(1024, 10)},
        )
    )
    assert (pod.namespace, pod.name, pod.phase) == ("research", "p", "Running")
    assert (pod.department, pod.queue, pod.sku) == ("research", "training", "h100-1g-20gb")
    assert pod.container_ids == {"a" * 64: "main", "b" * 64: "side"}
    assert (
        contract.load_slices(pod.annotations[contract.ANNOTATION_SLICES])["main"].memory_mib == 1024
    )


def test_pod_without_uid_is_rejected() -> None:
    with pytest.raises(ValueError, match="uid"):
        pod_from_json({"metadata": {"name": "x"}})


def test_index_applies_watch_events() -> None:
    index = PodIndex()
    obj = make_pod_json(name="p", uid="u-1")
    index.apply("ADDED", obj)
    assert index.get("u-1") is not None
    obj["metadata"]["labels"][contract.LABEL_QUEUE] = "other"
    index.apply("MODIFIED", obj)
    pod = index.get("u-1")
    assert pod is not None and pod.queue == "other"
    index.apply("DELETED", obj)
    assert index.get("u-1") is None and len(index) == 0


class _FakeCoreV1:
    """The Kubernetes API boundary: answers list calls with the client's own models."""

    def __init__(self, *lists: tuple[list[client.V1Pod], str]) -> None:
        self.lists = list(lists)
        self.selectors: list[str] = []

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> client.V1PodList:
        self.selectors.append(kwargs["field_selector"])
        pods, version = self.lists.pop(0)
        return client.V1PodList(items=pods, metadata=client.V1ListMeta(resource_version=version))


class _FakeStream:
    """``Watch().stream`` as the client behaves given a timeout: one recorded stream per
    call (events with models as objects, a bookmark's object as the raw JSON; an
    exception where the client raises one, as ``ApiException`` for an ERROR event), and
    nothing after the last (the server's timeout)."""

    def __init__(self, *streams: Recording[dict[str, Any]]) -> None:
        self.streams = list(streams)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, func: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(kwargs)
        return next_stream(self.streams)


def _at(pod: client.V1Pod, version: str) -> client.V1Pod:
    pod.metadata.resource_version = version
    return pod


def _bookmark(version: str) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": version}},
    }


def _watch(index: PodIndex, api: _FakeCoreV1, stream: _FakeStream) -> KubernetesPodWatch:
    return KubernetesPodWatch(
        index=index,
        node_name="gpu-node-1",
        api=api,
        serialize=client.ApiClient().sanitize_for_serialization,
        stream=stream,
        backoff=Backoff(base_s=0.001, cap_s=0.002),
        rewatch_pause_s=0,
    )


def test_watch_adapter_lists_node_pods_then_applies_events() -> None:
    first = make_pod(name="a", uid="u-a")
    second = _at(make_pod(name="b", uid="u-b"), "42")
    api = _FakeCoreV1(([first], "41"))
    stream = _FakeStream(
        [{"type": "ADDED", "object": second}, {"type": "DELETED", "object": _at(first, "43")}]
    )
    index = PodIndex()
    _watch(index, api, stream).run(max_rounds=1)
    assert api.selectors == ["spec.nodeName=gpu-node-1"]
    (call,) = stream.calls
    assert call["field_selector"] == "spec.nodeName=gpu-node-1"
    assert call["resource_version"] == "41"
    assert call["allow_watch_bookmarks"] is True
    assert index.get("u-a") is None
    pod = index.get("u-b")
    assert pod is not None and pod.name == "b"


def test_watch_adapter_resumes_from_the_last_event_or_bookmark_without_listing_again() -> None:
    """The reconciler's semantics: a watch the server ended is resumed, not re-listed."""
    api = _FakeCoreV1(([make_pod(name="a", uid="u-a")], "10"))
    stream = _FakeStream(
        [{"type": "ADDED", "object": _at(make_pod(name="b", uid="u-b"), "11")}],
        [_bookmark("20")],
        [ConnectionResetError("connection reset by peer")],
        [],
    )
    index = PodIndex()
    watch = _watch(index, api, stream)
    watch.run(max_rounds=4)
    assert len(api.selectors) == 1
    assert [c["resource_version"] for c in stream.calls] == ["10", "11", "20", "20"]
    assert sorted(p.name for p in index.pods()) == ["a", "b"]  # the bookmark is no pod
    assert watch.cursor.resource_version == "20"


def test_watch_adapter_lists_again_when_its_version_is_gone() -> None:
    from kubernetes.client.exceptions import ApiException

    a, b = make_pod(name="a", uid="u-a"), make_pod(name="b", uid="u-b")
    api = _FakeCoreV1(([a], "10"), ([b], "30"))
    stream = _FakeStream(
        ApiException(status=410, reason="Expired: too old resource version: 10 (25)"),
        [{"type": "MODIFIED", "object": _at(make_pod(name="b", uid="u-b", phase="Failed"), "31")}],
    )
    index = PodIndex()
    _watch(index, api, stream).run(max_rounds=2)
    assert len(api.selectors) == 2
    assert [c["resource_version"] for c in stream.calls] == ["10", "30"]
    pod = index.get("u-b")
    assert [p.name for p in index.pods()] == ["b"] and pod is not None and pod.phase == "Failed"
