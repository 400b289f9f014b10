"""The webhook's HTTP edge around :class:`~admission.admitter.Admitter`: ``/mutate`` on
raw ASGI (:class:`Front`), the other endpoints on a FastAPI app behind it.

- ``POST /mutate``: an AdmissionReview (admission.k8s.io/v1) in, the AdmissionReview
  answer out. A body that is not one gets HTTP 400 with the reason; a body over
  ``max_body_bytes`` gets 413, one that does not arrive within the body timeout 408,
  one that would take the bodies held at once past their bound 503 (Overloaded), and a
  caller without a verified client certificate, when one is required, 401; every
  decision, allowed or denied, is HTTP 200 (the denial's code and reason are in the
  review's status). An unexpected error denies the pod (reason InternalError): never
  an HTTP 500, which the API server would turn into an unexplained failure.
- ``GET /healthz``: the process serves (never touches the store; no client
  certificate asked, since the kubelet's probes have none).
- ``GET /readyz``: 200 when the store answers within a second and holds an
  organisation, else 503 with the reason.
- ``GET /metrics``: Prometheus exposition of the registry passed in.

Requests that need no store (non-GPU pods, UPDATEs, other kinds) are answered on the
event loop. A GPU pod CREATE is decided on the loop too, and its ledger writes are
group-committed (:mod:`admission.writer`): on the loop itself for SQLite, which never
waits there for a lock (a group that finds the lock taken goes to a writer thread);
for PostgreSQL on the loop too, over psycopg's asynchronous connection (every
statement awaited), and its reads run in worker threads. So a slow or hung store never
stalls ``/healthz`` or the non-GPU path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from admission import review
from admission.admitter import Admitter
from admission.metrics import Metrics
from governance.contract import Reason
from governance.errors import StoreError
from governance.storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""An AdmissionReview carries the object and the old object; etcd caps an object at
1.5 MiB, so twice that and some room."""
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""16 bodies of the largest size at once; an AdmissionReview is usually under 20 KiB."""


class Front:
    """The ASGI application that uvicorn serves: ``/mutate`` is answered here, on raw
    ASGI messages; everything else (``/healthz``, ``/readyz``, ``/metrics``, unknown
    paths, the lifespan) goes to the FastAPI app :attr:`api`.

    An admission is bytes in, bytes out, and Starlette's route for it cost as much as
    the webhook's decision for a non-GPU pod: its middleware stack, router, Request and
    Response objects took about 0.1 ms a request (a trivial endpoint served this way
    answered 7,300-8,100 requests/s against 4,000-4,600 on a Starlette route, wrk over
    HTTPS, same machine and run). So the front reads the body itself, bounded by
    ``max_body_bytes`` (413 beyond, from the Content-Length header before reading
    when there is one), and sends the answer in two messages."""

    def __init__(
        self,
        api: FastAPI,
        mutate: Callable[[bytes], Awaitable[tuple[int, bytes]]],
        *,
        max_body_bytes: int,
        metrics: Metrics,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        require_client_cert: bool = False,
    ) -> None:
        self.api = api
        self.mutate = mutate
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.max_buffered_bytes = max_buffered_bytes
        """Bytes of request bodies held at once, every connection together (503
        Overloaded past it): with 100 connections each sending 4 MiB - 1 and stalling,
        the process grew from 80 to 548 MiB."""
        self.require_client_cert = require_client_cert
        """Answer /mutate only to a caller whose client certificate the server verified
        (--client-ca): anyone else is refused with 401 Unauthenticated."""
        self.buffered_bytes = 0
        self.buffered_peak_bytes = 0
        """The most :attr:`buffered_bytes` ever held (never above the bound)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MUTATE_PATH:
            await self.api(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _send(
                send,
                405,
                _error_body(Reason.MALFORMED_REVIEW, f"{MUTATE_PATH} takes POST only"),
                extra=((b"allow", b"POST"),),
            )
            return
        if self.require_client_cert and not _client_cert_name(scope):
            await self._refuse(
                send,
                401,
                Reason.UNAUTHENTICATED,
                "this webhook answers only the Kubernetes API server: present a client "
                "certificate signed by the CA given to gpupool webhook --client-ca (the "
                "API server's admission kubeconfig for webhooks names it)",
            )
            return
        held = [0]  # bytes of this request counted in buffered_bytes
        try:
            body = await self._body(scope, receive, held)
            if isinstance(body, _Refusal):
                await self._refuse(send, *body)
                return
            if body is None:  # the client went away before sending the whole body
                return
            status, content = await self.mutate(body)
            await _send(send, status, content)
        finally:
            self.buffered_bytes -= held[0]

    async def _refuse(self, send: Send, status: int, reason: Reason, message: str) -> None:
        """An error answer before any decision; the connection is closed after it (its
        body may be unread)."""
        self.metrics.observe("unknown", "denied", reason.value, 0.0)
        await _send(send, status, _error_body(reason, message), extra=_CLOSE)

    def _hold(self, held: list[int], size: int) -> _Refusal | None:
        """Count ``size`` more bytes of this request as held, if the bound allows."""
        if self.buffered_bytes + size > self.max_buffered_bytes:
            return _Refusal(
                503,
                Reason.OVERLOADED,
                f"the webhook holds {self.buffered_bytes} bytes of request bodies, and "
                f"{size} more would pass its bound of {self.max_buffered_bytes}: retry",
            )
        self.buffered_bytes += size
        held[0] += size
        self.buffered_peak_bytes = max(self.buffered_peak_bytes, self.buffered_bytes)
        return None

    async def _body(
        self, scope: Scope, receive: Receive, held: list[int]
    ) -> bytes | _Refusal | None:
        """The request body; a refusal when it is over a limit; None when the client
        disconnected first (or was cut off: the time a body may take is bounded by the
        connection, :mod:`admission.connection`). The declared length is counted as
        held before reading; a chunked body as it streams in."""
        limit = self.max_body_bytes
        length = Headers(scope=scope).get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return _Refusal(
                400,
                Reason.MALFORMED_REVIEW,
                f"the Content-Length header {length!r} is not a number of bytes",
            )
        if length is not None and int(length) > limit:
            return _Refusal(
                413,
                Reason.MALFORMED_REVIEW,
                f"request body of {length} bytes is over the limit of {limit} bytes",
            )
        declared = int(length) if length is not None else None
        if declared is not None and (refused := self._hold(held, declared)) is not None:
            return refused
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit or (declared is not None and size > declared):
                return _Refusal(
                    413, Reason.MALFORMED_REVIEW, f"request body is over the limit of {limit} bytes"
                )
            if declared is None and (refused := self._hold(held, len(chunk))):
                return refused
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Refusal(NamedTuple):
    status: int
    reason: Reason
    message: str


def _client_cert_name(scope: Scope) -> str | None:
    """The verified client certificate's subject (admission.connection puts it there)."""
    tls = scope.get("extensions", {}).get("tls") or {}
    name = tls.get("client_cert_name")
    return name if isinstance(name, str) else None


_CLOSE = ((b"connection", b"close"),)

API_SERVER_REQUEST_BYTES = 3 * 1024 * 1024
"""The largest request body the Kubernetes API server accepts (its MaxRequestBodyBytes)."""
MAX_CREATE_REVIEW_BYTES = API_SERVER_REQUEST_BYTES + 64 * 1024
"""A CREATE's review carries the pod once (no oldObject) and an envelope of a few KiB:
anything larger holds a pod that the API server would not have taken, so it did not
send it. UPDATEs carry two objects and keep the body limit (``max_body_bytes``)."""


def _too_large(parsed: review.Request, size: int) -> review.Response:
    return review.Response(
        allowed=False,
        reason=Reason.INVALID_REQUEST,
        message=(
            f"this CREATE review is {size} bytes: its pod is larger than the "
            f"{API_SERVER_REQUEST_BYTES}-byte request the Kubernetes API server accepts, "
            f"so it did not come from the API server (request by {parsed.user or 'nobody'})"
        ),
    )


MUTATE_PATH = "/mutate"

DEFAULT_READY_TIMEOUT_S = 1.0
"""/readyz answers "not ready" when the store has not answered its ping by then (the
kubelet's probes time out after 1 s unless told otherwise)."""


class _StoreProbe:
    """The readiness question for /readyz (``unready``: the store answers and holds an
    organisation, :meth:`Admitter.unready_reason`): one at a time, in a worker thread,
    awaited at most ``timeout_s``. Against a hung store every probe would otherwise
    leave a thread behind it; here the probes that come while one is stuck wait on it."""

    def __init__(self, unready: Callable[[], str | None], *, timeout_s: float) -> None:
        self.unready = unready
        self.timeout_s = timeout_s
        self._ping: asyncio.Task[str | None] | None = None

    async def check(self) -> str | None:
        """None when ready; else why not."""
        task = self._ping
        if task is None or task.done():
            task = self._ping = asyncio.get_running_loop().create_task(
                anyio.to_thread.run_sync(self.unready, abandon_on_cancel=True)
            )
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except TimeoutError:
            return f"the governance store did not answer within {self.timeout_s:g} s"
        except StoreError as exc:
            return str(exc)


_JSON_HEADERS = ((b"content-type", b"application/json"),)


def _error_body(reason: Reason, message: str) -> bytes:
    return json.dumps({"reason": reason.value, "message": message}).encode()


async def _send(
    send: Send, status: int, content: bytes, *, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *_JSON_HEADERS,
                (b"content-length", str(len(content)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


def create_app(
    admitter: Admitter,
    *,
    store: Store,
    registry: CollectorRegistry,
    metrics: Metrics | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    require_client_cert: bool = False,
) -> Front:
    metrics = metrics or Metrics(registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # the ledger writes still queued are committed before the process ends
        await admitter.aclose()
        await anyio.to_thread.run_sync(admitter.close)

    app = FastAPI(
        title="gpupool admission webhook",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    async def mutate(body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) of the answer to one request body."""
        started = time.perf_counter()
        try:
            if admitter.plain(body):  # asks for no GPU: the head is enough
                parsed = review.parse_review(body, head_only=True)
                answer = review.Response(allowed=True, reason=Reason.NOT_GPU)
            elif (
                len(body) > MAX_CREATE_REVIEW_BYTES
                and (parsed := review.parse_review(body, head_only=True)).operation == "CREATE"
            ):
                answer = _too_large(parsed, len(body))
            else:
                parsed = review.parse_review(body)
                quick, pod = admitter.quick(parsed)
                if quick is None:
                    assert pod is not None
                    quick = await admitter.admit_async(parsed, pod)
                answer = quick
        except review.MalformedReview as exc:
            metrics.observe(
                "unknown", "denied", Reason.MALFORMED_REVIEW.value, time.perf_counter() - started
            )
            return 400, _error_body(Reason.MALFORMED_REVIEW, exc.reason)
        except Exception:
            log.exception("admission request failed")
            answer = review.Response(
                allowed=False,
                reason=Reason.INTERNAL_ERROR,
                message=(
                    "gpupool's webhook failed on this request (the error is in its log); "
                    "the pod was not admitted. Retry; if it persists, tell the platform "
                    "admins."
                ),
            )
        content = review.render(parsed.uid, answer, api_version=parsed.api_version)
        metrics.observe(
            parsed.operation, answer.decision, answer.reason.value, time.perf_counter() - started
        )
        return 200, content

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    probe = _StoreProbe(admitter.unready_reason, timeout_s=ready_timeout_s)

    @app.get("/readyz")
    async def readyz() -> Response:
        problem = await probe.check()
        if problem is not None:
            return PlainTextResponse(f"not ready: {problem}", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        data = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    return Front(
        app,
        mutate,
        max_body_bytes=max_body_bytes,
        metrics=metrics,
        max_buffered_bytes=max_buffered_bytes,
        require_client_cert=require_client_cert,
    )
