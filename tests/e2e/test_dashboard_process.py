"""``gpupool dashboard`` as a process: a configuration applied to a real store, an
exporter served over HTTP, identities from proxy headers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from governance import config
from governance.store import Store
from tests.support import dashboard as sup
from tests.support.org import org_document

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OVERVIEW = [
    ("ov-status", "children"),
    ("ov-kpis", "children"),
    ("ov-capacity", "figure"),
    ("ov-history", "figure"),
    ("ov-departments", "figure"),
    ("ov-admissions", "figure"),
    ("ov-department-table", "data"),
    ("ov-waste-table", "data"),
]


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    store_url = f"sqlite:///{tmp_path / 'gpupool.db'}"
    store = Store(store_url)
    org = config.apply(store, org_document(), source="test").org
    store.close()
    text = sup.exposition(sup.make_fleet(org)).encode()

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    port = sup.free_port()
    args = [
        "--store",
        store_url,
        "--exporter",
        f"http://127.0.0.1:{exporter.server_address[1]}",
        "--trust-proxy-headers",
        "--port",
        str(port),
        "--scrape-interval",
        "5",
    ]
    code = "import sys; from dashboard.cli import dashboard; dashboard(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                out = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"the console exited: {out}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the console did not answer /healthz within 30 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()
        exporter.shutdown()
        exporter.server_close()


def overview(url: str, headers: dict[str, str]) -> httpx.Response:
    body = sup.callback_body(OVERVIEW, [("range", "value", "1h"), ("tick", "n_intervals", 0)])
    return httpx.post(f"{url}/_dash-update-component", json=body, headers=headers, timeout=30)


def test_the_console_serves_the_applied_organisation_per_viewer(console: str) -> None:
    assert httpx.get(f"{console}/").status_code == 401
    page = httpx.get(f"{console}/", headers={"X-Forwarded-User": "root"})
    assert page.status_code == 200 and "gpupool console" in page.text
    admin = overview(console, {"X-Forwarded-User": "root"})
    assert admin.status_code == 200
    assert "Pool capacity" in admin.text and "8 GPUs" in admin.text
    assert '"department": "ml"' in admin.text.replace('":"', '": "')
    member = overview(console, {"X-Forwarded-User": "ana", "X-Forwarded-Groups": "ml-team"})
    assert "Pool capacity" not in member.text and "Slice utilisation" in member.text
    stranger = overview(console, {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "other"})
    assert "No department to show" in stranger.text and "ml-" not in stranger.text
