"""Builders for webhook tests: pods and AdmissionReviews made with the `kubernetes`
client's own models (serialised as the API server sends them), an organisation with a
pool per backend, a self-signed certificate, and a webhook served over real HTTPS.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s

from admission.admitter import Settings
from admission.review import Response, render
from admission.server import Limits, Webhook, build, uvicorn_config
from admission.tls import ReloadingContext
from governance.storage import revisions
from governance.storage.store import Store
from tests.support.kube import canonical_resources

_API = k8s.ApiClient()


def serialize(obj: Any) -> Any:
    """A kubernetes model as the API server sends it (camelCase JSON, no nulls)."""
    return _API.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


# -- pods ------------------------------------------------------------------------------


def container(
    name: str = "main",
    *,
    limits: Mapping[str, str] | None = None,
    requests: Mapping[str, str] | None = None,
    restart_policy: str | None = None,
    env: Mapping[str, str] | None = None,
    image: str = "registry.example/app:1",
) -> k8s.V1Container:
    resources = None
    if limits is not None or requests is not None:
        resources = k8s.V1ResourceRequirements(
            limits=dict(limits) if limits else None, requests=dict(requests) if requests else None
        )
    return k8s.V1Container(
        name=name,
        image=image,
        resources=resources,
        restart_policy=restart_policy,
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()] or None,
    )


def gpu(count: int | str = 1, **extra: str) -> dict[str, str]:
    """Limits asking for ``count`` nvidia.com/gpu plus HAMi extras (gpumem=..., gpucores=...)."""
    limits = {"nvidia.com/gpu": str(count), "cpu": "1", "memory": "1Gi"}
    for key, value in extra.items():
        limits[f"nvidia.com/{key.replace('_', '-')}"] = value
    return limits


def pod(
    *containers: k8s.V1Container,
    namespace: str = "ml",
    name: str | None = "trainer-0",
    generate_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    service_account: str | None = None,
    init_containers: list[k8s.V1Container] | None = None,
    owner_kind: str | None = None,
    restart_policy: str = "Never",
    node_selector: Mapping[str, str] | None = None,
) -> k8s.V1Pod:
    owners = None
    if owner_kind is not None:
        owners = [
            k8s.V1OwnerReference(
                api_version="apps/v1" if owner_kind != "Job" else "batch/v1",
                kind=owner_kind,
                name=(generate_name or name or "owner").rstrip("-"),
                uid=str(uuid.uuid4()),
                controller=True,
                block_owner_deletion=True,
            )
        ]
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=name,
            generate_name=generate_name,
            namespace=namespace,
            labels=dict(labels) if labels else None,
            annotations=dict(annotations) if annotations else None,
            owner_references=owners,
        ),
        spec=k8s.V1PodSpec(
            containers=list(containers) or [container()],
            init_containers=init_containers,
            service_account_name=service_account,
            restart_policy=restart_policy,
            node_selector=dict(node_selector) if node_selector else None,
        ),
    )


def deployment_pod(*containers: k8s.V1Container, **kwargs: Any) -> k8s.V1Pod:
    """A pod as a ReplicaSet creates it: generateName, no name, a controller owner."""
    kwargs.setdefault("generate_name", "trainer-7d9f8c6b5-")
    kwargs.setdefault("service_account", "trainer")
    kwargs.setdefault("restart_policy", "Always")
    return pod(*containers, name=None, owner_kind="ReplicaSet", **kwargs)


REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"


def review(
    obj: k8s.V1Pod | Mapping[str, Any] | None,
    *,
    operation: str = "CREATE",
    user: str = "ana",
    groups: tuple[str, ...] = ("ml-team", "system:authenticated"),
    uid: str | None = None,
    dry_run: bool = False,
    old: k8s.V1Pod | Mapping[str, Any] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview request for a pod, as the API server sends it: every resource
    quantity in canonical form (``3000`` as ``3k``), as kube-apiserver writes it."""
    body = serialize(obj) if isinstance(obj, k8s.V1Pod) else copy.deepcopy(obj)
    old_body = serialize(old) if isinstance(old, k8s.V1Pod) else copy.deepcopy(old)
    for pod_body in (body, old_body):
        if isinstance(pod_body, dict):
            canonical_resources(pod_body)
    ns = namespace or ((body or old_body or {}).get("metadata", {}).get("namespace")) or "ml"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": (body or {}).get("metadata", {}).get("name", ""),
            "namespace": ns,
            "operation": operation,
            "userInfo": serialize(k8s.V1UserInfo(username=user, groups=list(groups))),
            "object": body,
            "oldObject": old_body,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def json_bytes(body: Mapping[str, Any]) -> bytes:
    """An AdmissionReview as the bytes the API server posts."""
    import json

    return json.dumps(body).encode()


def response_of(body: Mapping[str, Any], answer: Response) -> dict[str, Any]:
    """The ``response`` of the AdmissionReview that carries ``answer`` (what an
    :class:`~admission.admitter.Admitter` decided without HTTP)."""
    import json

    rendered: dict[str, Any] = json.loads(render(body["request"]["uid"], answer))
    response: dict[str, Any] = rendered["response"]
    return response


def apply_patch(obj: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the response's JSONPatch to ``obj`` with the jsonpatch library."""
    import base64
    import json

    raw = response.get("patch")
    if not raw:
        return copy.deepcopy(dict(obj))
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(raw))
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(dict(obj)), ops)
    return result


def validate_pod(obj: Mapping[str, Any]) -> None:
    """Validate a Pod against the Kubernetes schema (strict: unknown fields fail)."""
    import kubernetes_validate

    kubernetes_validate.validate(dict(obj), "1.30", strict=True)


# -- the organisation ------------------------------------------------------------------

A100_MIB = 81920
H100_MIB = 81559


def org_document(**quota_overrides: Any) -> dict[str, Any]:
    """An organisation with one pool per backend.

    Department ``ml`` (namespaces ``ml``, ``ml-*``): queue ``train`` on the HAMi A100
    pool (default SKU ``small``; nominal 8 slices, 4 borrowable), queue ``serve``.
    Department ``lab`` (namespace ``lab``): one queue per backend, named after it.
    """
    pools = [
        {
            "name": "a100",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "hami",
            "gpus": 16,
            "memory_per_gpu": A100_MIB,
            "node_selector": {"gpupool.io/pool": "a100"},
        },
        {
            "name": "whole",
            "vendor": "nvidia",
            "model": "H100-80GB",
            "backend": "nvidia-whole",
            "gpus": 8,
            "memory_per_gpu": H100_MIB,
        },
        {
            "name": "mps",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "nvidia-mps",
            "gpus": 8,
            "memory_per_gpu": A100_MIB,
            "backend_options": {"replicas": 4},
        },
        {
            "name": "ts",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "nvidia-timeslice",
            "gpus": 8,
            "memory_per_gpu": A100_MIB,
            "backend_options": {"replicas": 4},
        },
        {
            "name": "mig",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "nvidia-mig",
            "gpus": 8,
            "memory_per_gpu": A100_MIB,
        },
        {
            "name": "kai",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "kai",
            "gpus": 8,
            "memory_per_gpu": A100_MIB,
        },
        {
            "name": "ascend",
            "vendor": "huawei",
            "model": "Ascend910B3",
            "backend": "ascend",
            "gpus": 8,
            "memory_per_gpu": 65536,
        },
        {
            "name": "mlu",
            "vendor": "cambricon",
            "model": "MLU370",
            "backend": "cambricon",
            "gpus": 8,
            "memory_per_gpu": 49152,
        },
    ]
    skus = [
        {
            "name": "small",
            "compute": 25,
            "memory": "20Gi",
            "pools": ["a100", "mps", "ts", "mig", "kai"],
        },
        {"name": "large", "compute": 50, "memory": "40Gi", "pools": ["a100"]},
        {"name": "h100", "compute": 100, "memory_pct": 100, "pools": ["whole"]},
        {"name": "npu-half", "compute": 50, "memory": "32Gi", "pools": ["ascend"]},
        {"name": "mlu-quarter", "compute": 25, "memory": "12Gi", "pools": ["mlu"]},
    ]
    train_quota = {"slices": 8, "memory": "160Gi", "compute": 200}
    train_quota.update(quota_overrides)
    lab_queues = [
        {
            "name": p["name"],
            "pool": p["name"],
            "default_sku": {"whole": "h100", "ascend": "npu-half", "mlu": "mlu-quarter"}.get(
                str(p["name"]), "small"
            ),
        }
        for p in pools
    ]
    return {
        "apiVersion": "gpupool.io/v1",
        "kind": "Organisation",
        "pools": pools,
        "skus": skus,
        "departments": [
            {
                "name": "ml",
                "namespaces": ["ml", "ml-*"],
                "default_queue": "train",
                "quota": {"slices": 16, "memory": "400Gi", "compute": 800},
                "queues": [
                    {
                        "name": "train",
                        "pool": "a100",
                        "default_sku": "small",
                        "quota": train_quota,
                        "borrowing_limit": {"slices": 4},
                    },
                    {
                        "name": "serve",
                        "pool": "a100",
                        "default_sku": "small",
                        "quota": {"slices": 4},
                    },
                ],
            },
            {"name": "lab", "namespaces": ["lab"], "default_queue": "a100", "queues": lab_queues},
            {
                "name": "vision",
                "namespaces": ["vision"],
                "default_queue": "infer",
                "queues": [{"name": "infer", "pool": "a100", "default_sku": "small"}],
            },
        ],
        "role_bindings": [
            {
                "role": "member",
                "department": "ml",
                "subjects": ["group:ml-team", "system:serviceaccount:ml:trainer"],
            },
            {"role": "member", "department": "ml", "subjects": ["user:bob"], "queues": ["serve"]},
            {"role": "dept-admin", "department": "ml", "subjects": ["user:alice"]},
            {"role": "member", "department": "lab", "subjects": ["group:lab-team"]},
            {"role": "member", "department": "vision", "subjects": ["group:vision-team"]},
        ],
    }


def apply_org(store: Store, document: Mapping[str, Any] | None = None) -> None:

    revisions.apply(store, document or org_document(), source="test")


@contextmanager
def organised_store(url: str, document: Mapping[str, Any] | None = None) -> Iterator[Store]:
    """A store at ``url`` with the organisation applied, closed afterwards."""
    store = Store(url)
    try:
        apply_org(store, document)
        yield store
    finally:
        store.close()


# -- TLS -------------------------------------------------------------------------------


def self_signed(
    directory: Path, *, name: str = "cert", common_name: str = "gpupool-webhook"
) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- a served webhook ------------------------------------------------------------------


@dataclass
class Served:
    url: str
    hook: Webhook
    tls: ReloadingContext
    cert: Path
    key: Path

    def client(
        self,
        *,
        timeout: float = 10,
        client_cert: tuple[Path, Path] | None = None,
        **kwargs: Any,
    ) -> httpx.Client:
        """An HTTPS client trusting the webhook's certificate; ``client_cert``: the
        (certificate, key) it presents, as the API server does."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        return httpx.Client(base_url=self.url, verify=ctx, timeout=timeout, **kwargs)

    def mutate(self, body: Mapping[str, Any], client: httpx.Client | None = None) -> dict[str, Any]:
        """POST an AdmissionReview; return its ``response``."""
        if client is None:
            with self.client() as c:
                r = c.post("/mutate", json=body)
        else:
            r = client.post("/mutate", json=body)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == body["request"]["uid"]
        response: dict[str, Any] = answer["response"]
        return response


@contextmanager
def serve(
    store: Store,
    tmp_path: Path,
    *,
    settings: Settings | None = None,
    reload_interval_s: float = 0.2,
    limits: Limits | None = None,
    client_ca: Path | None = None,
    **build_kwargs: Any,
) -> Iterator[Served]:
    """The webhook over HTTPS on a loopback port, in a thread, for the duration.
    ``client_ca``: /mutate requires a client certificate that it signed."""
    cert, key = self_signed(tmp_path)
    hook = build(
        store,
        settings=settings,
        limits=limits,
        require_client_cert=client_ca is not None,
        **build_kwargs,
    )
    tls = ReloadingContext(cert, key, client_ca=client_ca)
    tls.start(reload_interval_s)
    port = free_port()
    config = uvicorn_config(hook.app, tls, host="127.0.0.1", port=port, limits=limits)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the webhook did not start")
        time.sleep(0.02)
    try:
        yield Served(url=f"https://127.0.0.1:{port}", hook=hook, tls=tls, cert=cert, key=key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        tls.stop()


def wait_ready(url: str, cert: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until ``url``'s /readyz answers 200 (the process's stderr if it exits first)."""
    deadline = time.monotonic() + 30
    ctx = ssl.create_default_context(cafile=str(cert))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            if httpx.get(f"{url}/readyz", verify=ctx, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("webhook did not become ready")


@contextmanager
def webhook_processes(
    store_url: str, tmp_path: Path, count: int = 2
) -> Iterator[tuple[list[str], Path]]:
    """``count`` `gpupool webhook` processes on one store, ready; yields their URLs and
    the certificate to trust. They are stopped (SIGTERM) on exit."""
    cert, key = self_signed(tmp_path)
    ports = [free_port() for _ in range(count)]
    procs = [start_webhook_process(store_url, cert, key, p, stderr=subprocess.PIPE) for p in ports]
    try:
        urls = [f"https://127.0.0.1:{p}" for p in ports]
        for url, proc in zip(urls, procs, strict=True):
            wait_ready(url, cert, proc)
        yield urls, cert
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)
            if proc.stderr is not None:
                proc.stderr.close()


def start_webhook_process(
    store_url: str, cert: Path, key: Path, port: int, *, stderr: int | None = None
) -> subprocess.Popen[bytes]:
    """`gpupool webhook` in a process of its own, on 127.0.0.1:``port``."""
    code = "from admission.cli import webhook; webhook()"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--store",
            store_url,
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--allow-unauthenticated",
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL if stderr is not None else None,
        stderr=stderr,
    )
