"""The pod index and the one Kubernetes adapter, fed with the kubernetes client's models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from exporter.pods import KubernetesPodWatch, PodIndex, pod_from_json
from governance import contract
from tests.support.exporter import grant, make_pod, make_pod_json

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

    def __init__(self, pods: list[client.V1Pod]) -> None:
        self.pods = pods
        self.selectors: list[str] = []

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> client.V1PodList:
        self.selectors.append(kwargs["field_selector"])
        return client.V1PodList(items=self.pods, metadata=client.V1ListMeta(resource_version="41"))


def test_watch_adapter_lists_node_pods_then_applies_events() -> None:
    first = make_pod(name="a", uid="u-a")
    second = make_pod(name="b", uid="u-b")
    api = _FakeCoreV1([first])
    seen: dict[str, Any] = {}

    def stream(func: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        seen.update(kwargs)
        yield {"type": "ADDED", "object": second}
        yield {"type": "DELETED", "object": first}

    index = PodIndex()
    watch = KubernetesPodWatch(
        index=index,
        node_name="gpu-node-1",
        api=api,
        serialize=client.ApiClient().sanitize_for_serialization,
        stream=stream,
    )
    watch.sync_once()
    assert api.selectors == ["spec.nodeName=gpu-node-1"]
    assert seen["field_selector"] == "spec.nodeName=gpu-node-1"
    assert seen["resource_version"] == "41"
    assert index.get("u-a") is None
    pod = index.get("u-b")
    assert pod is not None and pod.name == "b"
