"""Serving: certificate rotation under load, and two webhook processes on one PostgreSQL
racing a burst of admissions against a small quota."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from governance import scopes
from governance.storage import ledger
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.integration


def peer_serial(port: int, cafile: Path | None = None) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return A.serial_of(ssl.DER_cert_to_PEM_cert(der).encode())


def test_certificate_rotation_under_load_drops_no_request(sqlite_url: str, tmp_path: Path) -> None:
    store = Store(sqlite_url)
    A.apply_org(store)
    with A.serve(store, tmp_path, reload_interval_s=0.05) as hook:
        port = int(hook.url.rsplit(":", 1)[1])
        old_serial = A.serial_of(hook.cert.read_bytes())
        assert peer_serial(port) == old_serial
        new_dir = tmp_path / "new"
        new_dir.mkdir()
        new_cert, new_key = A.self_signed(new_dir, common_name="gpupool-webhook-rotated")
        new_serial = A.serial_of(new_cert.read_bytes())
        trust = ssl.create_default_context(cafile=str(hook.cert))
        trust.load_verify_locations(cafile=str(new_cert))
        stop = threading.Event()
        failures: list[str] = []
        counts = {"ok": 0}

        def load(gpu: bool) -> None:
            # A new connection per request: every request is a fresh handshake.
            while not stop.is_set():
                limits = A.gpu(1) if gpu else {"cpu": "1"}
                body = A.review(A.pod(A.container(limits=limits)), dry_run=True)
                try:
                    with httpx.Client(base_url=hook.url, verify=trust, timeout=10) as c:
                        r = c.post("/mutate", json=body)
                    if r.status_code != 200 or not r.json()["response"]["allowed"]:
                        failures.append(r.text)
                    counts["ok"] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # cert-manager style: the key first, then the certificate (a moment where the
        # pair does not match must not break anything), each replaced atomically.
        os.replace(new_key, hook.key)
        time.sleep(0.2)
        os.replace(new_cert, hook.cert)
        deadline = time.monotonic() + 10
        while peer_serial(port) != new_serial:
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    store.close()
    assert failures == []
    assert counts["ok"] > 20
    # one reload, or two when a poll saw the key before the certificate landed mid-load
    assert hook.tls.reloads in (1, 2)


@pytest.mark.postgres
def test_two_webhook_processes_never_admit_past_a_quota(pg_database: str, tmp_path: Path) -> None:
    store = Store(pg_database)
    doc = A.org_document(slices=5)
    doc["departments"][0]["queues"][0]["borrowing_limit"] = {"slices": 0}
    A.apply_org(store, doc)
    with A.webhook_processes(pg_database, tmp_path) as (urls, cert):
        ctx = ssl.create_default_context(cafile=str(cert))
        bodies = [
            A.review(A.pod(A.container(limits=A.gpu(1)), name=f"burst-{i}")) for i in range(24)
        ]

        def post(i: int) -> dict[str, Any]:
            with httpx.Client(verify=ctx, timeout=30) as c:
                r = c.post(f"{urls[i % 2]}/mutate", json=bodies[i])
            assert r.status_code == 200, r.text
            response: dict[str, Any] = r.json()["response"]
            return response

        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(post, range(24)))
    allowed = [a for a in answers if a["allowed"]]
    refused = [a for a in answers if not a["allowed"]]
    assert len(allowed) == 5
    assert {a["status"]["reason"] for a in refused} == {"QueueQuotaExceeded"}
    assert ledger.usage(store)[scopes.parse("queue/ml/train")].slices == 5
    assert len(ledger.list_allocations(store)) == 5
    store.close()
