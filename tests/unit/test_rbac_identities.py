"""Authorisation cost stays flat in the number of identities seen.

Casbin's domain role manager creates an entry for every name it is asked about, and
creating one scans every entry it holds (its default matching function is plain
equality, applied to all of them): after 12,000 distinct users each new one cost 24 ms.
The Authorizer asks Casbin only about subjects that some role binding names; anyone
else holds no role, whatever Casbin would say."""

from __future__ import annotations

from typing import Any

import pytest

from governance.rbac import Authorizer, Identity
from tests.support.org import make_binding

pytestmark = pytest.mark.unit

BINDINGS = (
    make_binding("platform-admin", "*", "user:root"),
    make_binding("dept-admin", "ml", "user:carol"),
    make_binding("member", "ml", "group:ml-team"),
    make_binding("member", "ml", "user:nora", queues=("infer",)),
    make_binding("viewer", "*", "group:finance"),
)


def role_manager_entries(auth: Authorizer) -> int:
    """Names held by the role managers of every enforcer built so far."""
    total = 0
    for enforcer in auth._state.enforcers.values():
        manager: Any = enforcer.get_role_manager()
        total += sum(len(rm.all_roles) for rm in manager.rm_map.values())
    return total


def ask_as_new_users(auth: Authorizer, first: int, count: int) -> list[bool]:
    answers = []
    for i in range(first, first + count):
        who = Identity(user=f"user-{i}", groups=(f"team-{i}", "ml-team", "system:authenticated"))
        answers.append(auth.can_use(who, "ml", "train", "a100-1g").allowed)
        answers.append(auth.can_edit_quota(who, "ml").allowed)
        stranger = Identity(user=f"stranger-{i}", groups=(f"team-{i}",))
        answers.append(auth.can_use(stranger, "ml", "train", "a100-1g").allowed)
    return answers


def test_role_managers_do_not_grow_with_the_identities_asked_about() -> None:
    auth = Authorizer.from_bindings(BINDINGS)
    ask_as_new_users(auth, 0, 20)  # builds the enforcers, learns the bound subjects
    before = role_manager_entries(auth)
    answers = ask_as_new_users(auth, 20, 500)
    assert role_manager_entries(auth) == before
    # and the answers are the policy's: members through the group, strangers denied
    assert answers == [True, False, False] * 500


def test_an_unbound_identity_is_denied_with_the_usual_explanation() -> None:
    auth = Authorizer.from_bindings(BINDINGS)
    decision = auth.can_use(Identity(user="eve", groups=("outsiders",)), "ml", "train", "a")
    assert not decision.allowed
    assert "user:eve, group:outsiders" in decision.explanation
    assert "none of them holds a role there" in decision.explanation
    assert "Ask a dept-admin of ml (user:carol)" in decision.explanation


def test_bound_subjects_keep_their_roles_in_every_department() -> None:
    auth = Authorizer.from_bindings(BINDINGS)
    root = Identity(user="root")
    nora = Identity(user="nora")
    assert auth.can_edit_quota(root, "vision").allowed
    assert auth.can_view(Identity(user="x", groups=("finance",)), "vision").allowed
    assert auth.can_use(nora, "ml", "infer", "a").allowed
    denied = auth.can_use(nora, "ml", "train", "a")
    assert not denied.allowed and "use a queue you may use: ml/infer" in denied.explanation
