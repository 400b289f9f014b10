"""The adapter's raw layer (the only code that calls the kubernetes client) against a
loopback HTTP server that answers as the API server does: the real client builds
the requests (paths, query parameters, bodies) and reads the streamed watch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from admission import kube
from admission.leader import LeaderElector, LeaseNotFound
from admission.reconciler import EventType, Gone, WatchFailed
from tests.support.kube import (
    FakeClock,
    FakeLeaseServer,
    bookmark,
    event,
    gone,
    make_pod,
    pod_list,
)

pytestmark = pytest.mark.integration

LEASES = "/apis/coordination.k8s.io/v1/namespaces/gpupool/leases"


class ApiServer:
    """Answers from ``lists`` / ``watches`` (popped per request) and a Lease store."""

    def __init__(self) -> None:
        self.lists: list[dict[str, Any]] = []
        self.watches: list[list[dict[str, Any]] | int] = []
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.leases = FakeLeaseServer()


def _handler(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str) -> None:
            self._send(
                code,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": reason,
                    "message": reason,
                    "code": code,
                },
            )

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            api.requests.append((method, url.path, query))
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                if url.path.startswith(LEASES):
                    name = url.path[len(LEASES) + 1 :]
                    if method == "GET":
                        return self._send(200, api.leases.read(name))
                    if method == "POST":
                        return self._send(201, api.leases.create(body["metadata"]["name"], body))
                    return self._send(200, api.leases.replace(name, body))
            except kube.ApiStatusError as exc:
                return self._status(exc.status, exc.reason)
            if query.get("watch") == ["true"]:
                stream = api.watches.pop(0)
                if isinstance(stream, int):
                    return self._status(stream, "Expired")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # HTTP/1.0: the body ends when the server closes
                for line in stream:
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
                return None
            return self._send(200, api.lists.pop(0))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

    return Handler


@pytest.fixture
def api() -> Iterator[tuple[ApiServer, Any]]:
    state = ApiServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    api_client = client.ApiClient(config)
    try:
        yield state, api_client
    finally:
        api_client.close()
        server.shutdown()
        server.server_close()


def test_list_pages_and_watch_through_the_client(api: tuple[ApiServer, Any]) -> None:
    state, api_client = api
    pod = make_pod("train", resource_version="11", allocation_id="alloc-1")
    state.lists = [pod_list([pod], "10", cont="page2"), pod_list([], "12")]
    state.watches = [[event("ADDED", pod), bookmark("13")], 410]
    raw = kube.ClientPodApi(kube.core_api(api_client), namespace="team-a", label_selector="x=y")
    pods = kube.KubePods(raw, page_size=1, watch_timeout_s=7)

    snap = pods.list_pods()
    assert [p.allocation_id for p in snap.pods] == ["alloc-1"]
    assert snap.resource_version == "12"
    events = list(pods.watch_pods("12"))
    assert [e.type for e in events] == [EventType.ADDED, EventType.BOOKMARK]
    assert events[1].resource_version == "13"
    with pytest.raises(Gone):
        list(pods.watch_pods("13"))

    (m1, path1, q1), (_, _, q2), (_, _, qw), _ = state.requests
    assert (m1, path1) == ("GET", "/api/v1/namespaces/team-a/pods")
    assert q1["limit"] == ["1"] and q1["labelSelector"] == ["x=y"] and "continue" not in q1
    assert q2["continue"] == ["page2"]
    assert qw["watch"] == ["true"] and qw["resourceVersion"] == ["12"]
    assert qw["allowWatchBookmarks"] == ["true"] and qw["timeoutSeconds"] == ["7"]


def test_watch_stream_ending_with_an_error_event(api: tuple[ApiServer, Any]) -> None:
    state, api_client = api
    pod = make_pod("train", resource_version="5", allocation_id="alloc-1")
    state.watches = [[event("MODIFIED", pod), gone("5", "40")]]
    pods = kube.KubePods(kube.ClientPodApi(kube.core_api(api_client)))
    events = list(pods.watch_pods("4"))
    assert events[-1].type is EventType.ERROR and events[-1].code == 410
    assert state.requests[0][1] == "/api/v1/pods"


def test_a_server_error_on_list_is_a_watch_failure(api: tuple[ApiServer, Any]) -> None:
    state, api_client = api
    state.watches = [503]
    pods = kube.KubePods(kube.ClientPodApi(kube.core_api(api_client)))
    with pytest.raises(WatchFailed, match="503"):
        list(pods.watch_pods("4"))


def test_leader_election_through_the_client(api: tuple[ApiServer, Any]) -> None:
    state, api_client = api
    clock = FakeClock()
    leases = kube.KubeLeases(
        kube.ClientLeaseApi(
            kube.coordination_api(api_client), name="gpupool-reconciler", namespace="gpupool"
        ),
        name="gpupool-reconciler",
        namespace="gpupool",
    )
    with pytest.raises(LeaseNotFound):
        leases.get()
    elector = LeaderElector(leases, identity="a", clock=clock)
    assert elector.tick() is True  # created
    clock.advance(2)
    assert elector.tick() is True  # renewed with a PUT at the version it read
    record = leases.get()
    assert (record.holder, record.renew_time) == ("a", clock())
    methods = [m for m, path, _ in state.requests if path.startswith(LEASES)]
    assert methods == ["GET", "GET", "POST", "GET", "PUT", "GET"]
