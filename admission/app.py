"""The webhook's HTTP edge: FastAPI routes around :class:`~admission.admitter.Admitter`.

- ``POST /mutate``: an AdmissionReview (admission.k8s.io/v1) in, the AdmissionReview
  answer out. A body that is not one gets HTTP 400 with the reason; a body over
  ``max_body_bytes`` gets 413; every decision, allowed or denied, is HTTP 200 (the
  denial's code and reason are in the review's status). An unexpected error denies
  the pod (reason InternalError): never an HTTP 500, which the API server would turn
  into an unexplained failure.
- ``GET /healthz``: the process serves (never touches the store).
- ``GET /readyz``: 200 when the store answers, else 503 with the reason.
- ``GET /metrics``: Prometheus exposition of the registry passed in.

Requests that need no store (non-GPU pods, UPDATEs, other kinds) are answered on the
event loop. A GPU pod CREATE is decided on the loop too, and its ledger writes are
group-committed (:mod:`governance.writer`): on the loop itself for SQLite, which never
waits there for a lock (a group that finds the lock taken goes to a writer thread);
for PostgreSQL the groups form on the loop and threads write them, and its reads run
in worker threads. So a slow or hung store never stalls ``/healthz`` or the non-GPU
path.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from admission import review
from admission.admitter import Admitter
from admission.metrics import Metrics
from governance.contract import Reason
from governance.errors import StoreError
from governance.store import Store

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""An AdmissionReview carries the object and the old object; etcd caps an object at
1.5 MiB, so twice that and some room."""

JSON = "application/json"


def _error(status: int, reason: Reason, message: str) -> Response:
    return Response(
        json.dumps({"reason": reason.value, "message": message}).encode(),
        status_code=status,
        media_type=JSON,
    )


def create_app(
    admitter: Admitter,
    *,
    store: Store,
    registry: CollectorRegistry,
    metrics: Metrics | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    metrics = metrics or Metrics(registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # the ledger writes still queued are committed before the process ends
        await anyio.to_thread.run_sync(admitter.close)

    app = FastAPI(
        title="gpupool admission webhook",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    async def read_body(request: Request) -> bytes | Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return _error(
                413,
                Reason.MALFORMED_REVIEW,
                f"request body of {length} bytes is over the limit of {max_body_bytes} bytes",
            )
        if length is not None:  # bounded by the header checked above
            return await request.body()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(
                    413,
                    Reason.MALFORMED_REVIEW,
                    f"request body is over the limit of {max_body_bytes} bytes",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request)
        if isinstance(body, Response):
            metrics.observe("unknown", "denied", Reason.MALFORMED_REVIEW.value, 0.0)
            return body
        try:
            if admitter.plain(body):  # asks for no GPU: the head is enough
                parsed = review.parse_review(body, head_only=True)
                answer = review.Response(allowed=True, reason=Reason.NOT_GPU)
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
            return _error(400, Reason.MALFORMED_REVIEW, exc.reason)
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
        return Response(content, media_type=JSON)

    # A plain Starlette route: the body is bytes in, bytes out, so FastAPI's request
    # machinery (dependency solving, validation, its per-request exit stack) has
    # nothing to do and would cost each admission tens of microseconds.
    app.add_route("/mutate", mutate, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await anyio.to_thread.run_sync(store.ping)
        except StoreError as exc:
            return PlainTextResponse(f"not ready: {exc}", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        data = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    return app
