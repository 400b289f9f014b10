"""Recorded watch streams, replayed as a server would send them (no Kubernetes here:
the reconciler's raw pod API, the exporter's ``Watch().stream`` stand-in and the fake
source of the list-then-watch loop's tests all replay through :func:`next_stream`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

Recording = Sequence[T | Exception] | Exception
"""One watch request's answer: its events (an exception among them is raised where it
stands, as a broken connection would be), or an exception instead of a stream (an
error status)."""


def next_stream(recordings: list[Recording[T]]) -> Iterator[T]:
    """Answer one watch request from ``recordings`` (consumed in order): an exception
    recorded instead of a stream is raised now; after the last recording, nothing (the
    server's timeout)."""
    if not recordings:
        return iter(())
    recording = recordings.pop(0)
    if isinstance(recording, Exception):
        raise recording
    return _replay(recording)


def _replay(stream: Sequence[T | Exception]) -> Iterator[T]:
    for item in stream:
        if isinstance(item, Exception):
            raise item
        yield item
