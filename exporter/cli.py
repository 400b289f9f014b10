"""``gpupool exporter``: wire the backend, the attribution edges, sampler and server."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click

from exporter.backends import BACKENDS
from exporter.pods import PodSource
from governance import cli as gcli
from governance import contract

log = logging.getLogger("gpupool.exporter")


@click.command("exporter")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="nvml",
    show_default=True,
    help="Where GPU readings come from.",
)
@gcli.port_option(
    contract.DEFAULT_EXPORTER_PORT, help="Port of the /metrics endpoint (0: pick a free one)."
)
@gcli.host_option()
@click.option("--address", default=None, hidden=True, help="Old spelling of --host.")
@click.option(
    "--interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between two samples (at least 1).",
)
@click.option(
    "--simulate",
    "simulate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Simulation YAML for --backend simulated (default: the bundled one).",
)
@click.option(
    "--hostname",
    default=None,
    help="The Hostname label (default: $NODE_NAME, else this host's name).",
)
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    default=None,
    help="Node whose pods to watch for attribution ($NODE_NAME).",
)
@click.option(
    "--kubernetes/--no-kubernetes",
    "use_kubernetes",
    default=None,
    help="Watch the node's pods (default: with --backend nvml, when --node-name is set). "
    "With --backend simulated the pods then come from the API server, and the "
    "simulation file only runs their processes on GPUs.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Kubeconfig of the pod watch (default: in-cluster, else $KUBECONFIG or ~/.kube/config).",
)
@click.option(
    "--pod-resources-socket",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
    show_default=True,
    help="Kubelet PodResources socket; used when present and grpcio is installed.",
)
@click.option(
    "--proc-root",
    type=click.Path(path_type=Path),
    default=Path("/proc"),
    show_default=True,
    help="The host's /proc (run with hostPID or mount it).",
)
@click.option(
    "--http-threads",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Threads answering HTTP requests (a fixed pool, whatever the clients do).",
)
@gcli.read_timeout_option(5.0, "its request line and headers")
@gcli.log_level_option()
def exporter(
    backend: str,
    port: int,
    host: str,
    address: str | None,
    interval: float,
    simulate: Path | None,
    hostname: str | None,
    node_name: str | None,
    use_kubernetes: bool | None,
    kubeconfig: str | None,
    pod_resources_socket: Path,
    proc_root: Path,
    http_threads: int,
    read_timeout: float,
    log_level: str,
) -> None:
    """DCGM-compatible GPU metrics and per-slice usage attributed to pods, for Prometheus."""
    from prometheus_client import CollectorRegistry

    from exporter.collector import SnapshotCollector
    from exporter.sampler import MIN_INTERVAL_S, Sampler
    from exporter.server import MetricsServer, timed_metrics_app

    gcli.configure_logging(log_level)
    address = address or host
    if interval < MIN_INTERVAL_S:
        raise click.BadParameter(
            f"{interval:g} s is below the {MIN_INTERVAL_S:g} s floor", param_hint="--interval"
        )
    if simulate is not None and backend != "simulated":
        raise click.BadParameter("--simulate needs --backend simulated", param_hint="--simulate")
    host = hostname or node_name or socket.gethostname()
    parts: dict[str, Any]
    if backend == "simulated":
        parts = _simulated(simulate, hostname)
        host = hostname or parts.pop("hostname")
        if use_kubernetes:
            parts["pods"] = _pod_watch(node_name, kubeconfig)
    else:
        parts = _nvml(node_name, use_kubernetes, kubeconfig, pod_resources_socket, proc_root)
    sampler = Sampler(hostname=host, interval_s=interval, **parts)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: sampler.snapshot))
    server = MetricsServer(
        timed_metrics_app(registry),
        sock=gcli.listen(address, port),
        threads=http_threads,
        read_timeout_s=read_timeout,
    )
    sampler.start()
    server.start()
    click.echo(
        f"gpupool exporter ({backend}) serving http://{address}:{server.port}/metrics "
        f"every {interval:g} s as Hostname={host}",
        err=True,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.stop()
    sampler.stop()


def _simulated(path: Path | None, hostname: str | None) -> dict[str, Any]:
    from exporter.backends import simulated

    source = path or simulated.DEFAULT_SIMULATION
    try:
        simulation = simulated.load_simulation(source)
    except simulated.SimulationError as exc:
        raise click.BadParameter(str(exc), param_hint="--simulate") from exc
    node = simulated.SimulatedNode(simulation, source=source)
    return {
        "backend": node,
        "resolve": node.resolve,
        "pods": node,
        "podresources": node,
        "hostname": simulation.hostname,
    }


def _pod_watch(node_name: str | None, kubeconfig: str | None) -> PodSource:
    """The node's pods, kept fresh by a list + watch of the API server."""
    from exporter.pods import KubernetesPodWatch, PodIndex

    if not node_name:
        raise click.BadParameter(
            "--kubernetes needs --node-name (or $NODE_NAME)", param_hint="--node-name"
        )
    index = PodIndex()
    try:
        watch = KubernetesPodWatch.in_cluster(
            index=index, node_name=node_name, kubeconfig=kubeconfig
        )
    except ImportError as exc:
        raise gcli.BadInput(
            f"the pod watch needs the kubernetes client ({exc}); install "
            "gpupool[exporter], or run with --no-kubernetes (no attribution to pods)"
        ) from exc
    except Exception as exc:  # kubernetes.config.ConfigException and friends
        raise gcli.BadInput(
            f"cannot configure the Kubernetes client ({exc}); run in a pod with a "
            "service account, pass --kubeconfig, or use --no-kubernetes"
        ) from exc
    watch.start()
    return index


def _nvml(
    node_name: str | None,
    use_kubernetes: bool | None,
    kubeconfig: str | None,
    socket_path: Path,
    proc_root: Path,
) -> dict[str, Any]:
    from exporter.backends.nvml import NvmlBackend
    from exporter.cgroups import ProcCgroupResolver

    parts: dict[str, Any] = {
        "backend": NvmlBackend(),
        "resolve": ProcCgroupResolver(proc_root).resolve,
    }
    if use_kubernetes is None:
        use_kubernetes = bool(node_name)
    if use_kubernetes:
        parts["pods"] = _pod_watch(node_name, kubeconfig)
    if socket_path.exists():
        try:
            from exporter.podresources import GrpcPodResources

            parts["podresources"] = GrpcPodResources(socket_path)
        except ImportError:
            log.warning(
                "grpcio is not installed: slices are placed on the GPUs their "
                "processes run on (install grpcio to use %s)",
                socket_path,
            )
    else:
        log.info("no PodResources socket at %s; placing slices by their processes", socket_path)
    return parts


def main() -> None:  # pragma: no cover - python -m exporter
    exporter(prog_name="gpupool exporter", auto_envvar_prefix="GPUPOOL_EXPORTER")


if __name__ == "__main__":  # pragma: no cover
    main()
