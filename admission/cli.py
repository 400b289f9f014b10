"""``gpupool webhook``: serve the mutating admission webhook over HTTPS."""

from __future__ import annotations

import click
import uvicorn

from admission.admitter import Settings
from admission.app import DEFAULT_MAX_BODY_BYTES
from admission.server import build, tune_gc, uvicorn_config
from admission.tls import ReloadingContext
from governance import cli as gcli
from governance.contract import DEFAULT_WEBHOOK_PORT
from governance.errors import GpupoolError
from governance.store import Store


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
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate chain; reloaded when the file changes.",
)
@click.option(
    "--tls-key",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key; reloaded when the file changes.",
)
@gcli.host_option()
@gcli.port_option(DEFAULT_WEBHOOK_PORT)
@click.option(
    "--allow-unowned-namespaces",
    is_flag=True,
    help="Let GPU pods in namespaces no department owns through untouched (default: deny them).",
)
@click.option("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True, type=int)
@click.option(
    "--config-refresh",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds between checks for a new configuration revision.",
)
@gcli.log_level_option()
def webhook(
    store_url: str | None,
    config_file: str | None,
    tls_cert: str,
    tls_key: str,
    host: str,
    port: int,
    allow_unowned_namespaces: bool,
    max_body_bytes: int,
    config_refresh: float,
    log_level: str,
) -> None:
    """Serve the mutating admission webhook (POST /mutate, /healthz, /readyz, /metrics)."""
    # Quiets Casbin (every policy of every enforcer at INFO) and Alembic (its plugins).
    gcli.configure_logging(log_level)
    try:
        store = Store(store_url)
        hook = build(
            store,
            config_file=config_file,
            settings=Settings(allow_unowned_namespaces=allow_unowned_namespaces),
            refresh_s=config_refresh,
            max_body_bytes=max_body_bytes,
        )
        tls = ReloadingContext(tls_cert, tls_key)
    except GpupoolError as exc:
        raise gcli.failure(exc) from exc
    except OSError as exc:
        raise gcli.BadInput(f"cannot read the TLS files: {exc}") from exc
    sock = gcli.listen(host, port)
    tls.start()
    tune_gc()
    try:
        uvicorn.Server(
            uvicorn_config(hook.app, tls, host=host, port=port, log_level=log_level)
        ).run(sockets=[sock])
    finally:
        tls.stop()
        store.close()
