"""A TLS server context whose certificate follows its files (cert-manager rotates them).

The server's listening socket keeps one :class:`ssl.SSLContext` for its lifetime. Its
``sni_callback`` runs on every handshake (OpenSSL calls it whether or not the client
sent a server name) and hands the handshake the *current* context, which is swapped as
a whole when the files change: a connection either finishes with the old certificate
or starts with the new one, and no request is dropped.

A change is picked up by polling the files' identity (inode, size, mtime: cert-manager
swaps a symlink, editors rewrite in place) every ``interval_s``. A pair that does not
load (the key written but not yet the certificate, a mismatched pair) is ignored until
the next change: the last good pair keeps serving.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class ReloadingContext:
    """Owns the listening context and the current one; :meth:`check` reloads."""

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> None:
        self.cert = Path(cert)
        self.key = Path(key)
        self._stamps = (_stamp(self.cert), _stamp(self.key))
        self.current = _context(self.cert, self.key)
        self.reloads = 0
        self.server = _context(self.cert, self.key)
        self.server.sni_callback = self._pick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick(
        self, sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        sock.context = self.current

    def check(self) -> bool:
        """Reload if the files changed and load; True when a new pair was loaded."""
        try:
            stamps = (_stamp(self.cert), _stamp(self.key))
        except OSError as exc:
            log.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return False
        if stamps == self._stamps:
            return False
        try:
            fresh = _context(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("new TLS pair does not load yet, keeping the current one: %s", exc)
            return False
        self.current = fresh
        self._stamps = stamps
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def start(self, interval_s: float = 1.0) -> None:
        """Poll the files in a daemon thread until :meth:`stop`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.check()

        self._thread = threading.Thread(target=run, name="tls-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
