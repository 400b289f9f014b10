"""The one list-then-watch loop and its backoff, on a fake source (no Kubernetes here:
the reconciler's and the exporter's own tests run it behind their adapters)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from governance.watching import (
    RELIST_ERROR,
    RELIST_GONE,
    RELIST_STARTUP,
    Backoff,
    Gone,
    Listing,
    ResumePoint,
    list_then_watch,
)
from tests.support.recorded import Recording, next_stream

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Ev:
    """A watch event of the fake source: ``key`` set to ``value`` (None: deleted)."""

    type: str
    key: str = ""
    value: str | None = None
    resource_version: str = ""
    code: int | None = None


def put(key: str, value: str, version: str) -> Ev:
    return Ev("MODIFIED", key, value, version)


def bookmark(version: str) -> Ev:
    return Ev("BOOKMARK", resource_version=version)


def expired() -> Ev:
    return Ev("ERROR", code=410)


Stream = Sequence[Ev | Exception]


@dataclass
class FakeSource:
    """Answers list and watch requests from recordings; keeps what was applied.

    ``lists``: one answer per list (a listing or an exception); ``watches``: one
    stream per watch request (events, an exception raised in the stream as a broken
    connection would, or an exception instead of a stream). A watch after the last
    recorded one yields nothing (the server's timeout)."""

    lists: list[Listing[tuple[str, str]] | Exception]
    watches: list[Recording[Ev]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    listed: int = 0
    watched_from: list[str] = field(default_factory=list)
    applied: list[Ev] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    relists: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    watch_ends: int = 0
    fail_applying: set[str] = field(default_factory=set)
    """Versions whose event the handler fails on, once each (a store outage)."""
    stop: threading.Event = field(default_factory=threading.Event)
    stop_after_list: bool = False
    """Set ``stop`` while the list request is under way (leadership lost meanwhile)."""
    stop_after_events: int | None = None
    """Set ``stop`` once this many events have been applied."""

    def list_(self) -> Listing[tuple[str, str]]:
        self.listed += 1
        answer = self.lists.pop(0)
        if self.stop_after_list:
            self.stop.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self, version: str) -> Iterator[Ev]:
        self.watched_from.append(version)
        return next_stream(self.watches)

    def on_list(self, listing: Listing[tuple[str, str]]) -> None:
        self.state = dict(listing.items)

    def on_event(self, event: Ev) -> None:
        if event.resource_version in self.fail_applying:
            self.fail_applying.discard(event.resource_version)
            raise OSError("store unavailable")
        if event.type == "ERROR":
            if event.code == 410:
                raise Gone("too old resource version")
            raise RuntimeError(f"watch error {event.code}")
        self.applied.append(event)
        if self.stop_after_events == len(self.applied):
            self.stop.set()
        if event.type == "MODIFIED" and event.value is not None:
            self.state[event.key] = event.value
        elif event.type == "DELETED":
            self.state.pop(event.key, None)

    def run(
        self,
        rounds: int,
        *,
        cursor: ResumePoint | None = None,
        backoff: Backoff | None = None,
    ) -> ResumePoint:
        cursor = cursor or ResumePoint()
        list_then_watch(
            list_=self.list_,
            watch=self.watch,
            on_list=self.on_list,
            on_event=self.on_event,
            stop=self.stop,
            cursor=cursor,
            backoff=backoff or Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(3)),
            on_relist=self.relists.append,
            on_watch_end=self._watch_ended,
            on_error=lambda exc: self.errors.append(type(exc).__name__),
            wait=self.waits.append,
            rewatch_pause_s=0.25,
            max_rounds=rounds,
        )
        return cursor

    def _watch_ended(self) -> None:
        self.watch_ends += 1


def listing(version: str, **items: str) -> Listing[tuple[str, str]]:
    return Listing(items=tuple(items.items()), resource_version=version)


def test_lists_then_watches_from_the_lists_version_and_resumes_from_the_last_event() -> None:
    source = FakeSource(
        lists=[listing("10", a="1", b="1")],
        watches=[[put("a", "2", "11"), Ev("DELETED", "b", None, "12")], [put("c", "1", "13")]],
    )
    cursor = source.run(rounds=3)
    assert source.listed == 1
    assert source.watched_from == ["10", "12", "13"]
    assert source.state == {"a": "2", "c": "1"}
    assert cursor.resource_version == "13"
    assert source.relists == [RELIST_STARTUP]
    assert source.watch_ends == 3
    assert source.waits == [0.25, 0.25, 0.25]  # the pause after each normal end, no backoff


def test_a_later_call_resumes_from_the_cursor_without_listing() -> None:
    first = FakeSource(lists=[listing("5", a="1")])
    cursor = first.run(rounds=1)
    second = FakeSource(lists=[], watches=[[put("a", "9", "6")]])
    second.run(rounds=1, cursor=cursor)
    assert (second.listed, second.watched_from, cursor.resource_version) == (0, ["5"], "6")


@pytest.mark.parametrize("how", ["error-event", "answer-to-the-watch"])
def test_gone_mid_watch_lists_again_at_once_and_watches_from_the_new_list(how: str) -> None:
    first: Stream = [put("a", "2", "21"), expired(), put("a", "never", "22")]
    streams: list[Recording[Ev]] = (
        [first] if how == "error-event" else [first[:1], Gone("410 Expired")]
    )
    source = FakeSource(
        lists=[listing("20", a="1", b="1"), listing("40", a="3")],
        watches=[*streams, [put("c", "1", "41")]],
    )
    cursor = source.run(rounds=4 if how == "answer-to-the-watch" else 3)
    assert source.listed == 2
    assert source.relists == [RELIST_STARTUP, RELIST_GONE]
    # the re-list is the truth: b went while the watch was down; the stale event after
    # the 410 was never applied
    assert source.state == {"a": "3", "c": "1"}
    assert "never" not in [e.value for e in source.applied]
    assert source.watched_from[-2:] == ["40", "41"]
    assert cursor.resource_version == "41"
    assert source.errors == []
    assert 0.25 in source.waits and all(w == 0.25 for w in source.waits)  # no backoff


def test_errors_back_off_with_jitter_resume_from_the_last_applied_version_and_reset() -> None:
    source = FakeSource(
        lists=[ConnectionRefusedError("api down"), listing("60", a="1")],
        watches=[
            [put("a", "2", "61"), ConnectionResetError("connection reset by peer")],
            RuntimeError("HTTP 500"),
            [Ev("ERROR", code=500)],
            [put("a", "3", "62")],
            RuntimeError("HTTP 503"),
        ],
    )
    cursor = source.run(rounds=6)
    assert source.listed == 2  # once failed, once listed; never again after that
    assert source.relists == [RELIST_STARTUP, RELIST_ERROR]
    assert source.watched_from == ["60", "61", "61", "61", "62"]
    assert source.state == {"a": "3"} and cursor.resource_version == "62"
    assert source.errors == [
        "ConnectionRefusedError",
        "ConnectionResetError",
        "RuntimeError",
        "RuntimeError",
        "RuntimeError",
    ]
    # the list failed: attempt 0; the list succeeded (reset), then three watch errors in
    # a row: attempts 0, 1, 2; a watch ended normally (reset, pause); then attempt 0
    backoffs = [w for w in source.waits if w != 0.25]
    ceilings = [1.0, 1.0, 2.0, 4.0, 1.0]
    assert len(backoffs) == len(ceilings)
    assert all(0 <= w <= c for w, c in zip(backoffs, ceilings, strict=True))
    assert len(set(backoffs)) == len(backoffs)  # jittered
    assert source.waits.index(0.25) == 4  # the pause comes after the fourth backoff


def test_an_event_that_failed_to_apply_comes_again_after_the_rewatch() -> None:
    source = FakeSource(
        lists=[listing("1")],
        watches=[
            [put("a", "1", "2"), put("a", "2", "3"), put("a", "3", "4")],
            [put("a", "2", "3"), put("a", "3", "4")],
        ],
        fail_applying={"3"},
    )
    cursor = source.run(rounds=2)
    assert source.watched_from == ["1", "2"]  # not past the event that failed
    assert source.state == {"a": "3"} and cursor.resource_version == "4"
    assert source.errors == ["OSError"]


def test_bookmarks_move_the_resume_point() -> None:
    source = FakeSource(lists=[listing("100")], watches=[[bookmark("150")], [bookmark("175")], []])
    cursor = source.run(rounds=3)
    assert source.watched_from == ["100", "150", "175"]
    assert source.listed == 1
    assert cursor.resource_version == "175"
    assert [e.type for e in source.applied] == ["BOOKMARK", "BOOKMARK"]


def test_an_event_without_a_version_leaves_the_resume_point() -> None:
    source = FakeSource(lists=[listing("7")], watches=[[Ev("MODIFIED", "a", "1")], []])
    cursor = source.run(rounds=2)
    assert source.watched_from == ["7", "7"]
    assert cursor.resource_version == "7" and source.state == {"a": "1"}


def test_nothing_is_applied_once_stop_is_set() -> None:
    source = FakeSource(
        lists=[listing("1")],
        watches=[[put("a", "1", "2"), put("a", "2", "3")]],
        stop_after_events=1,
    )
    cursor = source.run(rounds=5)
    assert source.state == {"a": "1"} and cursor.resource_version == "2"
    assert source.watch_ends == 0 and source.waits == []


def test_a_list_that_returns_after_stop_is_not_applied() -> None:
    source = FakeSource(lists=[listing("1", a="1")], stop_after_list=True)
    cursor = source.run(rounds=5)
    assert source.state == {} and cursor.resource_version is None
    assert source.watched_from == []


class _Ceiling(random.Random):
    """Always the longest wait that full jitter allows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_stop_during_a_backoff_ends_the_loop_promptly() -> None:
    stop = threading.Event()
    failed = threading.Event()

    def down() -> Listing[str]:
        raise ConnectionRefusedError("api down")

    def note(exc: Exception) -> None:
        failed.set()

    def never(version: str) -> Iterator[Ev]:
        raise AssertionError("no watch without a list")

    worker = threading.Thread(
        target=list_then_watch,
        kwargs={
            "list_": down,
            "watch": never,
            "on_list": lambda listing: None,
            "on_event": lambda event: None,
            "stop": stop,
            "backoff": Backoff(base_s=60.0, cap_s=60.0, rng=_Ceiling()),
            "on_error": note,
        },
        daemon=True,
    )
    worker.start()
    assert failed.wait(10), "the list never failed"
    started = time.monotonic()
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5  # not the 60 s backoff


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(40)]
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(40)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 4.0  # it does grow past the base...
    assert len(set(delays)) == len(delays)  # ...and is jittered
    backoff.reset()
    assert backoff.next_delay() <= 0.5
