"""The HTTP side: a threaded WSGI server around prometheus_client's exposition app.

The wrapper times each render into ``gpupool_exporter_scrape_duration_seconds`` (a
prometheus_client Histogram in the same registry, so the next scrape reports it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app

from exporter.collector import SCRAPE_DURATION

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def timed_metrics_app(
    registry: CollectorRegistry, timer: Callable[[], float] = time.perf_counter
) -> WsgiApp:
    histogram = Histogram(
        SCRAPE_DURATION,
        "Time to render one scrape of this exporter (seconds).",
        buckets=SCRAPE_BUCKETS,
        registry=registry,
    )
    inner = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = timer()
        try:
            return list(inner(environ, start_response))
        finally:
            histogram.observe(timer() - started)

    return app


class MetricsServer:
    """Serves ``app`` on (address, port) from a daemon thread; ``port`` 0 picks one."""

    def __init__(self, app: WsgiApp, *, address: str, port: int) -> None:
        self._httpd = make_server(address, port, app, _Server, handler_class=_QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
