"""Wiring: store, configuration, admitter, app, TLS and uvicorn (the CLI and the tests
call :func:`build` and :func:`serve`)."""

from __future__ import annotations

import gc
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from admission.admitter import Admitter, Settings
from admission.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES,
    Front,
    create_app,
)
from admission.connection import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_HEADER_BYTES,
    ConnectionLimits,
    protocol_class,
)
from admission.metrics import Metrics, QuotaCollector, WriterCollector
from admission.organisation import LiveSnapshot
from admission.tls import ReloadingContext
from governance import config
from governance.storage import revisions
from governance.storage.source import SnapshotSource
from governance.storage.store import Store

log = logging.getLogger(__name__)

YOUNG_COLLECTION_THRESHOLD = 20_000
"""Container objects allocated (less those freed) between two collections of the
cyclic collector's youngest generation; CPython's default is 700.

A GPU admission holds a few hundred young objects at once (the parsed review, the
group's rows and answers) and frees nearly all of them when it is answered. With 700
the collector ran every ~35 GPU admissions and each run cost about 0.6 ms, 3-4% of the
webhook's CPU, spent walking objects about to be freed anyway; with 20,000 a run of
4,000 admissions triggered none. The older generations keep their thresholds (they
count collections of the younger ones), so cyclic garbage is still collected."""


def tune_gc() -> None:
    """Apply :data:`YOUNG_COLLECTION_THRESHOLD` to this process (the webhook's entry
    point calls it; the organisation itself is moved out of the collector's sight by
    :func:`governance.rbac.warm`)."""
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What a caller can make the webhook hold, and for how long (flags of ``gpupool
    webhook``). Without them, 100 TLS connections each sending 4 MiB - 1 and stalling
    took the process from 80 to 548 MiB, and 2,000 connections that sent part of their
    headers were held as long as their clients liked."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections (and requests in progress) at once; a request beyond gets 503
    (uvicorn's ``limit_concurrency``)."""
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    """See :class:`admission.connection.ConnectionLimits`."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    """See :class:`admission.app.Front`."""

    @property
    def connection(self) -> ConnectionLimits:
        return ConnectionLimits(
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            max_header_bytes=self.max_header_bytes,
        )


@dataclass(frozen=True, kw_only=True)
class Webhook:
    app: Front
    store: Store
    admitter: Admitter
    registry: CollectorRegistry


def apply_config(store: Store, config_file: str | Path) -> None:
    """Apply the organisation in ``config_file`` (as ``gpupool apply``), logging a new
    revision."""
    result = revisions.apply(store, config.load_file(config_file), source=str(config_file))
    if result.changed:
        log.info("applied %s as configuration revision %s", config_file, result.revision)


def build(
    store: Store,
    *,
    settings: Settings | None = None,
    refresh_s: float = 2.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry: CollectorRegistry | None = None,
    limits: Limits | None = None,
    require_client_cert: bool = False,
) -> Webhook:
    """The webhook app over ``store`` (``gpupool webhook --config`` applies the file
    first, :func:`apply_config`). ``require_client_cert``: /mutate answers only callers
    whose client certificate the TLS layer verified (``ReloadingContext(client_ca=...)``)."""
    limits = limits or Limits()
    source = SnapshotSource(store, refresh_s=refresh_s)
    registry = registry or CollectorRegistry()
    live = LiveSnapshot(source)  # the event loop's view: refreshed in a thread, never on the loop
    admitter = Admitter(
        store=store, snapshot=source.get, settings=settings, snapshot_async=live.get
    )
    source.on_new = admitter.on_new_snapshot
    registry.register(QuotaCollector(store, lambda: source.get().org))
    registry.register(WriterCollector(admitter.writer_counts))
    app = create_app(
        admitter,
        store=store,
        registry=registry,
        metrics=Metrics(registry),
        max_body_bytes=max_body_bytes,
        max_buffered_bytes=limits.max_buffered_bytes,
        require_client_cert=require_client_cert,
    )
    return Webhook(
        app=app,
        store=store,
        admitter=admitter,
        registry=registry,
    )


def uvicorn_config(
    app: Front,
    tls: ReloadingContext,
    *,
    host: str,
    port: int,
    log_level: str = "warning",
    limits: Limits | None = None,
) -> uvicorn.Config:
    """One uvicorn worker (uvloop when installed, httptools with the bounds of
    :mod:`admission.connection`) serving ``tls``'s reloading context."""
    limits = limits or Limits()

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return tls.server

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=protocol_class(limits.connection),
        limit_concurrency=limits.max_connections,
        log_level=log_level,
        access_log=False,
        # The API server calls the webhook directly: no proxy's X-Forwarded-* headers
        # to honour (uvicorn would read them on every request from a trusted peer), and
        # no Server header to advertise the software.
        proxy_headers=False,
        server_header=False,
        ssl_context_factory=factory,
        timeout_graceful_shutdown=10,
    )
