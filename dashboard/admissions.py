"""Admissions and denials counted in the governance store, for the overview.

The ledger's readers return whole entries (:func:`governance.ledger.list_allocations`);
the overview only needs how many pods were admitted and denied (by reason) since a
given time, for the viewer's departments. Reading thousands of entries to count them
cost the overview callback about 300 ms at 3,000 GPUs, so these are two ``COUNT``
queries on the ledger's tables instead. (Candidates to move into
:mod:`governance.ledger`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from governance import schema
from governance.store import Store


def counts(
    store: Store, *, since: datetime, departments: Iterable[str] | None
) -> tuple[int, list[tuple[str, int]]]:
    """(pods admitted since ``since``, [(denial reason, count)] most frequent first)."""
    allocations = schema.allocations
    denials = schema.denials
    admitted = sa.select(sa.func.count()).where(allocations.c.created_at >= since)
    denied = (
        sa.select(denials.c.reason, sa.func.count())
        .where(denials.c.at >= since)
        .group_by(denials.c.reason)
    )
    if departments is not None:
        wanted = sorted(departments)
        admitted = admitted.where(allocations.c.department.in_(wanted))
        denied = denied.where(denials.c.department.in_(wanted))
    with store.read() as conn:
        n = int(conn.execute(admitted).scalar() or 0)
        reasons = [(str(reason), int(count)) for reason, count in conn.execute(denied)]
    reasons.sort(key=lambda x: (-x[1], x[0]))
    return n, reasons
