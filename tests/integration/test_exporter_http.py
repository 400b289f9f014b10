"""The exporter's HTTP server against slow clients, on loopback: a fixed number of
threads whatever the clients do, stalled requests cut at the read deadline, and a
scrape answered once they are."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from exporter.server import MetricsServer

pytestmark = pytest.mark.integration

THREADS = 8
BACKLOG = 16
READ_TIMEOUT_S = 1.0
STALLED = 200


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"up 1\n"]


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_clients_hold_no_more_threads_than_the_pool_and_are_cut() -> None:
    before = threading.active_count()
    server = MetricsServer(
        _app, address="127.0.0.1", threads=THREADS, backlog=BACKLOG, read_timeout_s=READ_TIMEOUT_S
    )
    server.start()
    stalled: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(STALLED):  # a request line and half a header, then silence
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Ag")
            stalled.append(sock)
        time.sleep(0.3)
        # the pool and the accept loop, never one thread per connection
        assert threading.active_count() <= before + THREADS + 1
        # every stalled connection is closed: refused at once when the queue is full,
        # else cut at the read deadline; (threads + queue) / threads rounds at most
        rounds = (THREADS + BACKLOG) / THREADS + 1
        deadline = started + rounds * READ_TIMEOUT_S + 3.0
        still_open = [s for s in stalled if not _closed_by_server(s, deadline)]
        assert still_open == []
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.read() == b"up 1\n"
        assert threading.active_count() <= before + THREADS + 1
    finally:
        for sock in stalled:
            sock.close()
        server.stop()


def test_a_byte_at_a_time_cannot_outlast_the_read_deadline() -> None:
    server = MetricsServer(_app, address="127.0.0.1", threads=2, read_timeout_s=READ_TIMEOUT_S)
    server.start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        started = time.monotonic()
        closed = False
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        for byte in request:  # one byte every 0.1 s: each read is quick, the whole is not
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if _closed_by_server(sock, time.monotonic() + 0.001):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < READ_TIMEOUT_S + 1.5
        sock.close()
    finally:
        server.stop()
