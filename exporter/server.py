"""The HTTP side: a bounded WSGI server around prometheus_client's exposition app.

Bounded, because anything on the node network can reach it: a fixed pool of
``threads`` handler threads (not one per connection: 1,000 stalled connections once
held 1,003 threads), at most ``backlog`` connections waiting for one (more are closed
at once), a deadline of ``read_timeout_s`` for the request line and headers and
``write_timeout_s`` per write, and the request line and each header read with a
length limit (http.server's 64 KiB, 100 headers). A scrape is a small GET: nothing
legitimate comes near these limits.

The wrapper times each render into ``gpupool_exporter_scrape_duration_seconds`` (a
prometheus_client Histogram in the same registry, so the next scrape reports it).
"""

from __future__ import annotations

import io
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app

from exporter.collector import SCRAPE_DURATION

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DEFAULT_THREADS = 4
DEFAULT_BACKLOG = 64
DEFAULT_READ_TIMEOUT_S = 5.0
DEFAULT_WRITE_TIMEOUT_S = 10.0


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each given only what is left of one deadline, so that
    a client sending its headers a byte at a time cannot hold a thread for longer."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received within the read deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _Handler(WSGIRequestHandler):
    server: BoundedWSGIServer

    def setup(self) -> None:
        super().setup()
        deadline = time.monotonic() + self.server.read_timeout_s
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # The headers are in: the answer's writes get their own timeout, not what is
        # left of the read deadline.
        self.connection.settimeout(self.server.write_timeout_s)
        return parsed

    def handle(self) -> None:
        try:
            super().handle()
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # too slow or gone: drop it, nothing to log

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log."""


class BoundedWSGIServer(WSGIServer):
    """A WSGI server whose threads, queued connections and read time are bounded."""

    def __init__(
        self,
        sock: socket.socket,
        app: WsgiApp,
        *,
        threads: int = DEFAULT_THREADS,
        backlog: int = DEFAULT_BACKLOG,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
    ) -> None:
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(str(host))
        self.server_port = port
        self.setup_environ()
        self.set_app(app)
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self._queue: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(backlog)
        self._workers = [
            threading.Thread(target=self._work, name=f"metrics-http-{i}", daemon=True)
            for i in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:  # every thread busy and the queue full: refuse, do not pile up
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, client_address = item
            try:
                request.settimeout(self.write_timeout_s)
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that misbehaves is not worth a traceback on stderr."""

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break


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
    """Serves ``app`` on a listening socket (:func:`governance.cli.listen`, or
    ``address``/``port``, port 0 picking one) from a daemon thread."""

    def __init__(
        self,
        app: WsgiApp,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        threads: int = DEFAULT_THREADS,
        backlog: int = DEFAULT_BACKLOG,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        if sock is None:  # the kernel's queue is not the bound: the server's queue is
            sock = socket.create_server((address, port), backlog=1024)
        self._httpd = BoundedWSGIServer(
            sock, app, threads=threads, backlog=backlog, read_timeout_s=read_timeout_s
        )
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
