"""Waiting for something a process or a thread does, with a deadline that says what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """``check()``'s first truthy answer; AssertionError naming ``what`` (and the last
    answer or exception) when ``timeout_s`` passes first. An exception from ``check``
    counts as "not yet" (a page re-rendering, a server still starting)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
