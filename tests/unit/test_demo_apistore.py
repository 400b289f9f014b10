"""The demo's API stand-in keeps objects as the API server does: one version counter,
optimistic concurrency, consistent lists, and watches that replay, filter, bookmark and
expire as the reconciler and the exporter expect."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client

from demo import models
from demo.apistore import (
    LEASES,
    PODS,
    AlreadyExists,
    BadRequest,
    Conflict,
    NotFound,
    ObjectStore,
    Selector,
)

pytestmark = pytest.mark.unit


def pod(
    name: str, *, namespace: str = "ml", node: str | None = None, app: str = "web"
) -> dict[str, Any]:
    return models.serialise(
        client.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels={"app": app}),
            spec=client.V1PodSpec(
                node_name=node, containers=[client.V1Container(name="main", image="x")]
            ),
        )
    )


def events(store: ObjectStore, **kwargs: Any) -> list[tuple[str, str]]:
    """The watch's events until it has caught up (a short timeout ends it)."""
    kwargs.setdefault("timeout_s", 0.05)
    return [
        (e["type"], e["object"]["metadata"].get("name", e["object"]["metadata"]["resourceVersion"]))
        for e in store.watch(PODS, **kwargs)
    ]


def test_every_write_takes_the_next_version_and_a_stale_update_is_a_conflict() -> None:
    store = ObjectStore()
    first = store.create(PODS, pod("a"))
    second = store.create(PODS, pod("b"))
    assert (
        int(second["metadata"]["resourceVersion"]) == int(first["metadata"]["resourceVersion"]) + 1
    )
    first["spec"]["nodeName"] = "n1"
    updated = store.update(PODS, first)
    assert updated["spec"]["nodeName"] == "n1"
    with pytest.raises(Conflict, match="has been modified"):
        store.update(PODS, first)  # still at the version it was read at
    with pytest.raises(AlreadyExists):
        store.create(PODS, pod("a"))
    with pytest.raises(NotFound):
        store.get(PODS, "ml", "missing")
    items, version = store.list(PODS)
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert version == int(updated["metadata"]["resourceVersion"])


def test_a_watch_resumes_after_the_lists_version_in_order() -> None:
    store = ObjectStore()
    store.create(PODS, pod("a"))
    _items, version = store.list(PODS)
    store.create(PODS, pod("b"))
    store.modify(PODS, "ml", "a", lambda p: p["spec"].update(nodeName="n1"))
    store.delete(PODS, "ml", "b")
    assert events(store, since=version) == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    # without a version: the current objects first, as ADDED
    assert events(store, since=None) == [("ADDED", "a")]


def test_a_node_scoped_watch_sees_a_pod_arrive_when_it_is_bound_and_leave_when_deleted() -> None:
    store = ObjectStore()
    _items, version = store.list(PODS)
    store.create(PODS, pod("a"))
    store.create(PODS, pod("other", node="n2"))
    store.modify(PODS, "ml", "a", lambda p: p["spec"].update(nodeName="n1"))
    store.modify(PODS, "ml", "a", lambda p: p.update(status={"phase": "Running"}))
    store.delete(PODS, "ml", "a")
    on_n1 = Selector.parse("spec.nodeName=n1")
    assert events(store, since=version, selector=on_n1) == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]


def test_label_and_namespace_filters() -> None:
    store = ObjectStore()
    store.create(PODS, pod("a", app="web"))
    store.create(PODS, pod("b", app="batch"))
    store.create(PODS, pod("c", namespace="vision", app="web"))
    names = lambda **kw: [i["metadata"]["name"] for i in store.list(PODS, **kw)[0]]  # noqa: E731
    assert names(selector=Selector.parse(label_selector="app=web")) == ["a", "c"]
    assert names(selector=Selector.parse(label_selector="app!=web")) == ["b"]
    assert names(selector=Selector.parse(label_selector="!app")) == []
    assert names(namespace="vision") == ["c"]
    with pytest.raises(BadRequest, match="field label not supported"):
        Selector.parse("spec.schedulerName=x")


def test_a_version_older_than_the_kept_history_is_gone() -> None:
    store = ObjectStore(history=3)
    _items, version = store.list(PODS)
    for n in range(5):
        store.create(PODS, pod(f"p{n}"))
    (only,) = list(store.watch(PODS, since=version, timeout_s=1))
    assert only["type"] == "ERROR"
    assert only["object"]["code"] == 410 and only["object"]["reason"] == "Expired"


def test_bookmarks_only_for_a_watch_that_asks_and_they_carry_the_current_version() -> None:
    store = ObjectStore(bookmark_s=0.01)
    store.create(LEASES, {"metadata": {"name": "l", "namespace": "ns"}})  # another kind moves on
    _items, version = store.list(PODS)
    marked = list(store.watch(PODS, since=version - 1, timeout_s=0.1, bookmarks=True))
    assert marked and all(e["type"] == "BOOKMARK" for e in marked)
    assert marked[0]["object"]["kind"] == "Pod"
    assert marked[-1]["object"]["metadata"]["resourceVersion"] == str(store.version)
    assert list(store.watch(PODS, since=version, timeout_s=0.1)) == []


def test_closing_the_store_ends_a_waiting_watch() -> None:
    store = ObjectStore()
    seen: list[Any] = []
    since = store.version
    watcher = threading.Thread(
        target=lambda: seen.extend(store.watch(PODS, since=since, timeout_s=60))
    )
    watcher.start()
    store.create(PODS, pod("a"))
    store.close()
    watcher.join(timeout=5)
    assert not watcher.is_alive()
    assert [e["type"] for e in seen] == ["ADDED"]


def test_trimming_keeps_the_newest_objects() -> None:
    store = ObjectStore()
    for n in range(5):
        store.create(PODS, pod(f"p{n}"))
    assert store.trim(PODS, 2) == 3
    assert [i["metadata"]["name"] for i in store.list(PODS)[0]] == ["p3", "p4"]
    assert store.trim(PODS, 2) == 0
