"""Who may use which queue and SKU, view a department, change its quotas (Casbin).

The model (``rbac_model.conf``, in this package) is RBAC with domains, a domain being a
department. Four roles:

======================  =========================  ===============  ============
role                    use queues/SKUs            view department  edit quotas
======================  =========================  ===============  ============
platform-admin          every department           every one        every one
dept-admin              its department             its department   its department
member                  its department [#]_        its department   no
viewer                  no                         its department   no
======================  =========================  ===============  ============

.. [#] optionally narrowed by the binding to some queues and/or SKUs.

Subjects, as written in role bindings (:func:`normalize_subject` gives the canonical
form kept in policies): ``user:NAME``, ``group:NAME``, Kubernetes service accounts
``system:serviceaccount:NS:NAME``, and the groups ``system:serviceaccounts:NS``,
``system:serviceaccounts`` and ``system:authenticated`` (kept as ``group:...``).

Policies are derived from the organisation's role bindings (:func:`policies_for`) and
stored in the store's ``casbin_rule`` table by ``governance.storage.revisions.apply``,
so that every replica sees the same ones; :class:`Authorizer` loads them through
:class:`governance.storage.policies.StoreAdapter`. Casbin answers through a typed
facade: every answer is a :class:`Decision` that names the subject and the rule that
matched, or, when denied, which subjects were tried and what to do.

Speed: Casbin evaluates its matcher once per ``p`` rule, so the ``p`` rules stay few
(one set per role, plus one per narrowed member binding shape); bindings are ``g``
rules, which are hash lookups. Decisions are cached per (subjects, department,
object, action) until :meth:`Authorizer.reload`. Casbin is asked only about subjects
that a role binding names (:attr:`_State.bound`), so the cost of a new identity stays
flat however many were seen (``bench/rbac.py``: 34 us after 2,000 others, against
1.3 ms when Casbin's role manager was asked about each).
"""

from __future__ import annotations

import gc
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import casbin
from casbin import persist

from governance.contract import Reason
from governance.model import ROLES, RoleBinding

MODEL_PATH: Final = Path(__file__).with_name("rbac_model.conf")
_MODEL_TEXT: Final = MODEL_PATH.read_text(encoding="utf-8")

PLATFORM_ADMIN: Final = "platform-admin"
DEPT_ADMIN: Final = "dept-admin"
MEMBER: Final = "member"
VIEWER: Final = "viewer"
EVERY_DEPARTMENT: Final = "*"

ACTION_USE: Final = "use"
ACTION_VIEW: Final = "view"
ACTION_EDIT: Final = "edit"
OBJECT_DEPARTMENT: Final = "department"
OBJECT_QUOTA: Final = "quota"

Policy = tuple[str, ...]
"""One casbin_rule row: (ptype, v0, v1, ...), e.g. ("g", "user:ana", "member", "ml")."""

ROLE_POLICIES: Final[tuple[Policy, ...]] = (
    ("p", PLATFORM_ADMIN, "*", "*", "*"),
    ("p", DEPT_ADMIN, "*", "queue/*/sku/*", ACTION_USE),
    ("p", DEPT_ADMIN, "*", OBJECT_DEPARTMENT, ACTION_VIEW),
    ("p", DEPT_ADMIN, "*", OBJECT_QUOTA, ACTION_EDIT),
    ("p", MEMBER, "*", "queue/*/sku/*", ACTION_USE),
    ("p", MEMBER, "*", OBJECT_DEPARTMENT, ACTION_VIEW),
    ("p", VIEWER, "*", OBJECT_DEPARTMENT, ACTION_VIEW),
)
"""What each role may do, in any department where it is bound."""

# -- subjects ------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SA_PREFIX: Final = "system:serviceaccount:"
SA_GROUP: Final = "system:serviceaccounts"
AUTHENTICATED: Final = "system:authenticated"

SUBJECT_FORMATS: Final = (
    "user:NAME, group:NAME, system:serviceaccount:NAMESPACE:NAME, "
    "system:serviceaccounts:NAMESPACE, system:serviceaccounts, system:authenticated"
)


def normalize_subject(text: str) -> str:
    """The canonical form of a subject written in a role binding; ValueError if invalid.

    Users are ``user:NAME``, service accounts ``system:serviceaccount:NS:NAME``, and
    every group (including the Kubernetes service-account groups) ``group:NAME``.
    """
    if not isinstance(text, str) or not text or text != text.strip() or " " in text:
        raise ValueError(f"subject {text!r} is not one of: {SUBJECT_FORMATS}")
    kind, _, name = text.partition(":")
    if kind == "user" and name:
        if name.startswith(SA_PREFIX):
            return _service_account(name)
        return text
    if kind == "group" and name:
        if name.startswith(SA_GROUP):
            return "group:" + _service_account_group(name)
        return text
    if text.startswith(SA_PREFIX):
        return _service_account(text)
    if text.startswith(SA_GROUP):
        return "group:" + _service_account_group(text)
    if text == AUTHENTICATED:
        return "group:" + AUTHENTICATED
    raise ValueError(f"subject {text!r} is not one of: {SUBJECT_FORMATS}")


def _service_account(text: str) -> str:
    parts = text[len(SA_PREFIX) :].split(":")
    if len(parts) != 2 or not _DNS_LABEL.match(parts[0]) or not _DNS_SUBDOMAIN.match(parts[1]):
        raise ValueError(
            f"service account {text!r} must be system:serviceaccount:NAMESPACE:NAME with a "
            "valid namespace and name (lowercase letters, digits, '-')"
        )
    return text


def _service_account_group(text: str) -> str:
    if text == SA_GROUP:
        return text
    ns = text[len(SA_GROUP) + 1 :] if text.startswith(SA_GROUP + ":") else ""
    if not _DNS_LABEL.match(ns):
        raise ValueError(
            f"service-account group {text!r} must be system:serviceaccounts or "
            "system:serviceaccounts:NAMESPACE with a valid namespace"
        )
    return text


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Who asks: the Kubernetes user name and groups (AdmissionReview userInfo)."""

    user: str
    groups: tuple[str, ...] = ()

    def subjects(self) -> tuple[str, ...]:
        """The policy subjects this identity acts as, the user first.

        A service account also acts as its service-account groups, even when the
        caller did not list them (``--as system:serviceaccount:ci:bot`` in the CLI).
        """
        found: list[str] = []
        if self.user.startswith(SA_PREFIX):
            found.append(self.user)
            ns = self.user[len(SA_PREFIX) :].split(":", 1)[0]
            groups = (*self.groups, SA_GROUP, f"{SA_GROUP}:{ns}")
        else:
            found.append(f"user:{self.user}")
            groups = self.groups
        for group in groups:
            subject = f"group:{group}"
            if subject not in found:
                found.append(subject)
        return tuple(found)


# -- policies ------------------------------------------------------------------------


def narrowed_role(queues: Sequence[str], skus: Sequence[str]) -> str:
    """The role name of a member binding narrowed to some queues and/or SKUs."""
    q = "|".join(sorted(queues)) or "*"
    s = "|".join(sorted(skus)) or "*"
    return f"{MEMBER}[queues={q};skus={s}]"


def policies_for(bindings: Iterable[RoleBinding]) -> list[Policy]:
    """Every casbin rule for ``bindings`` (subjects already canonical), sorted, unique."""
    rules: set[Policy] = set(ROLE_POLICIES)
    for binding in bindings:
        role = binding.role
        dom = binding.department
        if role == MEMBER and (binding.queues or binding.skus):
            role = narrowed_role(binding.queues, binding.skus)
            for q in sorted(binding.queues) or ["*"]:
                for s in sorted(binding.skus) or ["*"]:
                    rules.add(("p", role, dom, use_object(q, s), ACTION_USE))
            rules.add(("p", role, dom, OBJECT_DEPARTMENT, ACTION_VIEW))
        for subject in binding.subjects:
            rules.add(("g", subject, role, dom))
    return sorted(rules)


def use_object(queue: str, sku: str) -> str:
    return f"queue/{queue}/sku/{sku}"


def object_match(request: str, pattern: str) -> bool:
    """``pattern`` matches ``request`` segment by segment; a ``*`` segment matches any."""
    if pattern == "*" or pattern == request:
        return True
    want = pattern.split("/")
    got = request.split("/")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def holders(
    enforcer: Any, subject: str, dom: str, bound: frozenset[str] | None = None
) -> frozenset[str]:
    """``subject`` and every role it holds, in ``dom`` or in every department: the
    ``p.sub`` values for which the matcher's ``g(r.sub, p.sub, ...)`` is true.

    ``bound``: the subjects that some ``g`` rule names (:attr:`_State.bound`). Another
    subject holds no role, and Casbin is not asked: its role manager keeps an entry
    for every name it is asked about, and adding one scans all the others."""
    found = {subject}
    if bound is not None and subject not in bound:
        return frozenset(found)
    found.update(enforcer.get_implicit_roles_for_user(subject, dom))
    found.update(enforcer.get_implicit_roles_for_user(subject, EVERY_DEPARTMENT))
    return frozenset(found)


def match(
    enforcer: Any,
    subject: str,
    dom: str,
    obj: str,
    act: str,
    held: frozenset[str] | None = None,
) -> list[str] | None:
    """The first p rule that the model's matcher accepts for this request, or None.

    The same matcher as ``rbac_model.conf``, over the same policies and Casbin's own role
    manager, evaluated in Python: Casbin's ``enforce_ex`` evaluates the matcher string
    with simpleeval for every rule, which cost milliseconds per first decision in a
    webhook that asks on every GPU pod. ``tests/unit/test_rbac_matcher.py`` checks that
    both agree on every question. ``held``: :func:`holders`, when the caller has it.
    """
    if held is None:
        held = holders(enforcer, subject, dom)
    for rule in enforcer.get_policy():
        p_sub, p_dom, p_obj, p_act = rule[:4]
        if (
            p_dom in (EVERY_DEPARTMENT, dom)
            and p_act in ("*", act)
            and object_match(obj, p_obj)
            and p_sub in held
        ):
            return list(rule)
    return None


# -- decisions -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Decision:
    """An answer from the policy: never a bare bool.

    ``subject`` is the subject the rule matched for (None when denied) and ``rule`` the
    Casbin ``p`` rule that allowed it, as (role, department, object, action).
    """

    allowed: bool
    subject: str | None
    rule: tuple[str, ...] | None
    explanation: str

    @property
    def reason(self) -> Reason:
        return Reason.ADMITTED if self.allowed else Reason.FORBIDDEN

    def __bool__(self) -> bool:
        raise TypeError("use Decision.allowed: a Decision is not a bool")


@dataclass(frozen=True, kw_only=True)
class _State:
    """One loaded policy set: rules by department, enforcers and decisions built lazily."""

    p_rules: Mapping[str, list[list[str]]]
    g_rules: Mapping[str, list[list[str]]]
    enforcers: dict[str, Any]
    cache: dict[tuple[Any, ...], Decision]
    roles: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    """holders() by (subject, department): the same service account asks about
    several queues and SKUs."""
    bound: frozenset[str] = frozenset()
    """Every subject that a ``g`` rule binds to a role, in any department. Casbin is
    asked only about these: a webhook sees a new identity with every new user, and
    Casbin's role manager slows with every name it was ever asked about (after 12,000
    distinct users a new one cost 24 ms), while an unbound one holds no role anyway."""


class Authorizer:
    """A typed facade over Casbin, with a decision cache.

    Casbin evaluates its matcher once per ``p`` rule and each evaluation costs tens of
    microseconds in pycasbin, so one enforcer over a large organisation's narrowed
    bindings would make each uncached decision cost milliseconds. The policies are
    therefore split by department: each department gets its own small enforcer (built
    on its first question) holding its own rules and those of every department
    (``*``). The answer is the same as one enforcer over all rules, since a rule of
    another department never matches.

    Thread-safe for readers: :meth:`reload` loads a new state and swaps it in at once.
    """

    CACHE_LIMIT: Final = 100_000

    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter
        self._lock = threading.Lock()
        self._enforce_lock = threading.Lock()
        self._state = self._load()

    @classmethod
    def from_bindings(cls, bindings: Iterable[RoleBinding]) -> Authorizer:
        return cls(ListAdapter(policies_for(bindings)))

    @classmethod
    def from_policies(cls, policies: Iterable[Policy]) -> Authorizer:
        return cls(ListAdapter(list(policies)))

    def _load(self) -> _State:
        model = casbin.Enforcer.new_model(text=_MODEL_TEXT)
        self._adapter.load_policy(model)
        p_rules: dict[str, list[list[str]]] = defaultdict(list)
        g_rules: dict[str, list[list[str]]] = defaultdict(list)
        for rule in model["p"]["p"].policy:
            p_rules[rule[1]].append(rule)
        for rule in model["g"]["g"].policy:
            g_rules[rule[2]].append(rule)
        bound = frozenset(rule[0] for rules in g_rules.values() for rule in rules)
        return _State(
            p_rules=p_rules,
            g_rules=g_rules,
            enforcers={},
            cache={},
            bound=bound,
        )

    def reload(self) -> None:
        """Re-read the policies (after ``revisions.apply``) and forget cached decisions."""
        state = self._load()
        with self._lock:
            self._state = state

    def _enforcer(self, state: _State, department: str) -> Any:
        enforcer = state.enforcers.get(department)
        if enforcer is not None:
            return enforcer
        with self._lock:
            enforcer = state.enforcers.get(department)
            if enforcer is None:
                policies: list[Policy] = []
                for dom in {department, EVERY_DEPARTMENT}:
                    policies += [("p", *r) for r in state.p_rules.get(dom, ())]
                    policies += [("g", *r) for r in state.g_rules.get(dom, ())]
                enforcer = casbin.Enforcer(
                    casbin.Enforcer.new_model(text=_MODEL_TEXT), ListAdapter(policies)
                )
                enforcer.add_function("objectMatch", object_match)
                state.enforcers[department] = enforcer
        return enforcer

    # -- questions ---------------------------------------------------------------

    def can_use(self, identity: Identity, department: str, queue: str, sku: str) -> Decision:
        return self._decide(
            identity,
            department,
            use_object(queue, sku),
            ACTION_USE,
            what=f"use queue {department}/{queue} with SKU {sku}",
            queue=queue,
        )

    def can_view(self, identity: Identity, department: str) -> Decision:
        return self._decide(
            identity,
            department,
            OBJECT_DEPARTMENT,
            ACTION_VIEW,
            what=f"view department {department}",
        )

    def can_edit_quota(self, identity: Identity, department: str) -> Decision:
        return self._decide(
            identity,
            department,
            OBJECT_QUOTA,
            ACTION_EDIT,
            what=f"change the quotas of department {department}",
        )

    def visible_departments(self, identity: Identity, departments: Iterable[str]) -> list[str]:
        return [d for d in departments if self.can_view(identity, d).allowed]

    # -- internals ---------------------------------------------------------------

    def _decide(
        self,
        identity: Identity,
        dom: str,
        obj: str,
        act: str,
        *,
        what: str,
        queue: str | None = None,
    ) -> Decision:
        state = self._state
        cache = state.cache
        subjects = identity.subjects()
        key = (subjects, dom, obj, act)
        found = cache.get(key)
        if found is not None:
            return found
        enforcer = self._enforcer(state, dom)
        # Casbin's matcher evaluation is not thread-safe on CPython 3.11 (simpleeval's
        # ast.parse from two threads at once fails: gh-106905); cached answers above
        # need no lock.
        with self._enforce_lock:
            decision = self._enforce(state, enforcer, subjects, dom, obj, act, what, queue)
        if len(cache) >= self.CACHE_LIMIT:
            cache.clear()
        cache[key] = decision
        return decision

    def _enforce(
        self,
        state: _State,
        enforcer: Any,
        subjects: tuple[str, ...],
        dom: str,
        obj: str,
        act: str,
        what: str,
        queue: str | None,
    ) -> Decision:
        roles = state.roles  # the state whose enforcer this is
        for subject in subjects:
            held = roles.get((subject, dom))
            if held is None:
                if len(roles) >= self.CACHE_LIMIT:
                    roles.clear()
                held = roles[(subject, dom)] = holders(enforcer, subject, dom, state.bound)
            rule = match(enforcer, subject, dom, obj, act, held)
            if rule is not None:
                rule_t = tuple(str(v) for v in rule)
                where = (
                    "every department"
                    # the role manager's hash lookup, not has_grouping_policy's scan
                    # of every g rule (20,000 in a large organisation)
                    if rule_t[0] in enforcer.get_roles_for_user_in_domain(subject, EVERY_DEPARTMENT)
                    else f"department {dom}"
                )
                return Decision(
                    allowed=True,
                    subject=subject,
                    rule=rule_t,
                    explanation=(
                        f"{subject} may {what}: bound as {rule_t[0]} in {where} "
                        f"(rule p, {', '.join(rule_t)})."
                    ),
                )
        return Decision(
            allowed=False,
            subject=None,
            rule=None,
            explanation=self._denial(enforcer, state.bound, subjects, dom, act, what, queue),
        )

    def _denial(
        self,
        enforcer: Any,
        bound: frozenset[str],
        subjects: tuple[str, ...],
        dom: str,
        act: str,
        what: str,
        queue: str | None,
    ) -> str:
        held: list[str] = []
        usable: list[str] = []
        for subject in subjects:
            if subject not in bound:  # holds no role; see _State.bound
                continue
            for where in (dom, EVERY_DEPARTMENT):
                for role in enforcer.get_roles_for_user_in_domain(subject, where):
                    held.append(f"{subject} is {role} in {_domain_words(where)}")
                    if where == dom and role.startswith(MEMBER + "["):
                        for rule in enforcer.get_filtered_policy(0, role, dom):
                            if rule[3] == ACTION_USE:
                                _, q, _, s = rule[2].split("/")
                                usable.append(
                                    f"{dom}/{q if q != '*' else '(any queue)'} with "
                                    f"{'any SKU' if s == '*' else 'SKU ' + s}"
                                )
        admins = sorted(enforcer.get_users_for_role_in_domain(DEPT_ADMIN, dom))
        ask = f"a dept-admin of {dom}" + (f" ({', '.join(admins)})" if admins else "")
        tried = ", ".join(subjects)
        holds = "; ".join(held) if held else "none of them holds a role there"
        if act == ACTION_USE:
            advice = f"Ask {ask} to bind you as member"
            if queue is not None:
                advice += f" (of queue {queue})"
            if usable:
                advice += f", or use a queue you may use: {', '.join(sorted(set(usable)))}"
            advice += "."
        elif act == ACTION_VIEW:
            advice = f"Ask {ask} to bind you as viewer or member of {dom}."
        else:
            advice = (
                f"Only dept-admins of {dom} and platform-admins change its quotas: ask a "
                f"platform-admin to bind you as dept-admin of {dom}, or ask {ask}."
            )
        return f"denied: {tried} may not {what} ({holds}). {advice}"


class _Viewing(Protocol):
    def can_view(self, identity: Identity, department: str) -> object: ...


def warm(authorizer: _Viewing, departments: Iterable[str], *, collect: bool = False) -> None:
    """Build every department's enforcer now (each is otherwise built on its first
    question), then move everything the process holds so far out of the cyclic
    collector's sight (``gc.freeze``).

    Servers call it once their organisation is loaded: the organisation, its policies
    and enforcers live until the next revision, and in a large organisation each full
    collection walking them again cost tens to a hundred milliseconds, paid by
    whichever request happened to trigger it (the webhook's non-GPU admissions; the
    console's callbacks of a 3,000-GPU fleet had a 220 ms p95 over a 100 ms p50).

    ``collect`` runs a full collection first, so that no garbage of the start-up is
    frozen with the rest: only before serving, since in a large organisation it stops
    the process for 0.1-0.2 s (the webhook warms each new revision while it serves,
    and does not)."""
    nobody = Identity(user="system:gpupool:rbac-warm-up")
    for department in departments:
        authorizer.can_view(nobody, department)
    if collect:
        gc.collect()
    gc.freeze()


def _domain_words(dom: str) -> str:
    return "every department" if dom == EVERY_DEPARTMENT else f"department {dom}"


class ListAdapter(persist.Adapter):  # type: ignore[misc]
    """Policies held in memory (``Authorizer.from_bindings``), read again on each load."""

    def __init__(self, policies: list[Policy]) -> None:
        self.policies = policies

    def load_policy(self, model: Any) -> None:
        for rule in self.policies:
            assertion = model.model.get(rule[0][0], {}).get(rule[0])
            if assertion is not None:
                assertion.policy.append(list(rule[1:]))


__all__ = [
    "ROLES",
    "Authorizer",
    "Decision",
    "Identity",
    "ListAdapter",
    "normalize_subject",
    "policies_for",
]
