"""The denial log keeps its records for the retention, pruned in bounded batches, on
SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from governance.contract import Reason
from governance.storage import ledger, retention, schema
from governance.storage.store import Store
from tests.support.ledger import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    try:
        yield s
    finally:
        s.close()


def denial(at: datetime, subject: str) -> ledger.Denial:
    return ledger.Denial(
        at=at,
        namespace="ml",
        department="ml",
        queue="train",
        sku="small",
        subject=subject,
        reason=Reason.FORBIDDEN.value,
        message="denied",
    )


def subjects(store: Store) -> list[str]:
    t = schema.denials
    with store.read() as conn:
        return list(conn.execute(sa.select(t.c.subject).order_by(t.c.id)).scalars())


def test_prune_deletes_only_what_is_past_the_retention_oldest_first_in_bounded_batches(
    store: Store,
) -> None:
    # recorded out of order: the prune goes by age, not by insertion
    old = [denial(T0 - timedelta(days=40 - i), f"old-{i}") for i in range(7)]
    new = [denial(T0 - timedelta(days=29), "new-0"), denial(T0, "new-1")]
    ledger.record_denials(store, [old[0], new[0], *old[1:4], new[1], *old[4:]])
    cutoff = T0 - timedelta(days=30)
    first = retention.prune_denials(store, older_than=cutoff, batch_rows=2, max_batches=2)
    assert first == 4  # two batches of two, then it stops for this round
    left = subjects(store)
    assert len(left) == 5 and "new-0" in left and "new-1" in left
    second = retention.prune_denials(store, older_than=cutoff, batch_rows=2, max_batches=10)
    assert second == 3
    assert sorted(subjects(store)) == ["new-0", "new-1"]
    assert retention.prune_denials(store, older_than=cutoff) == 0


def test_the_pruner_thread_keeps_the_log_within_its_retention(store: Store) -> None:
    now = [T0]
    ledger.record_denials(store, [denial(T0 - timedelta(days=d), f"d{d}") for d in (1, 5, 40)])
    pruner = retention.DenialPruner(
        store, retention=timedelta(days=30), interval_s=0.05, clock=lambda: now[0]
    )
    pruner.start()
    try:
        deadline = time.monotonic() + 20
        while pruner.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(subjects(store)) == ["d1", "d5"]
        now[0] = T0 + timedelta(days=27)  # d5 is now 32 days old
        rounds = pruner.rounds
        while pruner.rounds < rounds + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert subjects(store) == ["d1"]
        assert pruner.deleted == 2
    finally:
        pruner.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30d", timedelta(days=30), id="days"),
        pytest.param("12h", timedelta(hours=12), id="hours"),
        pytest.param("90m", timedelta(minutes=90), id="minutes"),
        pytest.param("3600s", timedelta(hours=1), id="seconds"),
        pytest.param("Forever", None, id="forever"),
    ],
)
def test_retention_durations(text: str, expected: timedelta | None) -> None:
    assert retention.parse_retention(text) == expected


@pytest.mark.parametrize("text", ["30", "0d", "1w", "-1d", "1.5h", ""])
def test_bad_retention_durations_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="such as 30d, 12h, 90m or 3600s, or 'forever'"):
        retention.parse_retention(text)
