"""Slow and greedy clients over real TLS on loopback: a client that stalls in its
headers or its body is cut off at the read timeouts, oversized headers are refused, the
bytes of request bodies held at once stay under their bound, connections beyond the
limit get 503, and the webhook keeps answering everyone else meanwhile. Counts and
timeouts are small so that each test ends within seconds."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from admission.server import Limits
from governance.contract import Reason
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.integration

LIMITS = Limits(
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    max_header_bytes=8 * 1024,
    max_buffered_bytes=1024 * 1024,
    max_connections=40,
)
STALLED = 30
READ_S = 10.0
"""Longest wait for the server to answer or close (a bound for a broken server)."""


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with A.organised_store(sqlite_url) as s:
        yield s


@pytest.fixture
def hook(store: Store, tmp_path: Path) -> Iterator[A.Served]:
    with A.serve(store, tmp_path, limits=LIMITS) as served:
        yield served


def tls_socket(hook: A.Served) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(hook.cert))
    port = int(hook.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=READ_S)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def answer_of(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def one_response(sock: ssl.SSLSocket) -> bytes:
    """One response on a connection kept open: its head, then Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def post_head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % length
    )


def released(hook: A.Served) -> bool:
    """Whether the bodies held for closed connections were let go (the server learns
    of a close a moment after the client does)."""
    deadline = time.monotonic() + READ_S
    while hook.hook.app.buffered_bytes and time.monotonic() < deadline:
        time.sleep(0.02)
    return hook.hook.app.buffered_bytes == 0


def assert_still_serving(hook: A.Served) -> None:
    with hook.client(timeout=2.0) as client:
        assert client.get("/healthz").status_code == 200
        assert hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)["allowed"]


def test_clients_that_stall_in_their_headers_are_cut_off(hook: A.Served) -> None:
    with ExitStack() as stack:
        socks = [stack.enter_context(tls_socket(hook)) for _ in range(STALLED)]
        for i, sock in enumerate(socks):
            if i % 2:  # half send part of a request line and headers, half nothing
                sock.sendall(b"POST /mutate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-")
        assert_still_serving(hook)
        started = time.monotonic()
        answers = [answer_of(sock) for sock in socks]
        waited = time.monotonic() - started
    assert [status_of(a) for a in answers] == [408] * STALLED
    assert waited < READ_S  # closed by the server, not by the client's own timeout


def test_a_keep_alive_connection_stalling_in_its_next_request_is_cut_off(hook: A.Served) -> None:
    body = json.dumps(A.review(A.pod(A.container()))).encode()
    with tls_socket(hook) as sock:
        sock.sendall(post_head(len(body)) + body)
        assert status_of(one_response(sock)) == 200
        sock.sendall(b"POST /mutate HTTP/1.1\r\nhost: 127")
        assert status_of(answer_of(sock)) == 408


def test_oversized_headers_are_refused(hook: A.Served) -> None:
    padding = b"".join(b"x-pad-%d: %s\r\n" % (i, b"a" * 200) for i in range(60))
    with tls_socket(hook) as sock:
        sock.sendall(post_head(2, padding) + b"{}")
        assert status_of(answer_of(sock)) == 431


def test_clients_that_stall_in_their_body_get_408_and_are_closed(hook: A.Served) -> None:
    with ExitStack() as stack:
        socks = [stack.enter_context(tls_socket(hook)) for _ in range(10)]
        for sock in socks:
            sock.sendall(post_head(50_000) + b"{" + b" " * 1000)
        answers = [answer_of(sock) for sock in socks]
    assert {status_of(a) for a in answers} == {408}
    assert Reason.REQUEST_TIMEOUT.value.encode() in answers[0]
    assert released(hook)  # nothing is held once they are gone


def test_bodies_held_at_once_stay_under_their_bound(hook: A.Served) -> None:
    """Each client declares 300 KiB and stalls: three fit in the 1 MiB bound, the rest
    are refused at once with 503 Overloaded, before anything of theirs is read."""
    size = 300 * 1024
    with ExitStack() as stack:
        socks = [stack.enter_context(tls_socket(hook)) for _ in range(8)]
        for sock in socks:
            sock.sendall(post_head(size) + b" " * 4096)
        answers = [answer_of(sock) for sock in socks]
    statuses = sorted(status_of(a) for a in answers)
    assert statuses == [408] * 3 + [503] * 5
    assert any(Reason.OVERLOADED.value.encode() in a for a in answers)
    app = hook.hook.app
    assert app.buffered_peak_bytes <= LIMITS.max_buffered_bytes
    assert app.buffered_peak_bytes >= 3 * size and released(hook)
    assert_still_serving(hook)


def test_requests_beyond_the_connection_limit_get_503(hook: A.Served) -> None:
    with ExitStack() as stack:
        idle = [stack.enter_context(tls_socket(hook)) for _ in range(LIMITS.max_connections)]
        for sock in idle:  # each a connection the server has seen (its handshake done)
            sock.sendall(b" ")
        time.sleep(0.1)
        with hook.client(timeout=2.0) as client:
            answer = client.get("/healthz")
        assert answer.status_code == 503
    # once they are gone (closed by the header timeout at the latest) all is well again
    deadline = time.monotonic() + READ_S
    while time.monotonic() < deadline:
        with hook.client(timeout=2.0) as client:
            if client.get("/healthz").status_code == 200:
                break
        time.sleep(0.1)
    assert_still_serving(hook)
