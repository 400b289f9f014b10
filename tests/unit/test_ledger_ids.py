"""Allocation ids: unique, of the documented form, and ordered by creation time."""

from __future__ import annotations

import re
import time

import pytest

from governance.storage import ledger

pytestmark = pytest.mark.unit


def test_ids_are_alloc_and_32_hex_digits_and_unique() -> None:
    ids = [ledger.new_allocation_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"alloc-[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_in_a_later_millisecond_sort_later() -> None:
    earlier = [ledger.new_allocation_id() for _ in range(50)]
    time.sleep(0.002)
    later = [ledger.new_allocation_id() for _ in range(50)]
    assert max(earlier) < min(later)
    stamp = int(later[0][len("alloc-") : len("alloc-") + 12], 16)
    assert abs(stamp - time.time_ns() // 1_000_000) < 60_000
