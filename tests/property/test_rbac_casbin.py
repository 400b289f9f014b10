"""The compiled policy answers exactly as Casbin's own enforcer does.

:class:`governance.rbac.Policy` evaluates the model's matcher over indexes of the
rules instead of asking Casbin. It is kept only because this holds: over generated
role bindings (every role, departments and ``*``, narrowed members, the same subject in
several bindings) and generated questions (use a queue with a SKU, view a department,
edit its quotas; departments known and unknown, and ``*``), one plain
``casbin.Enforcer`` over all the rules with ``rbac_model.conf`` gives the same verdict,
the same matching subject and ``p`` rule, and the same explanation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import rbac
from governance.model import RoleBinding
from governance.rbac import Identity, Policy
from tests.support import casbin_reference

pytestmark = pytest.mark.property

DEPARTMENTS = ("ml", "cv", "nlp")
QUEUES = ("q1", "q2", "q3")
SKUS = ("s1", "s2")
SUBJECTS = (
    "user:ana",
    "user:bob",
    "group:g1",
    "group:g2",
    "system:serviceaccount:ml:bot",
    "group:system:serviceaccounts:ml",
    "group:system:serviceaccounts",
    "group:system:authenticated",
)


@st.composite
def bindings(draw: st.DrawFn) -> tuple[RoleBinding, ...]:
    found = []
    for _ in range(draw(st.integers(0, 8))):
        role = draw(st.sampled_from(rbac.ROLES))
        dom = (
            rbac.EVERY_DEPARTMENT
            if role == rbac.PLATFORM_ADMIN
            else draw(st.sampled_from((*DEPARTMENTS, rbac.EVERY_DEPARTMENT)))
        )
        queues: tuple[str, ...] = ()
        skus: tuple[str, ...] = ()
        if role == rbac.MEMBER and dom != rbac.EVERY_DEPARTMENT and draw(st.booleans()):
            queues = tuple(draw(st.lists(st.sampled_from(QUEUES), max_size=2, unique=True)))
            skus = tuple(draw(st.lists(st.sampled_from(SKUS), max_size=2, unique=True)))
        subjects = draw(st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=3, unique=True))
        found.append(
            RoleBinding(
                role=role, department=dom, subjects=tuple(subjects), queues=queues, skus=skus
            )
        )
    return tuple(found)


identities = st.builds(
    Identity,
    user=st.sampled_from(
        ("ana", "bob", "carol", "system:serviceaccount:ml:bot", "system:serviceaccount:cv:x")
    ),
    groups=st.lists(
        st.sampled_from(("g1", "g2", "system:authenticated")), max_size=2, unique=True
    ).map(tuple),
)
departments = st.sampled_from((*DEPARTMENTS, "unknown", rbac.EVERY_DEPARTMENT))


@st.composite
def questions(draw: st.DrawFn) -> tuple[str, Identity, str, tuple[Any, ...]]:
    kind = draw(st.sampled_from(("use", "view", "edit")))
    extra: tuple[Any, ...] = ()
    if kind == "use":
        extra = (draw(st.sampled_from((*QUEUES, "q9"))), draw(st.sampled_from((*SKUS, "s9"))))
    return kind, draw(identities), draw(departments), extra


def _compiled(policy: Policy, kind: str, who: Identity, dom: str, extra: tuple[Any, ...]) -> Any:
    if kind == "use":
        return policy.can_use(who, dom, *extra)
    if kind == "view":
        return policy.can_view(who, dom)
    return policy.can_edit_quota(who, dom)


def _casbin(e: Any, kind: str, who: Identity, dom: str, extra: tuple[Any, ...]) -> Any:
    if kind == "use":
        queue, sku = extra
        return casbin_reference.decide(
            e,
            who,
            dom,
            rbac.use_object(queue, sku),
            rbac.ACTION_USE,
            what=f"use queue {dom}/{queue} with SKU {sku}",
            queue=queue,
        )
    if kind == "view":
        return casbin_reference.decide(
            e, who, dom, rbac.OBJECT_DEPARTMENT, rbac.ACTION_VIEW, what=f"view department {dom}"
        )
    return casbin_reference.decide(
        e,
        who,
        dom,
        rbac.OBJECT_QUOTA,
        rbac.ACTION_EDIT,
        what=f"change the quotas of department {dom}",
    )


@settings(max_examples=300, deadline=None)
@given(bindings(), st.lists(questions(), min_size=1, max_size=12))
def test_the_compiled_policy_answers_as_casbins_enforcer(
    found: tuple[RoleBinding, ...], asked: list[tuple[str, Identity, str, tuple[Any, ...]]]
) -> None:
    rules = rbac.policies_for(found)
    policy = Policy(rules)
    e = casbin_reference.enforcer(rules)
    for kind, who, dom, extra in asked:
        assert _compiled(policy, kind, who, dom, extra) == _casbin(e, kind, who, dom, extra)


@settings(max_examples=200, deadline=None)
@given(bindings(), st.sampled_from(SUBJECTS), departments, questions())
def test_each_subjects_first_matching_rule_is_casbins(
    found: tuple[RoleBinding, ...],
    subject: str,
    dom: str,
    question: tuple[str, Identity, str, tuple[Any, ...]],
) -> None:
    rules = rbac.policies_for(found)
    e = casbin_reference.enforcer(rules)
    kind, _, _, extra = question
    obj = {
        "use": lambda: rbac.use_object(*extra),
        "view": lambda: rbac.OBJECT_DEPARTMENT,
        "edit": lambda: rbac.OBJECT_QUOTA,
    }[kind]()
    act = {"use": rbac.ACTION_USE, "view": rbac.ACTION_VIEW, "edit": rbac.ACTION_EDIT}[kind]
    allowed, explain = e.enforce_ex(subject, dom, obj, act)
    rule = Policy(rules).match(subject, dom, obj, act)
    assert (rule is not None) == allowed
    if allowed:
        assert rule == tuple(explain)
