"""Who may use which queue and SKU, view a department, change its quotas.

The model is Casbin's RBAC with domains, a domain being a department
(``rbac_model.conf``, in this package, is its definition). Four roles:

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
form kept in rules): ``user:NAME``, ``group:NAME``, Kubernetes service accounts
``system:serviceaccount:NS:NAME``, and the groups ``system:serviceaccounts:NS``,
``system:serviceaccounts`` and ``system:authenticated`` (kept as ``group:...``).

One truth: the rules are derived from a configuration revision's role bindings
(:func:`policies_for`) and compiled once per revision into a :class:`Policy`, which
the revision's snapshot holds (:mod:`governance.snapshot`) and every caller asks (the
webhook, ``gpupool check``, ``gpupool set quota``, the console). Nothing is stored: a
revision's bindings are its policy.

:class:`Policy` evaluates the model's matcher itself, in Python, over indexes built
from the rules (a subject's roles per department, each role's ``p`` rules): what a
Casbin enforcer over the same rules answers, rule for rule, without evaluating the
matcher string once per ``p`` rule (milliseconds per decision in a large organisation).
``tests/property/test_rbac_casbin.py`` holds it to one plain ``casbin.Enforcer`` over
all the rules with the model, over generated bindings and requests (use, view, edit):
the same verdict, the same matching subject and rule, the same explanation. Casbin is
a test dependency only. Every answer is a :class:`Decision` that names the subject and
the rule that matched, or, when denied, which subjects were tried and what to do.
"""

from __future__ import annotations

import gc
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from governance.contract import Reason
from governance.model import ROLES, RoleBinding

MODEL_PATH: Final = Path(__file__).with_name("rbac_model.conf")
"""The model's definition in Casbin's language (what :class:`Policy` computes)."""

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

Rule = tuple[str, ...]
"""One rule of the model, as Casbin writes them: (ptype, v0, v1, ...), e.g.
("g", "user:ana", "member", "ml")."""

ROLE_POLICIES: Final[tuple[Rule, ...]] = (
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


def policies_for(bindings: Iterable[RoleBinding]) -> list[Rule]:
    """Every casbin rule for ``bindings`` (subjects already canonical), sorted, unique."""
    rules: set[Rule] = set(ROLE_POLICIES)
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


@dataclass(frozen=True)
class _P:
    """A ``p`` rule, with its place in the rules' order (the first match is reported)."""

    index: int
    role: str
    dom: str
    obj: str
    act: str

    @property
    def rule(self) -> tuple[str, ...]:
        return (self.role, self.dom, self.obj, self.act)

    def matches(self, dom: str, obj: str, act: str) -> bool:
        return (
            self.dom in (EVERY_DEPARTMENT, dom)
            and self.act in ("*", act)
            and object_match(obj, self.obj)
        )


class Policy:
    """The compiled rules of one revision: answers ``can_use``, ``can_view``,
    ``can_edit_quota`` as the model would, from indexes.

    Built once per revision (:meth:`compile`), read by any number of threads: its only
    state after building is a cache of decisions, whose single-key reads and writes need
    no lock."""

    CACHE_LIMIT: Final = 100_000

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        """Every rule, in the order a Casbin enforcer would hold them."""
        p_rules = [r for r in self.rules if r[0] == "p"]
        self._by_role: dict[str, list[_P]] = defaultdict(list)
        for i, (_, role, dom, obj, act) in enumerate(p_rules):
            self._by_role[role].append(_P(index=i, role=role, dom=dom, obj=obj, act=act))
        roles: dict[tuple[str, str], list[str]] = defaultdict(list)
        users: dict[tuple[str, str], list[str]] = defaultdict(list)
        for _, subject, role, dom in (r for r in self.rules if r[0] == "g"):
            roles[(subject, dom)].append(role)
            users[(role, dom)].append(subject)
        self._roles: Mapping[tuple[str, str], tuple[str, ...]] = {
            k: tuple(v) for k, v in roles.items()
        }
        self._users: Mapping[tuple[str, str], tuple[str, ...]] = {
            k: tuple(v) for k, v in users.items()
        }
        self._cache: dict[tuple[object, ...], Decision] = {}

    @classmethod
    def compile(cls, bindings: Iterable[RoleBinding]) -> Policy:
        """The policy of ``bindings`` (subjects already canonical)."""
        return cls(policies_for(bindings))

    # -- the model ---------------------------------------------------------------

    def roles_of(self, subject: str, dom: str) -> tuple[str, ...]:
        """The roles a ``g`` rule gives ``subject`` in ``dom`` (not counting ``*``)."""
        return self._roles.get((subject, dom), ())

    def users_of(self, role: str, dom: str) -> tuple[str, ...]:
        """The subjects a ``g`` rule gives ``role`` in ``dom``."""
        return self._users.get((role, dom), ())

    def match(self, subject: str, dom: str, obj: str, act: str) -> tuple[str, ...] | None:
        """The first ``p`` rule (role, department, object, action) that the matcher
        accepts for this request, or None: ``p.sub`` is ``subject`` or a role it holds
        in ``dom`` or in every department."""
        held = (subject, *self.roles_of(subject, dom), *self.roles_of(subject, EVERY_DEPARTMENT))
        best: _P | None = None
        for role in held:
            for p in self._by_role.get(role, ()):  # in the rules' order
                if best is not None and p.index > best.index:
                    break
                if p.matches(dom, obj, act):
                    best = p
                    break
        return None if best is None else best.rule

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
        subjects = identity.subjects()
        key = (subjects, dom, obj, act)
        found = self._cache.get(key)
        if found is not None:
            return found
        decision = self._answer(subjects, dom, obj, act, what, queue)
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _answer(
        self,
        subjects: tuple[str, ...],
        dom: str,
        obj: str,
        act: str,
        what: str,
        queue: str | None,
    ) -> Decision:
        for subject in subjects:
            rule = self.match(subject, dom, obj, act)
            if rule is None:
                continue
            where = (
                "every department"
                if rule[0] in self.roles_of(subject, EVERY_DEPARTMENT)
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
        return Decision(
            allowed=False,
            subject=None,
            rule=None,
            explanation=self._denial(subjects, dom, act, what, queue),
        )

    def _denial(
        self, subjects: tuple[str, ...], dom: str, act: str, what: str, queue: str | None
    ) -> str:
        held: list[str] = []
        usable: list[str] = []
        for subject in subjects:
            for where in (dom, EVERY_DEPARTMENT):
                for role in self.roles_of(subject, where):
                    held.append(f"{subject} is {role} in {_domain_words(where)}")
                    if where == dom and role.startswith(MEMBER + "["):
                        for p in self._by_role.get(role, ()):
                            if p.dom == dom and p.act == ACTION_USE:
                                _, q, _, s = p.obj.split("/")
                                usable.append(
                                    f"{dom}/{q if q != '*' else '(any queue)'} with "
                                    f"{'any SKU' if s == '*' else 'SKU ' + s}"
                                )
        admins = sorted(self.users_of(DEPT_ADMIN, dom))
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


EMPTY: Final = Policy(ROLE_POLICIES)
"""The policy of an organisation without bindings (before the first apply)."""


class _Viewing(Protocol):
    def can_view(self, identity: Identity, department: str) -> object: ...


def warm(authorizer: _Viewing, departments: Iterable[str], *, collect: bool = False) -> None:
    """Answer a question in every department now (the first answers of a :class:`Policy`
    fill its caches), then move everything the process holds so far out of the cyclic
    collector's sight (``gc.freeze``).

    Servers call it once their organisation is loaded: the organisation and its policy
    live until the next revision, and in a large organisation each full
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


__all__ = [
    "EMPTY",
    "MODEL_PATH",
    "ROLES",
    "ROLE_POLICIES",
    "Decision",
    "Identity",
    "Policy",
    "Rule",
    "normalize_subject",
    "object_match",
    "policies_for",
    "use_object",
    "warm",
]
