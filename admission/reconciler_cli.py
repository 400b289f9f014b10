"""``gpupool reconciler``: run the pod reconciler (see docs/reconciler.md)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import uuid
from types import FrameType

import click

from admission import kube
from admission.leader import LeaderElector
from admission.reconciler import Metrics, Service
from governance.errors import StoreError
from governance.store import Store, utcnow


def default_identity() -> str:
    """Hostname (the pod name in a cluster) plus a random suffix: a restarted process
    is a new candidate, never mistaken for the one it replaces."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@click.command("reconciler")
@click.option("--store", "store_url", envvar="GPUPOOL_STORE", help="Store URL (or a SQLite path).")
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
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=9103,
    show_default=True,
    help="Port of /metrics (0: no metrics server).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
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
    metrics_host: str,
    metrics_port: int,
    log_level: str,
) -> None:
    """Bind and release ledger entries as GPU pods come and go; expire reservations
    whose pod never appeared. One replica acts at a time (Lease leader election)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        store = Store(store_url)
        store.ping()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        client = kube.api_client(kubeconfig, context)
    except Exception as exc:
        raise click.ClickException(
            f"no Kubernetes configuration: {exc}. Run in a pod with a service account, "
            "or pass --kubeconfig."
        ) from exc
    from prometheus_client import CollectorRegistry, start_http_server

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
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=registry)
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
