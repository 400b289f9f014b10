"""Server-side paging, sorting and filtering of DataTable views (dashboard.tables)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.tables import Condition, FilterError, View, parse_filter

pytestmark = pytest.mark.unit

COLUMNS = ("node", "uuid", "slices", "used")
NUMERIC = {"slices", "used"}
ROWS: list[dict[str, Any]] = [
    {"node": "a100-node-002", "uuid": "GPU-b", "slices": 3, "used": 12.5},
    {"node": "a100-node-001", "uuid": "GPU-a", "slices": 0, "used": 0.0},
    {"node": "H100-node-001", "uuid": "GPU-c", "slices": 7, "used": 99.0},
    {"node": "h100-node-002", "uuid": "GPU-d", "slices": 1, "used": None},
]


def picked(view: View, *, whole: bool = True) -> list[str]:
    indices, _ = view.select(ROWS, NUMERIC, whole=whole)
    return [ROWS[i]["uuid"] for i in indices]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("{node} scontains node-001", ["GPU-a", "GPU-c"], id="contains"),
        pytest.param("{node} contains h100", ["GPU-d"], id="case-sensitive-by-default"),
        pytest.param("{node} icontains h100", ["GPU-c", "GPU-d"], id="icontains"),
        pytest.param("{slices} > 1", ["GPU-b", "GPU-c"], id="numeric-gt"),
        pytest.param("{slices} s= 3", ["GPU-b"], id="numeric-eq-with-case-prefix"),
        pytest.param("{slices} = 3.0", ["GPU-b"], id="numbers-compare-as-numbers"),
        pytest.param("{slices} contains 7", ["GPU-c"], id="contains-on-a-number"),
        pytest.param("{used} <= 12.5", ["GPU-b", "GPU-a"], id="empty-cells-never-match"),
        pytest.param('{uuid} = "GPU-d"', ["GPU-d"], id="quoted"),
        pytest.param("{node} i= 'h100-NODE-001'", ["GPU-c"], id="single-quoted-insensitive"),
        pytest.param("{slices} ge 1 && {node} scontains a100", ["GPU-b"], id="and"),
        pytest.param("{slices} ne 0 and {used} lt 50", ["GPU-b"], id="word-operators"),
        pytest.param("{node} datestartswith a100", ["GPU-b", "GPU-a"], id="prefix"),
        pytest.param("{slices} > many", [], id="a-word-against-a-number-matches-nothing"),
        pytest.param("", ["GPU-b", "GPU-a", "GPU-c", "GPU-d"], id="none"),
    ],
)
def test_filters_match_as_datatable_does(query: str, expected: list[str]) -> None:
    view = View.from_table(COLUMNS, filter_query=query)
    assert picked(view) == expected


@pytest.mark.parametrize(
    ("query", "says"),
    [
        pytest.param("{node} contains a || {slices} > 1", "not ||", id="or"),
        pytest.param("{node} contains a or {slices} > 1", "not ||", id="or-word"),
        pytest.param("{secret} = 1", "no column 'secret'", id="unknown-column"),
        pytest.param("{node} is blank", "operator 'is'", id="unary"),
        pytest.param("{node} contains", "has no value", id="no-value"),
        pytest.param("node = 1", "cannot read", id="no-braces"),
        pytest.param("{node} = a {slices} = 1", "cannot read", id="no-and"),
    ],
)
def test_filters_it_cannot_apply_say_why(query: str, says: str) -> None:
    with pytest.raises(FilterError, match=says.replace("|", r"\|")):
        parse_filter(query, COLUMNS)


def test_a_numeric_filter_on_a_cell_that_is_no_number_matches_nothing() -> None:
    rows = [{"slices": "n/a"}, {"slices": 2}]
    view = View.from_table(["slices"], filter_query="{slices} >= 1")
    assert view.select(rows, {"slices"}, whole=True) == ([1], 1)


def test_an_or_inside_a_quoted_value_is_just_text() -> None:
    assert parse_filter('{node} contains "a || b or c"', COLUMNS) == [
        Condition(column="node", op="contains", value="a || b or c")
    ]


def test_sorting_is_stable_multi_column_with_empty_cells_last() -> None:
    by_used = View.from_table(COLUMNS, sort_by=[{"column_id": "used", "direction": "desc"}])
    assert picked(by_used) == ["GPU-c", "GPU-b", "GPU-a", "GPU-d"]
    ascending = View.from_table(COLUMNS, sort_by=[{"column_id": "used", "direction": "asc"}])
    assert picked(ascending) == ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
    two = View.from_table(
        COLUMNS,
        sort_by=[
            {"column_id": "slices", "direction": "asc"},
            {"column_id": "node", "direction": "asc"},
        ],
    )
    assert picked(two) == ["GPU-a", "GPU-d", "GPU-b", "GPU-c"]


def test_pages_are_clamped_and_counted() -> None:
    view = View.from_table(COLUMNS, page_current=1, page_size=3)
    assert picked(view, whole=False) == ["GPU-d"]
    assert view.page_count(len(ROWS)) == 2
    beyond = View.from_table(COLUMNS, page_current=9, page_size=3)
    assert picked(beyond, whole=False) == ["GPU-d"]  # the last page, not nothing
    assert View.from_table(COLUMNS, page_size=10**9).size == 500
    assert View.from_table(COLUMNS, page_current=-4, page_size="x").page == 0
    assert View(size=3).page_count(0) == 1


def test_forged_sort_columns_are_ignored() -> None:
    view = View.from_table(
        COLUMNS,
        sort_by=[{"column_id": "__class__", "direction": "desc"}, "junk", {"direction": "asc"}],
    )
    assert view.sort_by == ()
    assert view.columns() == set()


@given(st.text(max_size=60))
def test_any_filter_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        conditions = parse_filter(text, COLUMNS)
    except FilterError as exc:
        assert str(exc)
    else:
        view = View(conditions=tuple(conditions))
        view.select(ROWS, NUMERIC, whole=True)


@given(
    st.sampled_from(["{slices} ", "{node} ", "{used} ", "{uuid} "]),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "contains", "icontains", "s=", "i="]),
    st.text(alphabet="aAhH0123456789.-", min_size=1, max_size=8),
)
def test_every_operator_applies_to_every_column(column: str, op: str, value: str) -> None:
    view = View.from_table(COLUMNS, filter_query=f"{column}{op} {value}")
    indices, total = view.select(ROWS, NUMERIC, whole=True)
    assert total == len(indices) <= len(ROWS)
