"""The webhook process's wiring that needs no server."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from admission import app as app_mod
from admission import server
from admission.metrics import Metrics

pytestmark = pytest.mark.unit


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The collector's thresholds before the test, restored after it."""
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_tune_gc_raises_only_the_young_generation_threshold(
    thresholds: tuple[int, int, int],
) -> None:
    server.tune_gc()
    _young, older, oldest = thresholds
    assert gc.get_threshold() == (server.YOUNG_COLLECTION_THRESHOLD, older, oldest)
    assert gc.isenabled()


# -- the ASGI front of /mutate ---------------------------------------------------------


def _front(max_body_bytes: int = 100) -> tuple[app_mod.Front, list[bytes]]:
    bodies: list[bytes] = []

    async def mutate(body: bytes) -> tuple[int, bytes]:
        bodies.append(body)
        return 200, b'{"ok":true}'

    api = FastAPI()
    front = app_mod.Front(
        api, mutate, max_body_bytes=max_body_bytes, metrics=Metrics(CollectorRegistry())
    )
    return front, bodies


def _call(front: app_mod.Front, messages: list[dict[str, Any]], headers: list[Any]) -> list[Any]:
    sent: list[Any] = []
    pending = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(pending)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/mutate", "headers": headers}
    asyncio.run(front(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_front_joins_a_body_sent_in_chunks() -> None:
    front, bodies = _front()
    sent = _call(
        front,
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"cd"},
        ],
        [],
    )
    assert bodies == [b"abcd"]
    assert sent[0]["status"] == 200
    assert (b"content-length", b"11") in sent[0]["headers"]
    assert sent[1] == {"type": "http.response.body", "body": b'{"ok":true}'}


def test_front_answers_nothing_to_a_client_that_went_away() -> None:
    front, bodies = _front()
    sent = _call(
        front,
        [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}],
        [],
    )
    assert sent == [] and bodies == []


@pytest.mark.parametrize(
    ("length", "status"),
    [(b"101", 413), (b"100000000000000000000", 413), (b"12x", 400), (b"-1", 400)],
)
def test_front_refuses_a_declared_length_over_the_limit_or_unreadable_before_reading(
    length: bytes, status: int
) -> None:
    front, bodies = _front()
    sent = _call(front, [], [(b"content-length", length)])  # receive() is never called
    assert sent[0]["status"] == status and bodies == []
    assert length.decode() in sent[1]["body"].decode()


def test_front_passes_a_body_of_exactly_the_limit() -> None:
    front, bodies = _front(max_body_bytes=4)
    sent = _call(front, [{"type": "http.request", "body": b"abcd"}], [(b"content-length", b"4")])
    assert sent[0]["status"] == 200 and bodies == [b"abcd"]
