"""Only the API server may ask the webhook for admissions: with --client-ca, /mutate
answers a caller whose TLS client certificate that CA signed, and nobody else (forged
AdmissionReviews sent without one reserved a department's whole quota before). The
probes' paths stay open. Plus the bounds on what one pod may ask for. Real TLS on
loopback, certificates made with the cryptography package."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from admission.admitter import Settings
from demo.pki import Authority  # a CA that issues client certificates, as a cluster's does
from governance.contract import Reason
from governance.storage import ledger, schema
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.integration

REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)
"""How a client sees its certificate refused: in TLS 1.3 the server checks it after the
client's side of the handshake is done, so the client may learn it on its first read."""


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with A.organised_store(sqlite_url) as s:
        yield s


@pytest.fixture
def pki(tmp_path: Path) -> Authority:
    (tmp_path / "pki").mkdir()
    return Authority(tmp_path / "pki", "apiserver-client-ca")


@pytest.fixture
def hook(store: Store, tmp_path: Path, pki: Authority) -> Iterator[A.Served]:
    with A.serve(store, tmp_path, client_ca=pki.file, reload_interval_s=0.1) as served:
        yield served


def rows(store: Store, table: sa.Table) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_forged_reviews_without_a_client_certificate_reserve_nothing(
    hook: A.Served, store: Store
) -> None:
    big = A.review(A.pod(A.container(limits=A.gpu(4))))
    with hook.client() as client:
        for _ in range(3):
            answer = client.post("/mutate", json=big)
            assert answer.status_code == 401
            assert answer.json()["reason"] == Reason.UNAUTHENTICATED.value
            assert "--client-ca" in answer.json()["message"]
        eve = A.review(A.pod(A.container(limits=A.gpu(1))), user="eve")
        forged_denial = client.post("/mutate", json=eve)
        assert forged_denial.status_code == 401
        # the kubelet's probes and Prometheus present no certificate
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert rows(store, schema.allocations) == 0
    assert rows(store, schema.denials) == 0


def test_the_api_servers_certificate_is_admitted(
    hook: A.Served, store: Store, pki: Authority
) -> None:
    apiserver = pki.client("kube-apiserver")
    with hook.client(client_cert=apiserver) as client:
        answer = hook.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)
    assert answer["allowed"], answer
    assert len(ledger.list_allocations(store)) == 1


def test_a_certificate_of_another_ca_fails_the_handshake(hook: A.Served, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    stranger = Authority(tmp_path / "other", "someone-else").client("kube-apiserver")
    with hook.client(client_cert=stranger) as client, pytest.raises(REFUSED):
        client.post("/mutate", json=A.review(A.pod(A.container(limits=A.gpu(1)))))


def test_a_rotated_client_ca_is_followed(hook: A.Served, pki: Authority, tmp_path: Path) -> None:
    old_client = pki.client("old-apiserver")
    (tmp_path / "new").mkdir()
    rotated = Authority(tmp_path / "new", "apiserver-client-ca-2")
    new_client = rotated.client("new-apiserver")
    reloads = hook.tls.reloads
    pki.file.write_bytes(rotated.file.read_bytes())  # the Secret's new CA, in place
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while hook.tls.reloads == reloads and dt.datetime.now() < deadline:
        hook.tls.check()
    assert hook.tls.reloads > reloads
    body = A.review(A.pod(A.container()))
    with hook.client(client_cert=new_client) as client:
        assert hook.mutate(body, client)["allowed"]
    with hook.client(client_cert=old_client) as client, pytest.raises(REFUSED):
        client.post("/mutate", json=body)


def test_without_a_client_ca_any_caller_is_answered(store: Store, tmp_path: Path) -> None:
    """--allow-unauthenticated: what the tests and trials run."""
    with A.serve(store, tmp_path) as served, served.client() as client:
        assert served.mutate(A.review(A.pod(A.container(limits=A.gpu(1)))), client)["allowed"]


def test_a_pod_with_more_gpu_containers_than_the_limit_is_denied_before_reserving(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(max_gpu_containers=2)
    two = A.pod(*(A.container(f"c{i}", limits=A.gpu(1)) for i in range(2)))
    three = A.pod(*(A.container(f"c{i}", limits=A.gpu(1)) for i in range(3)), name="three")
    with A.serve(store, tmp_path, settings=settings) as served, served.client() as client:
        assert served.mutate(A.review(two), client)["allowed"]
        denied = served.mutate(A.review(three), client)
    assert not denied["allowed"]
    assert denied["status"]["reason"] == Reason.INVALID_REQUEST.value
    message = denied["status"]["message"]
    assert "3 containers ask for GPUs" in message and "2 at most" in message
    assert "--max-gpu-containers" in message and "ana" in message
    assert len(ledger.list_allocations(store)) == 1


def test_a_forged_pod_of_thousands_of_gpu_containers_is_denied_with_a_small_answer(
    store: Store, tmp_path: Path
) -> None:
    huge = A.pod(*(A.container(f"c{i}", limits=A.gpu(1)) for i in range(5000)))
    body = A.review(huge)
    assert len(json.dumps(body)) < 4 * 1024 * 1024
    with A.serve(store, tmp_path) as served, served.client() as client:
        answer = client.post("/mutate", json=body)
    assert answer.status_code == 200 and len(answer.content) < 4096
    response = answer.json()["response"]
    assert response["status"]["reason"] == Reason.INVALID_REQUEST.value
    assert "5000 containers ask for GPUs" in response["status"]["message"]
    assert ledger.list_allocations(store) == []


def test_a_create_larger_than_the_api_server_accepts_is_denied(
    store: Store, tmp_path: Path
) -> None:
    padding = {"example.com/blob": "x" * (3 * 1024 * 1024 + 100 * 1024)}
    huge = A.pod(A.container(limits=A.gpu(1)), annotations=padding)
    with A.serve(store, tmp_path) as served, served.client() as client:
        denied = served.mutate(A.review(huge), client)
        # an UPDATE carries the pod twice: the body limit (4 MiB) is its bound
        blob = {"example.com/blob": "x" * (1900 * 1024)}  # 3.7 MiB with its old version
        same = A.pod(A.container(limits=A.gpu(1)), annotations=blob)
        updated = served.mutate(A.review(same, operation="UPDATE", old=same), client)
    assert denied["status"]["reason"] == Reason.INVALID_REQUEST.value
    assert (
        "larger than the 3145728-byte request the Kubernetes API server accepts"
        in (denied["status"]["message"])
    )
    assert updated["allowed"]
    assert ledger.list_allocations(store) == []
