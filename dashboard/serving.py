"""Serving the console in production: gunicorn, with its threads and clients bounded.

Why gunicorn: the console is a Flask (WSGI) app, so it needs a WSGI server; gunicorn is
the one Dash and Flask document for production, runs several worker processes (a
Dash callback is CPU-bound Python: threads of one process would share one core), and
restarts a worker that dies. Werkzeug's development server, used before, made one
thread per connection with no limit at all (500 stalled connections: 502 threads).

How it is bounded (:class:`Limits`; each is a flag of ``gpupool dashboard``):

* ``workers`` processes x ``threads`` threads answer requests: that is every thread
  the console will ever run for clients (gunicorn's ``gthread`` worker);
* each worker holds at most ``worker_connections`` connections; more wait in the
  kernel's accept queue, costing the console nothing;
* a connection that has sent nothing waits in the worker's poller, not in a thread
  (gthread defers it after 5 s); once a request starts arriving, its line, headers
  and body must arrive within ``read_timeout_s`` (:class:`DeadlineSocket`), and each
  write of the answer within the same time, else the connection is closed;
* the request line, the number and size of headers are limited (gunicorn's
  ``limit_request_*``), and a body above :data:`dashboard.app.MAX_BODY_BYTES` gets
  413 (Flask).

Warm-up: the app is built and warmed (:meth:`dashboard.shared.Console.warm_up`) in the
master, before gunicorn listens, so every worker starts warm (``preload_app``; the
workers share the master's warm pages copy-on-write) and none takes traffic before.
What must not cross a fork is reopened in each worker (:class:`ConsoleServer`'s
``post_fork``): the store's connections and the direct source's scrape thread.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one console may spend on its clients."""

    workers: int = 2
    threads: int = 8
    worker_connections: int = 100
    read_timeout_s: float = 10.0
    keepalive_s: int = 5
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190


class DeadlineSocket(socket.socket):
    """A client socket whose request must arrive within one deadline.

    gthread sets a connection's socket blocking (``setblocking(True)``) when a thread
    starts on its request; from then on every read is given only what is left of
    ``read_timeout_s``, so a client sending a byte at a time cannot hold the thread for
    longer, and every write at most ``read_timeout_s``. Running out closes the
    connection as a reset would (gunicorn logs that at debug level, not as an error),
    and at once: gunicorn's graceful close would otherwise linger on the worker's main
    thread, waiting for the silent client to finish sending.
    """

    read_timeout_s = 10.0
    _deadline: float | None = None
    _expired = False

    @classmethod
    def adopt(cls, sock: socket.socket, read_timeout_s: float) -> DeadlineSocket:
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.read_timeout_s = read_timeout_s
        adopted.setblocking(False)
        return adopted

    def setblocking(self, flag: bool) -> None:
        if flag:
            if not self._expired:
                self._deadline = time.monotonic() + self.read_timeout_s
            self.settimeout(self.read_timeout_s)
        else:
            self._deadline = None
            super().setblocking(False)

    def _too_slow(self) -> ConnectionResetError:
        self._expired = True
        return ConnectionResetError(errno.ECONNRESET, "request not received in time")

    def _bounded_read(self) -> None:
        if self._expired:
            raise self._too_slow()
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        current = self.gettimeout()
        self.settimeout(left if current is None else min(current, left))

    def _timed_out(self, exc: TimeoutError) -> OSError:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return self._too_slow()
        return exc  # a shorter timeout of the caller's own (a graceful close's linger)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._bounded_read()
        try:
            return super().recv(bufsize, flags)
        except TimeoutError as exc:
            raise self._timed_out(exc) from None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._bounded_read()
        try:
            return super().recv_into(buffer, nbytes, flags)
        except TimeoutError as exc:
            raise self._timed_out(exc) from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._deadline is not None:
            self.settimeout(self.read_timeout_s)
        try:
            super().sendall(data, flags)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "answer not read in time") from None


class BoundedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, with each client socket a :class:`DeadlineSocket`."""

    read_timeout_s = Limits.read_timeout_s
    """Set by :class:`ConsoleServer` in the master; workers inherit it at fork."""

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket.adopt(conn.sock, self.read_timeout_s)
        super().enqueue_req(conn)


class ConsoleServer(BaseApplication):  # type: ignore[misc]
    """gunicorn serving ``app`` on an already listening socket (see
    :func:`governance.cli.listen`: a taken port is exit 4 before anything starts)."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        limits: Limits,
        *,
        post_fork: Callable[[], None] = lambda: None,
        log_level: str = "info",
    ) -> None:
        self.app = app
        self.sock = sock
        self.limits = limits
        self.after_fork = post_fork
        self.log_level = log_level
        super().__init__()

    def load_config(self) -> None:
        os.set_inheritable(self.sock.fileno(), True)
        limits = self.limits
        BoundedThreadWorker.read_timeout_s = limits.read_timeout_s
        after_fork = self.after_fork

        def post_fork(_server: Any, _worker: Any) -> None:
            after_fork()

        settings: dict[str, Any] = {
            "bind": [f"fd://{self.sock.fileno()}"],
            "workers": limits.workers,
            "threads": limits.threads,
            "worker_class": "dashboard.serving.BoundedThreadWorker",
            "worker_connections": limits.worker_connections,
            "keepalive": limits.keepalive_s,
            "timeout": 60,
            "graceful_timeout": 10,
            "limit_request_line": limits.limit_request_line,
            "limit_request_fields": limits.limit_request_fields,
            "limit_request_field_size": limits.limit_request_field_size,
            "preload_app": True,
            "post_fork": post_fork,
            "loglevel": self.log_level,
            "accesslog": None,
            "proc_name": "gpupool-console",
            # gunicorn >= 25.1 opens a control socket under ~/.gunicorn: nothing here
            # uses it, and a read-only home would fail the start.
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app
