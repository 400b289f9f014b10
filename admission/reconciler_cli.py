"""``gpupool reconciler``: run the pod reconciler (see docs/reconciler.md).

Besides the reconciling loop, it serves ``--host``:``--health-port`` with ``/healthz``
(the process answers), ``/readyz`` (the governance store answers) and ``/metrics``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import click
from prometheus_client import CollectorRegistry, make_wsgi_app

from admission import kube
from admission.leader import LeaderElector
from admission.reconciler import Metrics, Service
from governance import cli as gcli
from governance.errors import StoreError
from governance.storage.store import Store, utcnow

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def health_app(registry: CollectorRegistry, store: Store) -> WsgiApp:
    """/healthz, /readyz (the store answers) and /metrics; 404 for anything else."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            rendered: Iterable[bytes] = metrics(environ, start_response)
            return rendered
        status, body = "404 Not Found", b"not found: /healthz, /readyz or /metrics\n"
        if path == "/healthz":
            status, body = "200 OK", b"ok\n"
        elif path == "/readyz":
            try:
                store.ping()
                status, body = "200 OK", b"ready\n"
            except StoreError as exc:
                status, body = "503 Service Unavailable", f"not ready: {exc}\n".encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


class _HealthServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


def serve_health(app: WsgiApp, host: str, port: int) -> WSGIServer:
    """Serve ``app`` from a daemon thread; CannotServe (exit 4) when the port is taken."""
    try:
        server = _HealthServer((host, port), _Quiet)
    except OSError as exc:
        raise gcli.cannot_serve(host, port, exc) from exc
    server.set_app(app)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server


def default_identity() -> str:
    """Hostname (the pod name in a cluster) plus a random suffix: a restarted process
    is a new candidate, never mistaken for the one it replaces."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@click.command("reconciler")
@gcli.store_option()
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig file; default: in-cluster config, else $KUBECONFIG or ~/.kube/config.",
)
@click.option("--context", default=None, help="Kubeconfig context (default: the current one).")
@click.option(
    "--namespace",
    default=None,
    help="Watch pods of this namespace only (default: every namespace).",
)
@click.option(
    "--label-selector",
    default="",
    help="Watch only pods matching this selector (default: every pod).",
)
@click.option("--lease-name", default="gpupool-reconciler", show_default=True)
@click.option(
    "--lease-namespace",
    default=None,
    help="Namespace of the Lease (default: this pod's namespace, else 'default').",
)
@click.option("--identity", default=None, help="Leader election identity (default: host_random).")
@click.option(
    "--lease-duration",
    type=click.IntRange(min=2),
    default=15,
    show_default=True,
    help="Seconds a Lease holder is trusted without renewing.",
)
@click.option(
    "--renew-deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a leader keeps acting while renewals fail.",
)
@click.option(
    "--retry-period",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds between election attempts and renewals.",
)
@click.option(
    "--expire-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds between passes that expire stale reservations.",
)
@click.option(
    "--watch-timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Seconds after which the API server ends each watch (it is resumed).",
)
@gcli.host_option(help="Address of the health and metrics server.")
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65535),
    default=9103,
    show_default=True,
    help="Port of /healthz, /readyz and /metrics (0: no such server).",
)
@click.option("--metrics-host", default=None, hidden=True, help="Old spelling of --host.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    hidden=True,
    help="Old spelling of --health-port.",
)
@gcli.log_level_option()
def reconciler(
    store_url: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    label_selector: str,
    lease_name: str,
    lease_namespace: str | None,
    identity: str | None,
    lease_duration: int,
    renew_deadline: float,
    retry_period: float,
    expire_interval: float,
    watch_timeout: int,
    host: str,
    health_port: int,
    metrics_host: str | None,
    metrics_port: int | None,
    log_level: str,
) -> None:
    """Bind and release ledger entries as GPU pods come and go; expire reservations
    whose pod never appeared. One replica acts at a time (Lease leader election)."""
    gcli.configure_logging(log_level)
    host = metrics_host or host
    health_port = health_port if metrics_port is None else metrics_port
    try:
        store = Store(store_url)
        store.ping()
    except StoreError as exc:
        raise gcli.failure(exc) from exc
    try:
        client = kube.api_client(kubeconfig, context)
    except Exception as exc:
        raise gcli.BadInput(
            f"no Kubernetes configuration: {exc}. Run in a pod with a service account, "
            "or pass --kubeconfig."
        ) from exc
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    lease_ns = lease_namespace or kube.own_namespace()
    raw_lease = kube.ClientLeaseApi(
        kube.coordination_api(client), name=lease_name, namespace=lease_ns
    )
    try:
        elector = LeaderElector(
            kube.KubeLeases(raw_lease, name=lease_name, namespace=lease_ns),
            identity=identity or default_identity(),
            clock=utcnow,
            lease_duration_s=lease_duration,
            renew_deadline_s=renew_deadline,
            retry_period_s=retry_period,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    source = kube.KubePods(
        kube.ClientPodApi(
            kube.core_api(client), namespace=namespace, label_selector=label_selector
        ),
        watch_timeout_s=watch_timeout,
    )
    service = Service(
        store=store,
        source=source,
        elector=elector,
        metrics=metrics,
        namespace=namespace,
        expire_interval_s=expire_interval,
    )
    if health_port:
        serve_health(health_app(registry, store), host, health_port)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("gpupool.reconciler").info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    logging.getLogger("gpupool.reconciler").info(
        "reconciler %s: store %s, pods in %s, Lease %s/%s",
        elector.identity,
        store.safe_url,
        namespace or "every namespace",
        lease_ns,
        lease_name,
    )
    service.run(stop)
    store.close()
