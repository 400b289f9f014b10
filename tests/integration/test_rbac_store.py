"""The RBAC policy of a stored revision (SQLite and PostgreSQL): compiled from the
revision's own role bindings by every reader, the same decisions as from the bindings
themselves; nothing else is stored (the ``casbin_rule`` table is gone, migration 0005)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from governance import config
from governance.rbac import Identity, Policy
from governance.storage import revisions, source
from governance.storage.source import SnapshotSource
from governance.storage.store import Store
from tests.support.org import org_document, with_change

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def stored_policy(store: Store) -> Policy:
    found = source.load(store)
    assert found is not None
    return found.policy


def test_no_rule_table_is_kept_beside_the_revisions(store: Store) -> None:
    revisions.apply(store, config.load_file(EXAMPLE), source=str(EXAMPLE))
    assert "casbin_rule" not in sa.inspect(store.engine).get_table_names()


IDENTITIES = [
    Identity(user="alice@northwind.example"),
    Identity(user="bob", groups=("research", "system:authenticated")),
    Identity(user="system:serviceaccount:research-ci:runner"),
    Identity(user="system:serviceaccount:ml-pipelines:trainer"),
    Identity(user="intern", groups=("interns",)),
    Identity(user="fin", groups=("finance",)),
    Identity(user="chen@northwind.example"),
    Identity(user="nobody"),
]


def test_decisions_from_the_store_equal_decisions_from_the_bindings(store: Store) -> None:
    org = revisions.apply(store, config.load_file(EXAMPLE), source=str(EXAMPLE)).org
    stored = stored_policy(store)
    direct = Policy.compile(org.role_bindings)
    asked = 0
    for identity in IDENTITIES:
        for (dept, queue), q in org.queues.items():
            for sku in [s.name for s in org.skus_on(q.pool)]:
                assert stored.can_use(identity, dept, queue, sku) == direct.can_use(
                    identity, dept, queue, sku
                )
                asked += 1
        depts = sorted(org.departments)
        assert stored.visible_departments(identity, depts) == direct.visible_departments(
            identity, depts
        )
        for dept in depts:
            assert stored.can_edit_quota(identity, dept) == direct.can_edit_quota(identity, dept)
    assert asked > 100


def test_example_organisation_decisions(store: Store) -> None:
    revisions.apply(store, config.load_file(EXAMPLE), source=str(EXAMPLE))
    auth = stored_policy(store)
    ci = Identity(user="system:serviceaccount:research-ci:runner")
    assert auth.can_use(ci, "research", "experiments", "h100-1g.10gb").allowed
    assert not auth.can_use(ci, "research", "experiments", "h100-3g.40gb").allowed
    assert not auth.can_use(ci, "research", "pretrain", "h100-8x").allowed
    trainer = Identity(user="system:serviceaccount:ml-pipelines:trainer")
    assert auth.can_use(trainer, "ml", "finetune", "a100-half").allowed
    assert not auth.can_use(trainer, "ml", "notebooks", "l40s-quarter").allowed
    intern = Identity(user="kim", groups=("interns",))
    assert auth.can_use(intern, "product", "serving", "l40s-quarter").allowed
    assert not auth.can_use(intern, "product", "serving", "l40s-half").allowed
    finance = Identity(user="fin", groups=("finance",))
    assert auth.visible_departments(finance, ["ml", "product", "research", "vision"]) == [
        "ml",
        "product",
        "research",
        "vision",
    ]
    bruno = Identity(user="bruno@northwind.example")
    assert auth.can_edit_quota(bruno, "research").allowed
    assert auth.can_view(bruno, "vision").allowed
    assert not auth.can_edit_quota(bruno, "vision").allowed


def test_the_source_compiles_each_new_revisions_policy(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    snapshots = SnapshotSource(store, refresh_s=0.0)
    vic = Identity(user="vic")
    first = snapshots.get()
    assert not first.policy.can_view(vic, "ml").allowed

    doc = with_change(
        org_document(),
        "role_bindings[2]",
        {"role": "viewer", "department": "ml", "subjects": ["user:vic"]},
    )
    revisions.apply(store, doc, source="org.yaml")
    second = snapshots.get()
    assert second.revision == first.revision + 1
    decision = second.policy.can_view(vic, "ml")
    assert decision.allowed
    assert decision.rule == ("viewer", "*", "department", "view")
    assert snapshots.get() is second, "built once per revision"

    # Removing the binding removes the rule.
    revisions.apply(store, org_document(), source="org.yaml")
    assert not snapshots.get().policy.can_view(vic, "ml").allowed
