"""governance.rbac: roles x permissions, subject kinds, domains, narrowed bindings."""

from __future__ import annotations

import pytest

from governance import rbac
from governance.contract import Reason
from governance.model import RoleBinding
from governance.rbac import Identity, Policy
from tests.support.org import make_binding

pytestmark = pytest.mark.unit

BINDINGS = (
    make_binding("platform-admin", "*", "user:root"),
    make_binding("dept-admin", "ml", "user:carol"),
    make_binding("member", "ml", "user:ana"),
    make_binding("viewer", "ml", "user:vic"),
    make_binding("member", "ml", "group:ml-team"),
    make_binding("member", "ml", "system:serviceaccount:ml-ci:runner"),
    make_binding("member", "ml", "group:system:serviceaccounts:ml-batch"),
    make_binding("viewer", "*", "group:finance"),
    make_binding("member", "cv", "user:ana"),
    make_binding("member", "ml", "user:nora", queues=("infer",)),
    make_binding("member", "ml", "user:sam", skus=("a100-1g",)),
    make_binding("member", "ml", "user:qs", queues=("train",), skus=("a100-1g", "a100-half")),
    make_binding("dept-admin", "cv", "user:cvadmin"),
)


@pytest.fixture(scope="module")
def auth() -> Policy:
    return Policy.compile(BINDINGS)


def user(name: str, *groups: str) -> Identity:
    return Identity(user=name, groups=groups)


# -- roles x permissions -------------------------------------------------------------

ROLE_TABLE = [
    # identity, can use in ml, can view ml, can edit ml quotas
    pytest.param(user("root"), True, True, True, id="platform-admin"),
    pytest.param(user("carol"), True, True, True, id="dept-admin"),
    pytest.param(user("ana"), True, True, False, id="member"),
    pytest.param(user("vic"), False, True, False, id="viewer"),
    pytest.param(user("eve"), False, False, False, id="no-binding"),
]


@pytest.mark.parametrize(("who", "use", "view", "edit"), ROLE_TABLE)
def test_each_role_grants_its_permissions(
    auth: Policy, who: Identity, use: bool, view: bool, edit: bool
) -> None:
    assert auth.can_use(who, "ml", "train", "a100-1g").allowed is use
    assert auth.can_view(who, "ml").allowed is view
    assert auth.can_edit_quota(who, "ml").allowed is edit


SUBJECT_TABLE = [
    pytest.param(user("ana"), "user:ana", id="user"),
    pytest.param(user("bob", "ml-team", "system:authenticated"), "group:ml-team", id="group"),
    pytest.param(
        user("system:serviceaccount:ml-ci:runner", "system:serviceaccounts"),
        "system:serviceaccount:ml-ci:runner",
        id="service-account",
    ),
    pytest.param(
        user("system:serviceaccount:ml-batch:worker"),
        "group:system:serviceaccounts:ml-batch",
        id="service-account-group-derived-from-the-name",
    ),
    pytest.param(
        user("alice", "system:serviceaccounts:ml-batch"),
        "group:system:serviceaccounts:ml-batch",
        id="service-account-group-as-given",
    ),
]


@pytest.mark.parametrize(("who", "subject"), SUBJECT_TABLE)
def test_each_subject_kind_is_matched(auth: Policy, who: Identity, subject: str) -> None:
    decision = auth.can_use(who, "ml", "train", "a100-half")
    assert decision.allowed
    assert decision.subject == subject
    assert decision.rule == ("member", "*", "queue/*/sku/*", "use")
    assert decision.reason is Reason.ADMITTED


def test_service_account_of_another_namespace_is_not_matched(auth: Policy) -> None:
    decision = auth.can_use(user("system:serviceaccount:other:runner"), "ml", "train", "x")
    assert not decision.allowed
    assert "group:system:serviceaccounts:other" in decision.explanation


def test_authenticated_and_all_service_accounts_groups_can_be_bound() -> None:
    auth = Policy.compile(
        [
            make_binding("viewer", "ml", "group:system:authenticated"),
            make_binding("member", "cv", "group:system:serviceaccounts"),
        ]
    )
    assert auth.can_view(user("anyone", "system:authenticated"), "ml").allowed
    assert not auth.can_view(user("anyone"), "ml").allowed
    assert auth.can_use(user("system:serviceaccount:x:y"), "cv", "q", "s").allowed
    assert not auth.can_use(user("system:serviceaccount:x:y"), "ml", "q", "s").allowed


# -- domains -------------------------------------------------------------------------


def test_a_role_holds_only_in_its_department(auth: Policy) -> None:
    carol = user("carol")
    assert auth.can_edit_quota(carol, "ml").allowed
    assert not auth.can_edit_quota(carol, "cv").allowed
    assert not auth.can_view(carol, "cv").allowed
    assert not auth.can_use(user("cvadmin"), "ml", "train", "a100-1g").allowed
    # The same user bound in two departments holds both.
    assert auth.can_use(user("ana"), "cv", "q", "s").allowed


def test_platform_admin_and_global_viewers_hold_every_department(auth: Policy) -> None:
    for dept in ("ml", "cv", "a-department-nobody-bound"):
        decision = auth.can_edit_quota(user("root"), dept)
        assert decision.allowed
        assert "every department" in decision.explanation
        assert auth.can_view(user("fin", "finance"), dept).allowed
        assert not auth.can_use(user("fin", "finance"), dept, "q", "s").allowed


def test_visible_departments(auth: Policy) -> None:
    depts = ["cv", "ml", "research"]
    assert auth.visible_departments(user("vic"), depts) == ["ml"]
    assert auth.visible_departments(user("ana"), depts) == ["cv", "ml"]
    assert auth.visible_departments(user("root"), depts) == depts
    assert auth.visible_departments(user("eve"), depts) == []


# -- narrowed member bindings --------------------------------------------------------

NARROWED = [
    pytest.param("nora", "infer", "a100-whole", True, id="queue-narrowed-own-queue"),
    pytest.param("nora", "train", "a100-1g", False, id="queue-narrowed-other-queue"),
    pytest.param("sam", "train", "a100-1g", True, id="sku-narrowed-own-sku"),
    pytest.param("sam", "infer", "a100-1g", True, id="sku-narrowed-any-queue"),
    pytest.param("sam", "train", "a100-half", False, id="sku-narrowed-other-sku"),
    pytest.param("qs", "train", "a100-half", True, id="both-narrowed-match"),
    pytest.param("qs", "train", "a100-whole", False, id="both-narrowed-other-sku"),
    pytest.param("qs", "infer", "a100-1g", False, id="both-narrowed-other-queue"),
]


@pytest.mark.parametrize(("name", "queue", "sku", "allowed"), NARROWED)
def test_narrowed_member_binding(
    auth: Policy, name: str, queue: str, sku: str, allowed: bool
) -> None:
    decision = auth.can_use(user(name), "ml", queue, sku)
    assert decision.allowed is allowed
    if allowed:
        assert decision.rule is not None and decision.rule[0].startswith("member[")
        assert decision.rule[1] == "ml"


def test_narrowed_member_may_view_but_not_edit(auth: Policy) -> None:
    assert auth.can_view(user("nora"), "ml").allowed
    assert not auth.can_edit_quota(user("nora"), "ml").allowed
    assert not auth.can_view(user("nora"), "cv").allowed


def test_narrowed_binding_in_one_department_does_not_leak_to_another() -> None:
    auth = Policy.compile(
        [
            make_binding("member", "ml", "user:nora", queues=("infer",)),
            make_binding("member", "cv", "user:other", queues=("infer",)),
        ]
    )
    assert auth.can_use(user("nora"), "ml", "infer", "s").allowed
    assert not auth.can_use(user("nora"), "cv", "infer", "s").allowed


# -- decisions and their explanations ------------------------------------------------


def test_allowed_decision_names_subject_rule_and_binding(auth: Policy) -> None:
    decision = auth.can_use(user("carol"), "ml", "train", "a100-1g")
    assert decision.allowed
    assert decision.subject == "user:carol"
    assert decision.rule == ("dept-admin", "*", "queue/*/sku/*", "use")
    assert decision.explanation == (
        "user:carol may use queue ml/train with SKU a100-1g: bound as dept-admin in "
        "department ml (rule p, dept-admin, *, queue/*/sku/*, use)."
    )


def test_denial_says_who_what_and_what_to_do(auth: Policy) -> None:
    decision = auth.can_use(user("nora", "interns"), "ml", "train", "a100-1g")
    assert not decision.allowed
    assert decision.subject is None and decision.rule is None
    assert decision.reason is Reason.FORBIDDEN
    text = decision.explanation
    assert text.startswith(
        "denied: user:nora, group:interns may not use queue ml/train with SKU a100-1g"
    )
    assert "user:nora is member[queues=infer;skus=*] in department ml" in text
    assert "Ask a dept-admin of ml (user:carol) to bind you as member (of queue train)" in text
    assert "or use a queue you may use: ml/infer with any SKU." in text


def test_denial_to_someone_without_any_role(auth: Policy) -> None:
    text = auth.can_view(user("eve"), "ml").explanation
    assert text == (
        "denied: user:eve may not view department ml (none of them holds a role there). "
        "Ask a dept-admin of ml (user:carol) to bind you as viewer or member of ml."
    )
    edit = auth.can_edit_quota(user("ana"), "ml").explanation
    assert "user:ana is member in department ml" in edit
    assert "ask a platform-admin to bind you as dept-admin of ml" in edit


def test_a_decision_is_not_a_bool(auth: Policy) -> None:
    decision = auth.can_view(user("ana"), "ml")
    with pytest.raises(TypeError, match=r"use Decision\.allowed"):
        bool(decision)


def test_decisions_are_cached_and_a_new_revision_is_a_new_policy() -> None:
    bound = Policy.compile([make_binding("member", "ml", "user:ana")])
    first = bound.can_use(user("ana"), "ml", "train", "s")
    assert first.allowed
    assert bound.can_use(user("ana"), "ml", "train", "s") is first
    # A revision without the binding compiles its own policy, which knows nothing of it.
    assert not Policy.compile([]).can_use(user("ana"), "ml", "train", "s").allowed
    assert bound.can_use(user("ana"), "ml", "train", "s") is first


def test_the_decision_cache_is_bounded() -> None:
    class Small(Policy):
        CACHE_LIMIT = 10  # type: ignore[misc]

    policy = Small(rbac.policies_for([make_binding("member", "ml", "group:ml-team")]))
    answers = [
        policy.can_use(user(f"user-{i}", "ml-team"), "ml", "train", "s").allowed for i in range(50)
    ]
    assert answers == [True] * 50
    assert 0 < len(policy._cache) <= 10


# -- subjects and policies -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("user:ana", "user:ana"),
        ("user:ana@example.com", "user:ana@example.com"),
        ("group:ml-team", "group:ml-team"),
        ("system:serviceaccount:ml:bot", "system:serviceaccount:ml:bot"),
        ("user:system:serviceaccount:ml:bot", "system:serviceaccount:ml:bot"),
        ("system:serviceaccounts:ml", "group:system:serviceaccounts:ml"),
        ("group:system:serviceaccounts:ml", "group:system:serviceaccounts:ml"),
        ("system:serviceaccounts", "group:system:serviceaccounts"),
        ("system:authenticated", "group:system:authenticated"),
    ],
)
def test_subject_formats(text: str, canonical: str) -> None:
    assert rbac.normalize_subject(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "ana",
        "user:",
        "group:",
        "role:x",
        "system:serviceaccount:ml",
        "system:serviceaccount:ML:x",
        "system:serviceaccounts:",
        "user:a b",
        " user:a",
        "system:masters",
    ],
)
def test_bad_subject_formats(text: str) -> None:
    with pytest.raises(ValueError, match=r"subject|service"):
        rbac.normalize_subject(text)


def test_policies_for_bindings() -> None:
    policies = rbac.policies_for(
        [
            RoleBinding(role="viewer", department="ml", subjects=("user:a", "group:b")),
            RoleBinding(role="member", department="ml", subjects=("user:c",), queues=("q",)),
        ]
    )
    assert ("g", "user:a", "viewer", "ml") in policies
    assert ("g", "group:b", "viewer", "ml") in policies
    role = "member[queues=q;skus=*]"
    assert ("g", "user:c", role, "ml") in policies
    assert ("p", role, "ml", "queue/q/sku/*", "use") in policies
    assert ("p", role, "ml", "department", "view") in policies
    assert set(rbac.ROLE_POLICIES) <= set(policies)
    assert policies == sorted(set(policies))


@pytest.mark.parametrize(
    ("request_obj", "pattern", "match"),
    [
        ("queue/a/sku/b", "queue/*/sku/*", True),
        ("queue/a/sku/b", "queue/a/sku/*", True),
        ("queue/a/sku/b", "queue/b/sku/*", False),
        ("queue/a/sku/b.c", "queue/*/sku/b.c", True),
        ("queue/a/sku/bxc", "queue/*/sku/b.c", False),
        ("department", "*", True),
        ("quota", "department", False),
    ],
)
def test_object_match(request_obj: str, pattern: str, match: bool) -> None:
    assert rbac.object_match(request_obj, pattern) is match


def test_warm_answers_in_every_department_and_freezes_what_the_process_holds() -> None:
    import gc

    fresh = Policy.compile(BINDINGS)
    departments = ["vision", "nlp", "speech"]
    assert not fresh._cache
    try:
        rbac.warm(fresh, departments, collect=True)
        assert len(fresh._cache) == len(departments)
        # The policy is now in the permanent generation: no collection walks it.
        assert gc.get_freeze_count() > 0
        assert all(o is not fresh for o in gc.get_objects())
    finally:
        gc.unfreeze()
