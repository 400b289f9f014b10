"""Per-connection bounds for the webhook's HTTP server, and the caller's certificate.

uvicorn bounds concurrency (``limit_concurrency``: a 503 beyond it) and the idle time
between requests (``timeout_keep_alive``), but not how long a client may take to send a
request's headers, nor how large they may grow (httptools has no limit of its own):
2,000 TLS connections that sent part of their headers were held for as long as their
clients kept them open. :func:`protocol_class` gives uvicorn's httptools protocol the
missing bounds (:class:`ConnectionLimits`), the time to send the body included; the
body's size and the bytes held across connections are :class:`admission.app.Front`'s.

It also puts the TLS client certificate that the connection presented (verified by
:class:`admission.tls.ReloadingContext` against ``--client-ca``) into every request's
ASGI scope, as the ASGI TLS extension names it (``scope["extensions"]["tls"]``), so
that ``/mutate`` can require one while ``/healthz`` (the kubelet's probes present none)
does not.

The TLS handshake itself is bounded by asyncio (60 s): the application's protocol only
sees a connection once its handshake is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from governance.contract import Reason

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 5.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    """From a connection's start, and from the first byte of each further request on
    it, to the end of the request's headers; then the connection is closed (408). The
    API server sends a request's headers at once."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """From the end of a request's headers to the end of its body; then 408 and the
    connection is closed. The API server sends the body right after the headers."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """A request line and headers larger than this are refused (431) and the connection
    closed; an AdmissionReview's headers are a few hundred bytes."""

    @property
    def sweep_s(self) -> float:
        """How often the deadlines are checked: a fifth of the shorter timeout, so a
        client is cut off at most 20% late."""
        return max(0.05, min(self.header_timeout_s, self.body_timeout_s) / 5)


def client_certificate(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The ASGI TLS extension for ``transport``: ``client_cert_name`` (the verified
    client certificate's subject, RFC 4514, None when the client presented none) and
    ``client_cert_error`` (None: the handshake verifies what is presented, and fails
    otherwise)."""
    ssl_object = transport.get_extra_info("ssl_object")
    name = None
    if ssl_object is not None:
        peer = ssl_object.getpeercert()  # only a verified certificate is returned
        if peer:
            name = ",".join(
                f"{key}={value}" for rdn in reversed(peer.get("subject", ())) for key, value in rdn
            )
    return {
        "client_cert_name": name,
        "client_cert_chain": [],
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
        "server_cert": None,
    }


_HEADERS, _BODY = "headers", "body"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` and the TLS scope
    extension; :func:`protocol_class` makes one per server with its limits.

    The read deadlines are not a timer per request (a libuv timer armed and cancelled
    cost 4 us, and ``asyncio.timeout`` around the body 7 us, a fifth of a non-GPU
    admission's whole cost): each connection notes its deadline, and one sweep per
    server, every :attr:`ConnectionLimits.sweep_s` while it has connections, closes
    those past it."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _sweeping: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: float | None = None
        self._waiting_for = _HEADERS
        self._awaiting_headers = True
        self._header_bytes = 0
        self._tail = b""
        self._tls: dict[str, Any] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls = client_certificate(transport)
        self._expect(_HEADERS, self.limits.header_timeout_s)
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            self.loop.call_later(self.limits.sweep_s, self._sweep)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            if self._deadline is None:  # the first bytes of another request
                self._expect(_HEADERS, self.limits.header_timeout_s)
            # up to the blank line that ends the headers (a chunk may carry the body
            # too); the last bytes of the chunk before are kept, the line may straddle
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:]
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(431, b"Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        self._tail = b""
        self._expect(_BODY, self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = None  # idle until the next request: uvicorn's keep-alive timeout
        self._awaiting_headers = True

    def _expect(self, what: str, within_s: float) -> None:
        self._waiting_for = what
        self._deadline = self.loop.time() + within_s

    def _sweep(self) -> None:
        """Close the connections of this server past their deadline; again in a while,
        as long as there are connections."""
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                deadline = connection._deadline
                if deadline is not None and now > deadline:
                    connection._expired()
        cls = type(self)
        if self.connections:
            self.loop.call_later(self.limits.sweep_s, self._sweep)
        else:
            cls._sweeping = False

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._waiting_for == _HEADERS:
            self._refuse(408, b"Request Timeout")
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:  # answered without the body
            self.transport.close()
            return
        message = json.dumps(
            {
                "reason": Reason.REQUEST_TIMEOUT.value,
                "message": f"the request body did not arrive within "
                f"{self.limits.body_timeout_s:g} s",
            }
        ).encode()
        self._refuse(408, b"Request Timeout", message)

    def _refuse(self, status: int, reason: bytes, body: bytes = b"") -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        kind = b"content-type: application/json\r\n" if body else b""
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, reason, kind, len(body), body)
        )
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server (uvicorn's ``http=``), with its own limits and
    sweep."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "_sweeping": False},
    )


__all__ = [
    "ConnectionLimits",
    "GuardedHttpToolsProtocol",
    "client_certificate",
    "protocol_class",
]
