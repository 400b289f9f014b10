"""The console's PromQL and its recording rules (pure; Prometheus itself runs in
tests/integration/test_dashboard_prometheus.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dashboard import queries

pytestmark = pytest.mark.unit

RULES_FILE = Path(queries.__file__).with_name("recording-rules.yaml")


def test_rules_file_records_exactly_the_module_rules() -> None:
    on_disk = yaml.safe_load(RULES_FILE.read_text())
    assert on_disk == queries.recording_rules_document()


def test_recorded_names_follow_the_level_metric_operation_convention() -> None:
    for rule in queries.RULES:
        level, metric, operation = rule.record.split(":")
        assert level in ("department_queue_sku", "department_uuid_hostname", "department", "slice")
        assert metric.startswith("gpupool_slice_")
        assert operation in ("sum", "count", "idle")


@pytest.mark.parametrize("rule", queries.RULES, ids=lambda r: r.record)
def test_a_scoped_raw_query_matches_the_department_in_every_selector(rule: queries.Rule) -> None:
    matcher = queries.department_matcher({"vision"})
    expr = rule.expr(matcher)
    selectors = re.findall(r"gpupool_slice_\w+(\{[^}]*\})?", expr)
    assert selectors and all(s == '{department=~"vision"}' for s in selectors), expr


def test_a_scoped_recorded_query_filters_the_recorded_series() -> None:
    rule = queries.QUEUE_RULES[0]
    query = queries.rule_query(rule, queries.department_matcher({"a", "b"}), recorded=True)
    assert query == f'{rule.record}{{department=~"a|b"}}'


def test_the_whole_fleet_has_no_department_matcher() -> None:
    assert queries.department_matcher(None) == ""
    assert "{" not in queries.rule_query(queries.QUEUE_RULES[1], "", recorded=False)


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        pytest.param("vision", "vision", id="plain"),
        pytest.param("a.b", "a\\\\.b", id="dot-is-literal"),
        pytest.param("x|y", "x\\\\|y", id="alternation-is-literal"),
        pytest.param('q"', 'q\\"', id="quote"),
    ],
)
def test_department_names_are_regex_literals(name: str, escaped: str) -> None:
    assert queries.regex_escape(name) == escaped


def test_idle_threshold_in_promql_is_the_model_threshold() -> None:
    from dashboard.model import IDLE_FRACTION

    idle = next(r for r in queries.QUEUE_RULES if r.key == "idle_slices")
    assert f"< {IDLE_FRACTION} *" in idle.expr()
