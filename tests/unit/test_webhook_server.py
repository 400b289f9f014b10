"""The webhook process's wiring that needs no server."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from admission import server

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
