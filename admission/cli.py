"""``gpupool webhook``: serve the mutating admission webhook over HTTPS."""

from __future__ import annotations

import logging

import click
import uvicorn

from admission.admitter import Settings
from admission.app import DEFAULT_MAX_BODY_BYTES
from admission.server import build, tune_gc, uvicorn_config
from admission.tls import ReloadingContext
from governance.contract import DEFAULT_WEBHOOK_PORT
from governance.errors import GpupoolError
from governance.store import ENV_STORE, Store, Timeouts


@click.command("webhook")
@click.option(
    "--store", "store_url", envvar=ENV_STORE, help="Governance store URL (or GPUPOOL_STORE)."
)
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
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=DEFAULT_WEBHOOK_PORT, show_default=True, type=int)
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
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
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
    request_budget_s: float,
    log_level: str,
) -> None:
    """Serve the mutating admission webhook (POST /mutate, /healthz, /readyz, /metrics)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Casbin logs every policy of every enforcer it builds at INFO (one per department).
    logging.getLogger("casbin").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        # every wait on the store ends before the request budget does
        store = Store(store_url, timeouts=Timeouts.within(request_budget_s))
        hook = build(
            store,
            config_file=config_file,
            settings=Settings(
                allow_unowned_namespaces=allow_unowned_namespaces,
                request_budget_s=request_budget_s,
            ),
            refresh_s=config_refresh,
            max_body_bytes=max_body_bytes,
        )
        tls = ReloadingContext(tls_cert, tls_key)
    except GpupoolError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot read the TLS files: {exc}") from exc
    tls.start()
    tune_gc()
    try:
        uvicorn.Server(
            uvicorn_config(hook.app, tls, host=host, port=port, log_level=log_level)
        ).run()
    finally:
        tls.stop()
        store.close()
