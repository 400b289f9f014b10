"""The Casbin policies of the configuration in force, in the store's ``casbin_rule``
table: :func:`governance.storage.apply.apply` writes them with each revision, and an
:class:`~governance.rbac.Authorizer` reads them through :class:`StoreAdapter`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from casbin import persist
from sqlalchemy.engine import Connection

from governance.rbac import Authorizer, Policy
from governance.storage import schema
from governance.storage.store import Store


class StoreAdapter(persist.Adapter):  # type: ignore[misc]
    """Casbin policies in the store's ``casbin_rule`` table (load only; writes go
    through :func:`write` inside ``apply``'s transaction)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load_policy(self, model: Any) -> None:
        for rule in read(self.store):
            sec = rule[0][0]
            assertion = model.model.get(sec, {}).get(rule[0])
            if assertion is not None:
                assertion.policy.append(list(rule[1:]))


def authorizer(store: Store) -> Authorizer:
    """An authorizer over the policies stored in ``store`` (read now)."""
    return Authorizer(StoreAdapter(store))


def read(store: Store) -> list[Policy]:
    t = schema.casbin_rule
    with store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.ptype, t.c.v0, t.c.v1, t.c.v2, t.c.v3, t.c.v4, t.c.v5).order_by(t.c.id)
        ).all()
    width = {"p": 4, "g": 3}
    return [tuple(row[: 1 + width.get(row[0][0], 6)]) for row in rows]


def write(conn: Connection, policies: Iterable[Policy]) -> None:
    """Replace every stored policy with ``policies``, in the caller's transaction."""
    t = schema.casbin_rule
    conn.execute(t.delete())
    # Every row names every column: an executemany takes its columns from the first row.
    rows = [
        {"ptype": rule[0], **{f"v{i}": rule[i + 1] if i + 1 < len(rule) else "" for i in range(6)}}
        for rule in policies
    ]
    if rows:
        conn.execute(t.insert(), rows)
