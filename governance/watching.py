"""One list-then-watch loop with one backoff, for every component that follows pods.

Kubernetes' list/watch protocol: list everything (consistent at a resourceVersion),
then watch from that version. The API server ends a watch after its timeout (resume
from the last version applied), answers 410 Gone when the version is older than the
history it keeps (list again), and, when asked, sends BOOKMARK events that carry only a
newer version to resume from, so that the resume point keeps moving on a quiet cluster.

:func:`list_then_watch` is that protocol and nothing else. What to list and to watch,
and what to do with a list and with an event, are callables, so this module imports
no Kubernetes client and its tests drive it with a fake source. The reconciler
(:mod:`admission.reconciler`) and the exporter's node-scoped pod watch
(:mod:`exporter.pods`) both run on it. Its rules:

- the resume point (:class:`Cursor`) moves only once a list or an event has been
  applied, so an event whose handler failed (a store outage) comes again after the
  re-watch; every event that carries a version moves it, bookmarks included;
- :class:`Gone`, raised by any callable (a 410 answer, or a 410 ERROR event turned into
  an exception by ``on_event``): forget the resume point and list again at once;
- any other exception: wait with exponential backoff and full jitter
  (:class:`Backoff`), then resume from the last version applied (or list again, if the
  list itself failed). The backoff starts over after a successful list and after a
  watch that the server ended normally;
- after a watch that ended normally, pause ``rewatch_pause_s`` so that a server that
  closes watches at once is not hammered;
- ``stop`` ends the loop promptly: every wait is ``stop.wait``, and nothing more is
  applied once it is set (a reconciler that lost its Lease must not act), though a
  watch read that blocks ends only when the server sends or closes.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

_log = logging.getLogger("gpupool.watching")

RELIST_STARTUP = "startup"
"""Why a list is made (``on_relist``'s argument): the first one."""
RELIST_GONE = "gone"
"""The watch's version was too old (410 Gone)."""
RELIST_ERROR = "error"
"""The previous list, or applying it, failed."""


class Versioned(Protocol):
    """A list or an event: it says which resourceVersion to resume from after it."""

    @property
    def resource_version(self) -> str: ...


class Cursor(Protocol):
    """Where the next watch resumes; None: list first. The loop moves it; its owner may
    read it (has the first list been applied?) or clear it (force a re-list)."""

    resource_version: str | None


ItemT = TypeVar("ItemT")
ListT = TypeVar("ListT", bound=Versioned)
EventT = TypeVar("EventT", bound=Versioned)


@dataclass(frozen=True, kw_only=True)
class Listing(Generic[ItemT]):
    """A full list, consistent at ``resource_version``."""

    items: tuple[ItemT, ...]
    resource_version: str


@dataclass(kw_only=True)
class ResumePoint:
    """A :class:`Cursor` of its own, for a watcher with no state to keep it in."""

    resource_version: str | None = None


class Gone(Exception):
    """HTTP 410 Gone: the resourceVersion is too old to watch from; list again."""


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base*2**n)).

    Full jitter spreads the retries of many watchers (an exporter per node) that an API
    server restart broke at the same instant.
    """

    def __init__(
        self, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def list_then_watch(
    *,
    list_: Callable[[], ListT],
    watch: Callable[[str], Iterable[EventT]],
    on_list: Callable[[ListT], None],
    on_event: Callable[[EventT], None],
    stop: threading.Event,
    cursor: Cursor | None = None,
    backoff: Backoff | None = None,
    on_relist: Callable[[str], None] | None = None,
    on_watch_end: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    wait: Callable[[float], object] | None = None,
    rewatch_pause_s: float = 1.0,
    max_rounds: int | None = None,
    name: str = "watch",
    log: logging.Logger = _log,
) -> None:
    """List, then watch from the list's version, until ``stop`` is set (see the module).

    ``list_`` lists everything; ``watch(version)`` yields the events after ``version``
    until the server ends the watch; ``on_list`` and ``on_event`` apply them (raise
    :class:`Gone` to list again). ``cursor`` keeps the resume point between calls
    (default: a fresh one, so the loop starts with a list). Hooks, for metrics:
    ``on_relist(reason)`` before each list (:data:`RELIST_STARTUP`,
    :data:`RELIST_GONE`, :data:`RELIST_ERROR`), ``on_watch_end()`` when the server ended
    a watch normally (every event up to then has been applied), ``on_error(exc)``
    before each backoff. ``wait(seconds)`` is ``stop.wait`` unless a test replaces it.
    A round is one list-then-watch or watch; ``max_rounds`` bounds them for tests.
    """
    position: Cursor = ResumePoint() if cursor is None else cursor
    backoff = backoff or Backoff()
    pause = wait or stop.wait
    reason = RELIST_STARTUP
    rounds = 0
    while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
        rounds += 1
        try:
            version = position.resource_version
            if version is None:
                if on_relist is not None:
                    on_relist(reason)
                listing = list_()
                if stop.is_set():
                    return
                on_list(listing)
                version = position.resource_version = listing.resource_version
                backoff.reset()
            for event in watch(version):
                if stop.is_set():
                    return
                on_event(event)
                if event.resource_version:
                    position.resource_version = event.resource_version
            # The server ended the watch (its timeout) after the events it had; a
            # broken watch raises instead.
            if on_watch_end is not None:
                on_watch_end()
            backoff.reset()
            pause(rewatch_pause_s)
        except Gone as exc:
            log.info("%s: version too old (%s); listing again", name, exc)
            position.resource_version = None
            reason = RELIST_GONE
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            delay_s = backoff.next_delay()
            log.warning(
                "%s failed: %s: %s; retrying in %.1f s", name, type(exc).__name__, exc, delay_s
            )
            if position.resource_version is None:
                reason = RELIST_ERROR
            pause(delay_s)
