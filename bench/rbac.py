"""How fast the compiled RBAC policy answers with a large organisation's bindings.

Builds role bindings for N departments (default 1,000, about 20,000 Casbin rules:
a dept-admin, 14 members, a group, two viewers per department, a narrowed
service-account binding in every fifth one, platform admins and global viewers), then
times, per decision:

* ``first``: the first question in a department;
* ``allow`` / ``deny``: uncached questions in a department already asked once;
* ``cached``: the same question again;

and, as the baseline in the same run, one plain Casbin enforcer over all rules (what
``casbin.Enforcer(model, adapter).enforce_ex`` costs: the reference that
tests/property/test_rbac_casbin.py holds the compiled policy to).
Every answer is checked: the allow questions (a member of the department) must be
allowed and the deny ones (a member of another department) denied, by the facade and
by the baseline alike; the bench fails at the first wrong answer. Prints a table, then
one JSON object as the last line (``samples``: how many calls each row rests on).
``--quick`` ends within 30 s.

    python bench/rbac.py [--quick] [--departments N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import casbin
from casbin import persist

from bench import stats
from governance import rbac
from governance.model import RoleBinding


def bindings(departments: int) -> list[RoleBinding]:
    out = [
        RoleBinding(role="platform-admin", department="*", subjects=("group:platform",)),
        RoleBinding(role="viewer", department="*", subjects=("group:finance",)),
    ]
    for d in range(departments):
        dept = f"dept-{d}"
        out += [
            RoleBinding(role="dept-admin", department=dept, subjects=(f"user:admin-{d}",)),
            RoleBinding(
                role="member",
                department=dept,
                subjects=(*(f"user:u{d}-{i}" for i in range(14)), f"group:team-{d}"),
            ),
            RoleBinding(role="viewer", department=dept, subjects=(f"user:v{d}", f"user:w{d}")),
        ]
        if d % 5 == 0:
            out.append(
                RoleBinding(
                    role="member",
                    department=dept,
                    subjects=(f"system:serviceaccount:ns-{d}:ci",),
                    queues=("q0", "q1"),
                    skus=("s1",),
                )
            )
    return out


class _Rules(persist.Adapter):  # type: ignore[misc]
    """The rules, in their order, for a plain Casbin enforcer (the baseline)."""

    def __init__(self, rules: list[rbac.Rule]) -> None:
        self.rules = rules

    def load_policy(self, model: Any) -> None:
        for rule in self.rules:
            model.model[rule[0][0]][rule[0]].policy.append(list(rule[1:]))


def enforcer_of(rules: list[rbac.Rule]) -> Any:
    found = casbin.Enforcer(str(rbac.MODEL_PATH), _Rules(rules))
    found.add_function("objectMatch", rbac.object_match)
    return found


class WrongAnswer(SystemExit):
    """A question got the other answer than the bindings give."""


def per_call_us(
    name: str, fn: Callable[[int], bool], n: int, *, allowed: bool
) -> tuple[float, float]:
    """Median and p99 of ``fn(i)`` for i in range(n), in microseconds; every call must
    answer ``allowed``."""
    samples = []
    for i in range(n):
        t = time.perf_counter()
        answer = fn(i)
        samples.append((time.perf_counter() - t) * 1e6)
        if answer is not allowed:
            raise WrongAnswer(f"{name}: question {i} answered allowed={answer}, expected {allowed}")
    return stats.percentile(samples, 0.5), stats.percentile(samples, 0.99)


def identities(policies: list[rbac.Rule], seen: int, probe: int) -> dict[str, float]:
    """Decisions for identities never seen before, in one warm department: the median
    for the first ``probe`` ones and after ``seen`` others were asked (users who come in
    through their group, as through an identity provider). Baseline, the same run: the
    same questions put to a Casbin enforcer over the department's rules, whose role
    manager keeps an entry for every name it is asked about."""
    dept, obj = "dept-0", rbac.use_object("q0", "s0")
    auth = rbac.Policy(policies)
    dept_rules = [r for r in policies if r[0] == "g" and r[3] in (dept, "*")] + [
        r for r in policies if r[0] == "p" and r[2] in (dept, "*")
    ]
    enforcer = enforcer_of(dept_rules)

    def identity(i: int) -> rbac.Identity:
        return rbac.Identity(user=f"new-{i}", groups=("system:authenticated", "team-0"))

    def facade(i: int) -> bool:
        return auth.can_use(identity(i), dept, "q0", "s0").allowed

    def direct(i: int) -> bool:
        return any(
            enforcer.enforce_ex(subject, dept, obj, rbac.ACTION_USE)[0]
            for subject in identity(i).subjects()
        )

    out: dict[str, float] = {}
    for name, ask in (("facade", facade), ("baseline", direct)):
        early = per_call_us(name, ask, probe, allowed=True)[0]
        for i in range(probe, seen):
            ask(i)
        late = per_call_us(
            name,
            lambda i, ask=ask: ask(seen + i),
            probe,
            allowed=True,  # type: ignore[misc]
        )[0]
        out[f"{name}_new_identity_p50_us_first"] = round(early, 1)
        out[f"{name}_new_identity_p50_us_after_seen"] = round(late, 1)
        out[f"{name}_growth_ratio"] = round(late / early, 2)
    out["identities_seen"] = seen
    late = "new_identity_p50_us_after_seen"
    out["after_seen_speedup_vs_baseline"] = round(
        out[f"baseline_{late}"] / out[f"facade_{late}"], 1
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--departments", type=int, default=1000)
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    depts = args.departments

    policies = rbac.policies_for(bindings(depts))
    t = time.perf_counter()
    auth = rbac.Policy(policies)
    load_s = time.perf_counter() - t

    def who(d: int) -> rbac.Identity:
        return rbac.Identity(user=f"u{d}-3", groups=("system:authenticated",))

    step = max(1, depts // n)
    picks = [(i * step) % depts for i in range(n)]

    def use(asker: int, dept: int, queue: str, sku: str) -> bool:
        return auth.can_use(who(asker), f"dept-{dept}", queue, sku).allowed

    first = per_call_us("first", lambda i: use(picks[i], picks[i], "q0", "s0"), n, allowed=True)
    allow = per_call_us("allow", lambda i: use(picks[i], picks[i], "q1", "s1"), n, allowed=True)
    # A user of the next department asks in this one (already warm): denied.
    deny = per_call_us(
        "deny", lambda i: use((picks[i] + 1) % depts, picks[i], "q2", "s2"), n, allowed=False
    )
    cached = per_call_us("cached", lambda i: use(picks[i], picks[i], "q1", "s1"), n, allowed=True)

    # Baseline: one enforcer over every rule, asked the same uncached questions.
    enforcer = enforcer_of(policies)
    for d in picks:  # build the per-domain role managers first
        enforcer.enforce_ex(f"user:u{d}-3", f"dept-{d}", "queue/q0/sku/s0", "use")
    m = max(stats.min_samples(0.99), n // 10)

    def base_allow(i: int) -> bool:
        d = picks[i]
        for subject in (f"user:u{d}-3", "group:system:authenticated"):
            if enforcer.enforce_ex(subject, f"dept-{d}", "queue/q1/sku/s1", "use")[0]:
                return True
        return False

    def base_deny(i: int) -> bool:
        d = picks[i]
        answers = [
            enforcer.enforce_ex(subject, f"dept-{d}", "queue/q2/sku/s2", "use")[0]
            for subject in (f"user:u{(d + 1) % depts}-3", "group:system:authenticated")
        ]
        return any(answers)

    b_allow = per_call_us("baseline allow", base_allow, m, allowed=True)
    b_deny = per_call_us("baseline deny", base_deny, m, allowed=False)
    fresh = identities(policies, seen=2000 if args.quick else 5000, probe=100)

    rows = [
        ("first question in a department", *first),
        ("uncached allow", *allow),
        ("uncached deny (with explanation)", *deny),
        ("cached", *cached),
        ("baseline: one enforcer, allow", *b_allow),
        ("baseline: one enforcer, deny (no explanation)", *b_deny),
    ]
    print(f"{len(policies)} policies, {depts} departments, load {load_s * 1000:.0f} ms")
    print(f"{'decision':48} {'p50 us':>10} {'p99 us':>10}")
    for name, p50, p99 in rows:
        print(f"{name:48} {p50:10.1f} {p99:10.1f}")
    print(f"\nnew identities, p50 us: first 100 / after {fresh['identities_seen']:.0f} others")
    for name in ("facade", "baseline"):
        print(
            f"{name + (' (Casbin role manager)' if name == 'baseline' else ''):48} "
            f"{fresh[name + '_new_identity_p50_us_first']:10.1f} "
            f"{fresh[name + '_new_identity_p50_us_after_seen']:10.1f}"
        )
    result = {
        "policies": len(policies),
        "departments": depts,
        "load_ms": round(load_s * 1000, 1),
        "first_p50_us": round(first[0], 1),
        "uncached_allow_p50_us": round(allow[0], 1),
        "uncached_allow_p99_us": round(allow[1], 1),
        "uncached_deny_p50_us": round(deny[0], 1),
        "cached_p50_us": round(cached[0], 2),
        "cached_p99_us": round(cached[1], 2),
        "baseline_allow_p50_us": round(b_allow[0], 1),
        "baseline_deny_p50_us": round(b_deny[0], 1),
        "allow_speedup_vs_baseline": round(b_allow[0] / allow[0], 1),
        "deny_speedup_vs_baseline": round(b_deny[0] / deny[0], 1),
        "answers_checked": True,
        "samples": {
            "first_p50_us": n,
            "uncached_allow_p99_us": n,
            "uncached_deny_p50_us": n,
            "cached_p99_us": n,
            "baseline_allow_p50_us": m,
            "baseline_deny_p50_us": m,
        },
        **fresh,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
