"""rbac.Policy evaluates rbac_model.conf's matcher in Python: for the example
organisation's policy it agrees with Casbin's own enforce_ex on every question (the
generated organisations are in tests/property/test_rbac_casbin.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from governance import config, rbac
from governance.model import Org
from tests.support import casbin_reference

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


@pytest.fixture(scope="module")
def org() -> Org:
    return config.build_org(config.load_document(EXAMPLE.read_text(), source=str(EXAMPLE)))


def questions(org: Org, rules: list[rbac.Rule]) -> list[tuple[str, str, str, str]]:
    subjects = {r[1] for r in rules if r[0] == "g"} | {
        "user:stranger",
        "system:serviceaccount:ml:default",
        "group:system:serviceaccounts:ml",
    }
    departments = [*org.departments, "nowhere"]
    objects = {"department", "quota", "queue/nowhere/sku/nothing"}
    for (_, queue), q in org.queues.items():
        for sku in org.skus.values():
            if q.pool in sku.pools:
                objects.add(rbac.use_object(queue, sku.name))
    actions = ("use", "view", "edit")
    return list(itertools.product(sorted(subjects), departments, sorted(objects), actions))


def test_python_matcher_agrees_with_casbin_on_every_question(org: Org) -> None:
    rules = rbac.policies_for(org.role_bindings)
    enforcer: Any = casbin_reference.enforcer(rules)
    policy = rbac.Policy(rules)
    asked = allowed = 0
    for sub, dom, obj, act in questions(org, rules):
        casbin_allowed, casbin_rule = enforcer.enforce_ex(sub, dom, obj, act)
        rule = policy.match(sub, dom, obj, act)
        assert (rule is not None) == casbin_allowed, (sub, dom, obj, act)
        if casbin_allowed:
            assert rule == tuple(casbin_rule), (sub, dom, obj, act)
            allowed += 1
        asked += 1
    # the table must exercise both answers, or the comparison proves nothing
    assert asked > 1000 and 0 < allowed < asked
