"""``gpupool webhook``: serve the mutating admission webhook over HTTPS."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import click
import uvicorn

from admission.admitter import DEFAULT_MAX_GPU_CONTAINERS, DEFAULT_TRUSTED_CONTROLLERS, Settings
from admission.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BUFFERED_BYTES
from admission.connection import DEFAULT_BODY_TIMEOUT_S
from admission.server import (
    DEFAULT_MAX_CONNECTIONS,
    Limits,
    apply_config,
    build,
    tune_gc,
    uvicorn_config,
)
from admission.tls import SELF_SIGNED_HOSTS, ReloadingContext, self_signed
from governance import cli as gcli
from governance.cli import handle_errors
from governance.contract import DEFAULT_WEBHOOK_PORT
from governance.storage import retention
from governance.storage.store import Store, Timeouts, sqlite_file

log = logging.getLogger(__name__)

SELF_SIGNED_CA_NAME = "gpupool-webhook-ca.pem"


def _retention(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta | None:
    try:
        return retention.parse_retention(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("webhook")
@gcli.store_option()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Organisation YAML to apply at start (omit to serve what the store holds).",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate chain; reloaded when the file changes.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key; reloaded when the file changes.",
)
@click.option(
    "--self-signed",
    is_flag=True,
    help="For a local trial instead of --tls-cert/--tls-key: a certificate for "
    "localhost and 127.0.0.1 made at start; its CA is written next to the store.",
)
@click.option(
    "--client-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM CA that signs the API server's client certificate: /mutate answers only "
    "callers that present one (reloaded when the file changes).",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help="Answer /mutate without a client certificate: anyone who reaches the port can "
    "reserve quota. For trials and networks where nothing else can reach the webhook.",
)
@gcli.host_option()
@gcli.port_option(DEFAULT_WEBHOOK_PORT)
@click.option(
    "--allow-unowned-namespaces",
    is_flag=True,
    help="Let GPU pods in namespaces no department owns through untouched (default: deny them).",
)
@click.option(
    "--trusted-controller",
    "trusted_controllers",
    multiple=True,
    metavar="USER",
    help="A requester (userInfo.username; globs) whose pod creations are authorised as the "
    "pod's service account: a controller creating pods for others. Repeat it; giving it "
    "replaces the default ("
    + ", ".join(DEFAULT_TRUSTED_CONTROLLERS)
    + "), so list those too if you keep them.",
)
@click.option("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True, type=int)
@click.option(
    "--max-gpu-containers",
    default=DEFAULT_MAX_GPU_CONTAINERS,
    show_default=True,
    type=click.IntRange(min=1),
    help="GPU containers (init containers and sidecars included) a pod may have.",
)
@click.option(
    "--max-connections",
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections at once; requests beyond get 503.",
)
@gcli.read_timeout_option(DEFAULT_BODY_TIMEOUT_S, "a request's headers, and again its body")
@click.option(
    "--max-buffered-bytes",
    default=DEFAULT_MAX_BUFFERED_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Bytes of request bodies held at once, every connection together; 503 beyond.",
)
@click.option(
    "--config-refresh",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds between checks for a new configuration revision.",
)
@click.option(
    "--request-budget",
    "request_budget_s",
    default=8.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds within which a GPU pod is answered; past it, denied with StoreUnavailable "
    "(keep it below the webhook's timeoutSeconds).",
)
@click.option(
    "--denial-retention",
    default="30d",
    show_default=True,
    callback=_retention,
    help="How long denial records are kept (30d, 12h, 90m, 3600s, or 'forever').",
)
@gcli.log_level_option()
@handle_errors
def webhook(
    store_url: str | None,
    config_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    self_signed: bool,
    client_ca: str | None,
    allow_unauthenticated: bool,
    host: str,
    port: int,
    allow_unowned_namespaces: bool,
    trusted_controllers: tuple[str, ...],
    max_body_bytes: int,
    max_gpu_containers: int,
    max_connections: int,
    read_timeout: float,
    max_buffered_bytes: int,
    config_refresh: float,
    request_budget_s: float,
    denial_retention: timedelta | None,
    log_level: str,
) -> None:
    """Serve the mutating admission webhook (POST /mutate, /healthz, /readyz, /metrics)."""
    _check_choices(tls_cert, tls_key, self_signed, client_ca, allow_unauthenticated)
    # Quiets Casbin (every policy of every enforcer at INFO) and Alembic (its plugins).
    gcli.configure_logging(log_level)
    if allow_unauthenticated:
        log.warning(
            "--allow-unauthenticated: /mutate answers any caller without a client "
            "certificate, so anyone who can reach port %d can reserve quota and fill the "
            "denial log; use --client-ca with the API server's client CA instead",
            port,
        )
    trial_dir: Path | None = None
    if self_signed:
        trial_dir = Path(tempfile.mkdtemp(prefix="gpupool-webhook-tls-"))
        ca_file = _beside_store(store_url) / SELF_SIGNED_CA_NAME
        tls_cert_path, tls_key_path = _self_signed_pair(trial_dir, ca_file)
        click.echo(
            f"self-signed certificate for {', '.join(SELF_SIGNED_HOSTS)} (a trial: not for "
            f"production); clients trust its CA: {ca_file}",
            err=True,
        )
    else:
        assert tls_cert is not None and tls_key is not None
        tls_cert_path, tls_key_path = Path(tls_cert), Path(tls_key)
    if config_file is not None:
        # an administrative write, which may take longer than a request's budget
        setup = Store(store_url)
        try:
            apply_config(setup, config_file)
        finally:
            setup.close()
    # every wait on the store ends before the request budget does
    store = Store(store_url, timeouts=Timeouts.within(request_budget_s))
    pruner: retention.DenialPruner | None = None
    tls: ReloadingContext | None = None
    try:
        limits = Limits(
            max_connections=max_connections,
            header_timeout_s=read_timeout,
            body_timeout_s=read_timeout,
            max_buffered_bytes=max_buffered_bytes,
        )
        hook = build(
            store,
            settings=Settings(
                allow_unowned_namespaces=allow_unowned_namespaces,
                request_budget_s=request_budget_s,
                max_gpu_containers=max_gpu_containers,
                trusted_controllers=trusted_controllers or DEFAULT_TRUSTED_CONTROLLERS,
            ),
            refresh_s=config_refresh,
            max_body_bytes=max_body_bytes,
            limits=limits,
            require_client_cert=client_ca is not None,
        )
        try:
            tls = ReloadingContext(tls_cert_path, tls_key_path, client_ca=client_ca)
        except OSError as exc:
            raise gcli.BadInput(f"cannot read the TLS files: {exc}") from exc
        sock = gcli.listen(host, port)
        tls.start()
        if denial_retention is not None:
            pruner = retention.DenialPruner(store, retention=denial_retention)
            pruner.start()
        tune_gc()
        uvicorn.Server(
            uvicorn_config(hook.app, tls, host=host, port=port, log_level=log_level, limits=limits)
        ).run(sockets=[sock])
    finally:
        if pruner is not None:
            pruner.stop()
        if tls is not None:
            tls.stop()
        store.close()
        if trial_dir is not None:
            shutil.rmtree(trial_dir, ignore_errors=True)


def _check_choices(
    tls_cert: str | None,
    tls_key: str | None,
    self_signed: bool,
    client_ca: str | None,
    allow_unauthenticated: bool,
) -> None:
    if self_signed and (tls_cert or tls_key):
        raise click.UsageError("--self-signed makes its own certificate: drop --tls-cert/--tls-key")
    if not self_signed and not (tls_cert and tls_key):
        raise click.UsageError(
            "a serving certificate is needed: --tls-cert FILE and --tls-key FILE (see "
            "'Getting a certificate' in docs/admission.md), or --self-signed for a local trial"
        )
    if client_ca and allow_unauthenticated:
        raise click.UsageError("--client-ca and --allow-unauthenticated contradict each other")
    if not client_ca and not allow_unauthenticated:
        raise click.UsageError(
            "refusing to start without caller authentication: give --client-ca FILE (the CA "
            "of the API server's client certificate; the chart sets it up), or "
            "--allow-unauthenticated to let anyone who reaches the port reserve quota"
        )


def _beside_store(store_url: str | None) -> Path:
    """The directory of a SQLite store's file; the working directory for a server."""
    database = sqlite_file(store_url)
    return database.resolve().parent if database is not None else Path.cwd()


def _self_signed_pair(directory: Path, ca_file: Path) -> tuple[Path, Path]:
    try:
        return self_signed(directory, ca_file=ca_file)
    except OSError as exc:
        raise click.UsageError(f"cannot write the self-signed CA to {ca_file}: {exc}") from exc
