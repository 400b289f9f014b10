"""Authorisation answers as the bindings say whatever the number of identities seen.

A webhook sees a new identity with every new user. Casbin's domain role manager
created an entry for every name it was asked about, and creating one scanned every
entry it held (after 12,000 distinct users each new one cost 24 ms). The compiled
:class:`~governance.rbac.Policy` keeps nothing per identity but a bounded decision
cache: its indexes are built from the bindings once and never grow."""

from __future__ import annotations

import pytest

from governance.rbac import Identity, Policy
from tests.support.org import make_binding

pytestmark = pytest.mark.unit

BINDINGS = (
    make_binding("platform-admin", "*", "user:root"),
    make_binding("dept-admin", "ml", "user:carol"),
    make_binding("member", "ml", "group:ml-team"),
    make_binding("member", "ml", "user:nora", queues=("infer",)),
    make_binding("viewer", "*", "group:finance"),
)


def ask_as_new_users(policy: Policy, first: int, count: int) -> list[bool]:
    answers = []
    for i in range(first, first + count):
        who = Identity(user=f"user-{i}", groups=(f"team-{i}", "ml-team", "system:authenticated"))
        answers.append(policy.can_use(who, "ml", "train", "a100-1g").allowed)
        answers.append(policy.can_edit_quota(who, "ml").allowed)
        stranger = Identity(user=f"stranger-{i}", groups=(f"team-{i}",))
        answers.append(policy.can_use(stranger, "ml", "train", "a100-1g").allowed)
    return answers


def test_the_indexes_do_not_grow_with_the_identities_asked_about() -> None:
    policy = Policy.compile(BINDINGS)
    roles, users = dict(policy._roles), dict(policy._users)
    answers = ask_as_new_users(policy, 0, 500)
    assert dict(policy._roles) == roles and dict(policy._users) == users
    # and the answers are the policy's: members through the group, strangers denied
    assert answers == [True, False, False] * 500


def test_an_unbound_identity_is_denied_with_the_usual_explanation() -> None:
    policy = Policy.compile(BINDINGS)
    decision = policy.can_use(Identity(user="eve", groups=("outsiders",)), "ml", "train", "a")
    assert not decision.allowed
    assert "user:eve, group:outsiders" in decision.explanation
    assert "none of them holds a role there" in decision.explanation
    assert "Ask a dept-admin of ml (user:carol)" in decision.explanation


def test_bound_subjects_keep_their_roles_in_every_department() -> None:
    policy = Policy.compile(BINDINGS)
    root = Identity(user="root")
    nora = Identity(user="nora")
    assert policy.can_edit_quota(root, "vision").allowed
    assert policy.can_view(Identity(user="x", groups=("finance",)), "vision").allowed
    assert policy.can_use(nora, "ml", "infer", "a").allowed
    denied = policy.can_use(nora, "ml", "train", "a")
    assert not denied.allowed and "use a queue you may use: ml/infer" in denied.explanation
