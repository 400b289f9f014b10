"""Casbin policies in the store (SQLite and PostgreSQL): written by revisions.apply, read
by the StoreAdapter, the same decisions as from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import casbin
import pytest

from governance import config, rbac
from governance.rbac import Authorizer, Identity
from governance.storage import policies, revisions
from governance.storage.store import Store
from tests.support.org import org_document, with_change

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def test_policies_round_trip_through_the_store(store: Store) -> None:
    org = revisions.apply(store, config.load_file(EXAMPLE), source=str(EXAMPLE)).org
    expected = rbac.policies_for(org.role_bindings)

    assert policies.read(store) == expected

    # The adapter is a real Casbin adapter: a plain enforcer loads the same rules.
    enforcer = casbin.Enforcer(str(rbac.MODEL_PATH), policies.StoreAdapter(store))
    loaded = [("p", *r) for r in enforcer.get_policy()]
    loaded += [("g", *r) for r in enforcer.get_grouping_policy()]
    assert sorted(loaded) == expected


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
    stored = policies.authorizer(store)
    direct = Authorizer.from_bindings(org.role_bindings)
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
    auth = policies.authorizer(store)
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


def test_reload_picks_up_a_new_revision(store: Store) -> None:
    revisions.apply(store, org_document(), source="org.yaml")
    auth = policies.authorizer(store)
    vic = Identity(user="vic")
    assert not auth.can_view(vic, "ml").allowed

    doc = with_change(
        org_document(),
        "role_bindings[2]",
        {"role": "viewer", "department": "ml", "subjects": ["user:vic"]},
    )
    revisions.apply(store, doc, source="org.yaml")
    assert not auth.can_view(vic, "ml").allowed, "cached until reload"
    auth.reload()
    decision = auth.can_view(vic, "ml")
    assert decision.allowed
    assert decision.rule == ("viewer", "*", "department", "view")

    # Removing the binding removes the policy.
    revisions.apply(store, org_document(), source="org.yaml")
    auth.reload()
    assert not auth.can_view(vic, "ml").allowed
