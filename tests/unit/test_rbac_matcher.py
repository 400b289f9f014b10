"""rbac.match evaluates rbac_model.conf's matcher in Python: it must agree with Casbin's
own enforce_ex on every question, for the example organisation's policies."""

from __future__ import annotations

import itertools
from pathlib import Path

import casbin
import pytest

from governance import config, rbac

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


@pytest.fixture(scope="module")
def enforcer() -> casbin.Enforcer:
    org = config.build_org(config.load_document(EXAMPLE.read_text(), source=str(EXAMPLE)))
    e = casbin.Enforcer(
        casbin.Enforcer.new_model(text=rbac._MODEL_TEXT),
        rbac.ListAdapter(rbac.policies_for(org.role_bindings)),
    )
    e.add_function("objectMatch", rbac.object_match)
    e.org = org
    return e


def questions(e: casbin.Enforcer) -> list[tuple[str, str, str, str]]:
    org = e.org
    subjects = {r[0] for r in e.get_named_grouping_policy("g")} | {
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


def test_python_matcher_agrees_with_casbin_on_every_question(enforcer: casbin.Enforcer) -> None:
    asked = allowed = 0
    for sub, dom, obj, act in questions(enforcer):
        casbin_allowed, casbin_rule = enforcer.enforce_ex(sub, dom, obj, act)
        rule = rbac.match(enforcer, sub, dom, obj, act)
        assert (rule is not None) == casbin_allowed, (sub, dom, obj, act)
        if casbin_allowed:
            assert rule == list(casbin_rule), (sub, dom, obj, act)
            allowed += 1
        asked += 1
    # the table must exercise both answers, or the comparison proves nothing
    assert asked > 1000 and 0 < allowed < asked
