"""``gpupool demo``: the whole platform live on one machine, driven by the Alibaba trace.

::

    gpupool demo [--duration SECONDS] [--speed X] [--nodes N] [--seed N]
                 [--store URL] [--console-port P] [--webhook-port P] ...

Starts, on loopback: the store with the example organisation (resized to the fleet),
the real webhook over HTTPS (a certificate made for the run, the caller's client
certificate verified), the real reconciler and one real exporter per simulated node
(pointed at the demo's Kubernetes API stand-in), the real console scraping the
exporters as a platform admin; then plays the trace's pods through the webhook until
Ctrl-C or ``--duration``, and stops everything it started. See docs/demo.md.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import click
import httpx
import yaml
from rich.console import Console

from admission.tls import self_signed
from demo import fleet as fleets
from demo.apiserver import AdmissionClient, ApiServer, Served
from demo.apistore import LEASES
from demo.cluster import Cluster
from demo.driver import Driver
from demo.pki import Authority
from demo.placement import Policy
from demo.processes import STOP_TIMEOUT_S, Child, ComponentFailed, Supervisor, exit_code
from demo.summary import Display, line
from demo.workload import gpu_pods, plan
from governance import cli as gcli
from governance.errors import GpupoolError
from governance.storage.store import Store
from simulator.trace import Pod as TracePod

log = logging.getLogger("gpupool.demo")
F = TypeVar("F", bound=Callable[..., Any])

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLE_ORG = REPOSITORY / "examples" / "org.yaml"
DEFAULT_STORE = "gpupool-demo.db"
ADMIN = "alice@northwind.example"
"""The console's dev user: a platform admin of examples/org.yaml (user and group)."""
ADMIN_GROUP = "platform-team"
LEASE_NAMESPACE = "gpupool-system"


def _trace_dir() -> Path:
    from simulator import trace

    return trace.shared_trace_dir(REPOSITORY)


@dataclass(frozen=True, kw_only=True)
class Ports:
    api: int
    webhook: int
    reconciler: int
    console: int
    exporters: tuple[int, ...]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _ports(
    host: str, *, api: int, webhook: int, reconciler: int, console: int, exporter: int, nodes: int
) -> Ports:
    """The ports, 0 replaced by a free one; each checked free now (exit 4 otherwise), so
    that a taken port stops the demo before anything starts."""

    def take(port: int) -> int:
        if port == 0:
            return _free_port(host)
        gcli.listen(host, port, backlog=1).close()
        return port

    exporters = tuple(take(exporter + n if exporter else 0) for n in range(nodes))
    return Ports(
        api=take(api),
        webhook=take(webhook),
        reconciler=take(reconciler),
        console=take(console),
        exporters=exporters,
    )


DEFAULT_PORTS = {"console": 8050, "webhook": 8443, "exporter": 9400, "api": 0, "reconciler": 0}
"""The component's own defaults where it has one; 0 picks a free port."""


def _port(name: str, default: int, what: str) -> Callable[[F], F]:
    return click.option(
        f"--{name}-port",
        type=click.IntRange(0, 65535),
        default=default,
        help=f"{what} (default {default}; 0: a free one)."
        if default
        else f"{what} (default: a free one).",
    )


def _store_url(store_url: str | None) -> str:
    if store_url:
        return store_url
    return f"sqlite:///{Path.cwd() / DEFAULT_STORE}"


@click.command("demo")
@gcli.store_option()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=EXAMPLE_ORG,
    show_default="examples/org.yaml",
    help="The organisation (its pools are resized to the demo's fleet).",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop after this many seconds (default: at Ctrl-C).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Trace seconds per demo second: a pod lives its trace duration divided by it.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1, max=64),
    default=26,
    show_default=True,
    help=f"Simulated GPU nodes of {fleets.NODE_GPUS} GPUs, one exporter each. 26 is "
    "examples/org.yaml's fleet as declared; fewer (at least one per pool) shrink its pools "
    "to match, for small machines.",
)
@click.option(
    "--placement",
    type=click.Choice([p.value for p in Policy]),
    default=Policy.BINPACK.value,
    show_default=True,
    help="How the scheduler places pods on nodes and GPUs (HAMi's policies).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the workload.")
@click.option(
    "--freeze-after",
    "freeze_after_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop the workload after this many seconds (no arrivals, no endings) and keep "
    "serving: the figures stand still (screenshots, checks).",
)
@click.option(
    "--record",
    type=click.File("w"),
    default=None,
    help="Write one JSON line per admission decision to this file.",
)
@gcli.host_option("127.0.0.1", help="Loopback address every component listens on.")
@_port("console", DEFAULT_PORTS["console"], "The console's port")
@_port("webhook", DEFAULT_PORTS["webhook"], "The webhook's port")
@_port("exporter", DEFAULT_PORTS["exporter"], "The first node's exporter; the next take the next")
@_port("api", DEFAULT_PORTS["api"], "The Kubernetes API stand-in's port")
@_port("reconciler", DEFAULT_PORTS["reconciler"], "The reconciler's health port")
@click.option(
    "--scrape-interval",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds between the console's scrapes of the exporters.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the run's files here (certificates, kubeconfig, node files, logs); "
    "default: a temporary directory removed at the end.",
)
@click.option(
    "--trace",
    "trace_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The Alibaba trace's folder (default: ../shared/data/alibaba-gpu-2023).",
)
@gcli.log_level_option()
def demo(
    store_url: str | None,
    config_file: Path,
    duration_s: float | None,
    speed: float,
    nodes: int,
    placement: str,
    seed: int,
    freeze_after_s: float | None,
    record: IO[str] | None,
    host: str,
    console_port: int,
    webhook_port: int,
    exporter_port: int,
    api_port: int,
    reconciler_port: int,
    scrape_interval: float,
    workdir: Path | None,
    trace_dir: Path | None,
    log_level: str,
) -> None:
    """The whole platform live on one machine, driven by a real cluster's workload."""
    gcli.configure_logging(log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if not ipaddress.ip_address(host).is_loopback:
            raise gcli.BadInput(f"--host {host}: the demo listens on loopback only")
    except ValueError as exc:
        raise gcli.BadInput(f"--host {host}: not an IP address") from exc
    store_url = _store_url(store_url)
    try:
        document, org = fleets.load(config_file)
        fleet = fleets.plan(org, nodes)
    except GpupoolError as exc:
        raise gcli.failure(exc) from exc
    except ValueError as exc:
        raise gcli.BadInput(str(exc)) from exc
    ports = _ports(
        host,
        api=api_port,
        webhook=webhook_port,
        reconciler=reconciler_port,
        console=console_port,
        exporter=exporter_port,
        nodes=len(fleet),
    )
    from simulator import trace

    source = (trace_dir or _trace_dir()) / trace.DEFAULT_POD_LIST
    try:
        trace_pods = trace.read_pods(source)
    except GpupoolError as exc:
        raise gcli.BadInput(f"{exc} (the demo replays the Alibaba trace: --trace DIR)") from exc
    settings = Settings(
        host=host,
        ports=ports,
        store_url=store_url,
        document=document,
        fleet=fleet,
        policy=Policy(placement),
        trace_pods=trace_pods,
        seed=seed,
        speed=speed,
        duration_s=duration_s,
        freeze_after_s=freeze_after_s,
        record=record,
        scrape_interval=scrape_interval,
        log_level=log_level,
    )
    with _run_directory(workdir) as run, _errors():
        code = _run(run, settings)
    if code:
        raise SystemExit(code)


# The shared --store option, with the demo's own default in its help.
for _param in demo.params:
    if _param.name == "store_url" and isinstance(_param, click.Option):
        _param.help = (
            f"The demo's store, kept afterwards: sqlite:///path.db (default ./{DEFAULT_STORE}), "
            "a bare path to a SQLite file, or postgresql://user@host/db. Also GPUPOOL_STORE."
        )


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """A gpupool error while the demo runs (its store going away) ends it with the exit
    code of the table, after everything it started has stopped."""
    try:
        yield
    except GpupoolError as exc:
        raise gcli.failure(exc) from exc


@contextlib.contextmanager
def _run_directory(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir.resolve()
        return
    run = Path(tempfile.mkdtemp(prefix="gpupool-demo-"))
    try:
        yield run
    finally:
        shutil.rmtree(run, ignore_errors=True)


class _Stop:
    """Ctrl-C / SIGTERM: the first asks for a clean stop, a second skips the drain."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.hurry = False
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            self.hurry = True
        self.signal = signum
        self.event.set()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the command line asked for, checked."""

    host: str
    ports: Ports
    store_url: str
    document: dict[str, object]
    fleet: tuple[fleets.Node, ...]
    policy: Policy
    trace_pods: list[TracePod]
    seed: int
    speed: float
    duration_s: float | None
    freeze_after_s: float | None
    record: IO[str] | None
    scrape_interval: float
    log_level: str


def _run(run: Path, settings: Settings) -> int:
    """The demo from start to stop; the exit code (a failed component's, see
    :func:`demo.processes.exit_code`)."""
    out = Console(soft_wrap=True)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    demo = _Demo(run, settings, out)
    try:
        demo.start()
        demo.play(stop)
        return 0
    except ComponentFailed as exc:
        out.print(f"[red]error:[/red] {exc}", highlight=False)
        return exit_code(exc)
    finally:
        demo.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Demo:
    """One run: :meth:`start` the stand-in and the components, :meth:`play` the workload,
    :meth:`close` everything."""

    def __init__(self, run: Path, settings: Settings, out: Console) -> None:
        self.run = run
        self.settings = settings
        self.out = out
        self.supervisor = Supervisor(run / "logs")
        self.admission: AdmissionClient | None = None
        self.served: Served | None = None
        self.store: Store | None = None

    def start(self) -> None:
        s, host, ports, run = self.settings, self.settings.host, self.settings.ports, self.run
        # the webhook's serving pair (a CA the API server trusts), the API server's client pair
        tls = run / "tls"
        self.webhook_ca = tls / "gpupool-demo-webhook-ca.pem"
        serving_cert, serving_key = self_signed(
            tls, ca_file=self.webhook_ca, hosts=(host, "localhost")
        )
        client_ca = Authority(tls, "gpupool-demo-apiserver-client-ca")
        client_cert, client_key = client_ca.client("kube-apiserver")
        # the organisation, its pools resized to the fleet
        org_file = run / "organisation.yaml"
        org_file.write_text(
            "# examples/org.yaml with each pool's gpus set to the demo's fleet\n"
            + yaml.safe_dump(fleets.resized(s.document, s.fleet), sort_keys=False)
        )
        # the Kubernetes API stand-in, in this process
        self.webhook_url = f"https://{host}:{ports.webhook}/mutate"
        self.admission = AdmissionClient(
            self.webhook_url,
            ca_file=self.webhook_ca,
            client_cert=client_cert,
            client_key=client_key,
        )
        self.api = ApiServer(admission=self.admission, rng=random.Random(s.seed))
        self.served = self.api.serve(host, ports.api)
        kubeconfig = self.served.kubeconfig(run / "kubeconfig")
        self.cluster = Cluster(self.api, s.fleet, run / "nodes", policy=s.policy, seed=s.seed)
        # the components, each with its own gpupool subcommand
        level = ["--log-level", s.log_level]
        webhook = self.supervisor.start(
            "webhook",
            [
                "webhook", "--store", s.store_url, "--config", str(org_file),
                "--tls-cert", str(serving_cert), "--tls-key", str(serving_key),
                "--client-ca", str(client_ca.file), "--host", host, "--port", str(ports.webhook),
                *level,
            ],
        )  # fmt: skip
        self.supervisor.wait_ready(
            webhook, lambda: _ok(f"https://{host}:{ports.webhook}/readyz", ca_file=self.webhook_ca)
        )  # the organisation is applied: the others may start
        reconciler = self.supervisor.start(
            "reconciler",
            [
                "reconciler", "--store", s.store_url, "--kubeconfig", str(kubeconfig),
                "--lease-namespace", LEASE_NAMESPACE, "--host", host,
                "--health-port", str(ports.reconciler), "--retry-period", "1", *level,
            ],
        )  # fmt: skip
        self.exporters: list[tuple[Child, str]] = []
        for node, port in zip(s.fleet, ports.exporters, strict=True):
            child = self.supervisor.start(
                f"exporter-{node.name}",
                [
                    "exporter", "--backend", "simulated",
                    "--simulate", str(self.cluster.simulation_file(node.name)),
                    "--kubernetes", "--node-name", node.name, "--kubeconfig", str(kubeconfig),
                    "--host", host, "--port", str(port), "--interval", "1", *level,
                ],
            )  # fmt: skip
            self.exporters.append((child, f"http://{host}:{port}/metrics"))
        scraped = [
            arg
            for _c, url in self.exporters
            for arg in ("--exporter", url.removesuffix("/metrics"))
        ]
        console = self.supervisor.start(
            "console",
            [
                "dashboard", "--store", s.store_url, *scraped,
                "--dev-user", ADMIN, "--dev-group", ADMIN_GROUP, "--host", host,
                "--port", str(ports.console), "--scrape-interval", str(s.scrape_interval),
                "--workers", "1", *level,
            ],
        )  # fmt: skip
        self.supervisor.wait_ready(
            reconciler, lambda: _ok(f"http://{host}:{ports.reconciler}/readyz")
        )
        for child, url in self.exporters:
            self.supervisor.wait_ready(child, lambda url=url: _ok(url))  # type: ignore[misc]
        self.supervisor.wait_ready(console, lambda: _ok(f"http://{host}:{ports.console}/"))
        _wait_for_leader(self.api, self.supervisor)
        self._announce(kubeconfig)

    def _announce(self, kubeconfig: Path) -> None:
        s, out = self.settings, self.out
        assert self.served is not None
        out.print(f"console: http://{s.host}:{s.ports.console}/", highlight=False)
        out.print(f"webhook: {self.webhook_url}", highlight=False)
        for _child, url in self.exporters:
            out.print(f"exporter: {url}", highlight=False)
        out.print(
            f"[dim]store: {s.store_url} (kept: gpupool --store {s.store_url} ledger list)\n"
            f"Kubernetes API stand-in (not a cluster): {self.served.url} (kubeconfig "
            f"{kubeconfig})\nfleet: {len(s.fleet)} nodes, {sum(n.gpus for n in s.fleet)} GPUs; "
            f"trace: {len(gpu_pods(s.trace_pods))} GPU pods of the Alibaba GPU trace at "
            f"{s.speed:g}x, seed {s.seed}; run files: {self.run}[/dim]",
            highlight=False,
        )

    def play(self, stop: _Stop) -> None:
        """The workload, until Ctrl-C or the duration; then its pods are deleted."""
        from governance.storage import ledger

        s = self.settings
        store = self.store = Store(s.store_url)

        def released(allocation_id: str) -> bool:
            found = ledger.get(store, allocation_id)
            return found is None or not found.state.live

        driver = Driver(
            plan=plan(
                s.trace_pods, seed=s.seed, speed=s.speed, fleet_gpus=sum(n.gpus for n in s.fleet)
            ),
            api=self.api,
            cluster=self.cluster,
            released=released,
            record=s.record,
        )
        failed: list[BaseException] = []

        def drive() -> None:
            try:
                driver.run(stop.event, freeze_after_s=s.freeze_after_s)
            except BaseException as exc:  # reported by the main thread, which stops all
                failed.append(exc)
                stop.event.set()

        display = Display(self.out, driver.stats, s.duration_s)
        worker = threading.Thread(target=drive, name="driver", daemon=True)
        display.start()
        worker.start()
        started = time.monotonic()
        try:
            while not stop.event.is_set():
                self.supervisor.check()
                if s.duration_s is not None and time.monotonic() - started >= s.duration_s:
                    stop.event.set()
                    break
                display.update()
                stop.event.wait(0.5)
        finally:
            stop.event.set()
            worker.join(timeout=30)
            display.update()
            display.close()
        if failed:
            raise failed[0]
        self.out.print(line(driver.stats, time.monotonic() - started), highlight=False)
        if not stop.hurry:
            left = driver.drain()
            if left:
                self.out.print(
                    f"[yellow]{left} allocation(s) not released yet: the reconciler or "
                    "the expiry pass will end them[/yellow]"
                )
        self.out.print(
            f"stopped; the store is kept: gpupool --store {s.store_url} ledger list",
            highlight=False,
        )

    def close(self) -> None:
        if self.admission is not None:
            self.admission.close()  # the webhook waits for its callers' connections to close
        killed = self.supervisor.stop()
        if killed:
            self.out.print(
                f"[yellow]killed after {STOP_TIMEOUT_S:g} s: {', '.join(killed)}[/yellow]"
            )
        if self.served is not None:
            self.served.close()
        if self.store is not None:
            self.store.close()


def _ok(url: str, *, ca_file: Path | None = None) -> bool:
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        verify = ssl.create_default_context(cafile=str(ca_file))
    answer = httpx.get(url, verify=verify, timeout=5)
    return answer.status_code == 200


def _wait_for_leader(api: ApiServer, supervisor: Supervisor, timeout_s: float = 60.0) -> None:
    """Wait until the reconciler holds its Lease (it then lists and watches pods): a pod
    that came and went before it watched would leave its reservation to the expiry."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.check()
        leases, _version = api.store.list(LEASES)
        if any((lease.get("spec") or {}).get("holderIdentity") for lease in leases):
            time.sleep(0.5)  # its first list and watch
            return
        time.sleep(0.1)
    raise ComponentFailed(
        next(c for c in supervisor.children if c.name == "reconciler"),
        f"did not take its Lease within {timeout_s:g} s",
    )
