"""``gpupool dashboard`` as production serves it (gunicorn), from outside: identity
headers believed only from the trusted proxy's address, slow clients bounded in
threads and time, a taken port refused with exit 4."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from governance.storage import revisions
from governance.storage.store import Store
from tests.support import dashboard as sup
from tests.support.org import org_document

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
THREADS = 4
READ_TIMEOUT_S = 1.0


@pytest.fixture
def exporter_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    store_url = f"sqlite:///{tmp_path / 'gpupool.db'}"
    store = Store(store_url)
    org = revisions.apply(store, org_document(), source="test").org
    store.close()
    with sup.exporter_server(sup.exposition(sup.make_fleet(org))) as url:
        yield store_url, url


@pytest.fixture
def console(exporter_url: tuple[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    store_url, exporter = exporter_url
    with sup.console_process(
        *("--store", store_url, "--exporter", exporter, "--trust-proxy-headers"),
        *("--trusted-proxy", "127.0.0.1/32"),
        *("--workers", "1", "--threads", str(THREADS), "--read-timeout", str(READ_TIMEOUT_S)),
        *("--log-level", "warning"),
    ) as running:
        yield running


def request_from(source: str, port: int, headers: dict[str, str]) -> int:
    """GET / with ``headers``, the connection made from ``source`` (a loopback address)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"http://127.0.0.1:{port}/", headers=headers).status_code


def test_identity_headers_spoofed_from_an_untrusted_address_get_401(
    console: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = console
    port = int(url.rsplit(":", 1)[1])
    eve = {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "platform"}
    assert request_from("127.0.0.2", port, eve) == 401  # not the proxy: refused
    assert request_from("127.0.0.1", port, eve) == 200  # the proxy's address
    assert request_from("127.0.0.1", port, {}) == 401  # the proxy, but no identity
    reply = httpx.get(f"{url}/metrics", headers=eve)
    assert reply.status_code == 404 and "<html" not in reply.text.lower()
    page = httpx.get(f"{url}/", headers=eve)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def threads_of(pid: int) -> int:
    total = len(os.listdir(f"/proc/{pid}/task"))
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(len(os.listdir(f"/proc/{child}/task")) for child in children)


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(4096) == b"" or True  # an answer (400/408) or the close
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_hold_a_bounded_number_of_threads_and_are_cut(
    console: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = console
    port = int(url.rsplit(":", 1)[1])
    httpx.get(f"{url}/healthz")
    before = threads_of(process.pid)
    stalled: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(40):  # a request line and part of a header, then silence
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: console\r\nX-Forwarded-Us")
            stalled.append(sock)
        time.sleep(0.5)
        during = threads_of(process.pid)
        assert during <= before + THREADS, (before, during)
        # each stalled request is cut at the read deadline, THREADS at a time
        deadline = started + (len(stalled) / THREADS + 1) * READ_TIMEOUT_S + 5
        assert all(closed_by_server(s, deadline) for s in stalled)
        assert time.monotonic() - started < (len(stalled) / THREADS + 1) * READ_TIMEOUT_S + 5
        headers = {"X-Forwarded-User": "root"}
        assert httpx.get(f"{url}/", headers=headers, timeout=10).status_code == 200
        assert threads_of(process.pid) <= before + THREADS
    finally:
        for sock in stalled:
            sock.close()


def test_a_taken_port_exits_4_before_anything_starts(exporter_url: tuple[str, str]) -> None:
    store_url, exporter = exporter_url
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                sup.CONSOLE_CODE,
                *("--store", store_url, "--exporter", exporter, "--dev-user", "me"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert result.returncode == 4, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
