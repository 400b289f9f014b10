"""``gpupool dashboard`` as a process: a configuration applied to a real store, an
exporter served over HTTP, identities from proxy headers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboard.app import OVERVIEW_OUTPUTS
from governance import config
from governance.store import Store
from tests.support import dashboard as sup
from tests.support.org import org_document

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OVERVIEW = list(OVERVIEW_OUTPUTS)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    store_url = f"sqlite:///{tmp_path / 'gpupool.db'}"
    store = Store(store_url)
    org = config.apply(store, org_document(), source="test").org
    store.close()
    exporter = contextlib.ExitStack()
    exporter_url = exporter.enter_context(sup.exporter_server(sup.exposition(sup.make_fleet(org))))
    port = sup.free_port()
    args = [
        "--store",
        store_url,
        "--exporter",
        exporter_url,
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
        exporter.close()


def overview(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in OVERVIEW) + "..",
        "outputs": [{"id": i, "property": p} for i, p in OVERVIEW],
        "inputs": [
            {"id": "range", "property": "value", "value": "1h"},
            {"id": "tick", "property": "n_intervals", "value": 0},
        ],
        "changedPropIds": ["range.value"],
        "state": [],
    }
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
