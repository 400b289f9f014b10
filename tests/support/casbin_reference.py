"""Casbin's own answer to the questions :class:`governance.rbac.Policy` answers: one plain
``casbin.Enforcer`` over all the rules, with the model of ``rbac_model.conf``, asked
subject by subject, and the same words around its answers (what the webhook said when
it asked Casbin itself). The reference the compiled policy is held to
(``tests/property/test_rbac_casbin.py``); Casbin is a test dependency only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import casbin

from governance import rbac
from governance.rbac import Decision, Identity


def enforcer(rules: Iterable[rbac.Rule]) -> Any:
    """A plain enforcer holding ``rules`` in their order, with the model's matcher."""
    found = casbin.Enforcer(str(rbac.MODEL_PATH))
    found.add_function("objectMatch", rbac.object_match)
    for rule in rules:
        if rule[0] == "p":
            found.add_named_policy("p", *rule[1:])
        else:
            found.add_named_grouping_policy("g", *rule[1:])
    return found


def decide(
    e: Any,
    identity: Identity,
    dom: str,
    obj: str,
    act: str,
    *,
    what: str,
    queue: str | None = None,
) -> Decision:
    subjects = identity.subjects()
    for subject in subjects:
        allowed, explain = e.enforce_ex(subject, dom, obj, act)
        if allowed:
            rule = tuple(str(v) for v in explain)
            where = (
                "every department"
                if rule[0] in e.get_roles_for_user_in_domain(subject, rbac.EVERY_DEPARTMENT)
                else f"department {dom}"
            )
            return Decision(
                allowed=True,
                subject=subject,
                rule=rule,
                explanation=(
                    f"{subject} may {what}: bound as {rule[0]} in {where} "
                    f"(rule p, {', '.join(rule)})."
                ),
            )
    held: list[str] = []
    usable: list[str] = []
    for subject in subjects:
        for where in (dom, rbac.EVERY_DEPARTMENT):
            # Casbin's role manager lists a subject's roles in hash order, a different
            # order in each process; the rules' order (sorted) is the one to compare
            for role in sorted(e.get_roles_for_user_in_domain(subject, where)):
                words = (
                    "every department" if where == rbac.EVERY_DEPARTMENT else f"department {where}"
                )
                held.append(f"{subject} is {role} in {words}")
                if where == dom and role.startswith(rbac.MEMBER + "["):
                    for rule in e.get_filtered_policy(0, role, dom):
                        if rule[3] == rbac.ACTION_USE:
                            _, q, _, s = rule[2].split("/")
                            usable.append(
                                f"{dom}/{q if q != '*' else '(any queue)'} with "
                                f"{'any SKU' if s == '*' else 'SKU ' + s}"
                            )
    admins = sorted(e.get_users_for_role_in_domain(rbac.DEPT_ADMIN, dom))
    ask = f"a dept-admin of {dom}" + (f" ({', '.join(admins)})" if admins else "")
    holds = "; ".join(held) if held else "none of them holds a role there"
    if act == rbac.ACTION_USE:
        advice = f"Ask {ask} to bind you as member"
        if queue is not None:
            advice += f" (of queue {queue})"
        if usable:
            advice += f", or use a queue you may use: {', '.join(sorted(set(usable)))}"
        advice += "."
    elif act == rbac.ACTION_VIEW:
        advice = f"Ask {ask} to bind you as viewer or member of {dom}."
    else:
        advice = (
            f"Only dept-admins of {dom} and platform-admins change its quotas: ask a "
            f"platform-admin to bind you as dept-admin of {dom}, or ask {ask}."
        )
    return Decision(
        allowed=False,
        subject=None,
        rule=None,
        explanation=f"denied: {', '.join(subjects)} may not {what} ({holds}). {advice}",
    )
