"""Paging, sorting and filtering a table on the server, as Dash's DataTable asks for
it with ``page_action``, ``sort_action`` and ``filter_action`` set to "custom".

A table whose rows are too many to send whole (the GPU list of a 3,000-GPU fleet is
650 KB of rows, refreshed every scrape) sends one page: the browser sends the page
number, ``sort_by`` and ``filter_query``, and the server answers that page and the
page count. The semantics follow DataTable's native ones, so that a table reads the
same either way:

* filtering is on the displayed values of each row (the rounded GiB and percentages);
  on a numeric column ``=``/``<``/``>``... compare numbers, ``contains`` the text; on a
  text column they compare text, case-sensitively unless the operator starts with
  ``i`` (``icontains``, ``i=``), as DataTable's case toggle writes it;
* the filter row joins one condition per column with ``&&``; ``||``, ``!`` and the
  ``is ...`` tests of DataTable's full grammar are not supported, and say so;
* sorting is stable, by each ``sort_by`` column in turn, empty values last.

Everything from the browser is untrusted: unknown columns are ignored, page numbers
and sizes are clamped, and a filter that cannot be read raises :class:`FilterError`
with a message for the page instead of failing the callback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PAGE_SIZE = 500

_OPS = {
    "=": "=",
    "eq": "=",
    "!=": "!=",
    "ne": "!=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "le": "<=",
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "ge": ">=",
    "contains": "contains",
    "datestartswith": "startswith",
}

_CONDITION = re.compile(
    r"""\s*\{(?P<column>[^{}]+)\}\s*
        (?P<op>[a-z]*(?:>=|<=|!=|=|<|>)|[a-z]+)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|[^\s&|]+)?\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"\s*(?:&&|\band\b)\s*")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`(?:[^`\\]|\\.)*`')


class FilterError(ValueError):
    """A filter the table cannot apply; the message says what and why."""


@dataclass(frozen=True)
class Condition:
    """``{column} op value``: one column's filter."""

    column: str
    op: str
    """One of =, !=, <, <=, >, >=, contains, startswith."""
    value: str
    case_sensitive: bool = True

    def matches(self, cell: Any, numeric: bool) -> bool:
        if cell is None or cell == "":
            return False
        if numeric and self.op not in ("contains", "startswith"):
            try:  # a word against a number, or a cell that is not one, matches nothing
                want: Any = float(self.value)
                have: Any = float(cell)
            except (TypeError, ValueError):
                return False
        else:
            have, want = str(cell), self.value
            if not self.case_sensitive:
                have, want = have.casefold(), want.casefold()
        match self.op:
            case "=":
                return bool(have == want)
            case "!=":
                return bool(have != want)
            case "<":
                return bool(have < want)
            case "<=":
                return bool(have <= want)
            case ">":
                return bool(have > want)
            case ">=":
                return bool(have >= want)
            case "contains":
                return str(want) in str(have)
            case _:
                return str(have).startswith(str(want))


def parse_filter(text: str | None, columns: Collection[str]) -> list[Condition]:
    """The conditions of DataTable's ``filter_query`` on ``columns``.

    Raises FilterError for what cannot be read or is not supported."""
    if not text or not text.strip():
        return []
    unquoted = _QUOTED.sub('""', text)
    if "||" in unquoted or re.search(r"\bor\b", unquoted):
        raise FilterError("only conditions joined by && can be applied, not ||")
    out: list[Condition] = []
    pos = 0
    while pos < len(text):
        found = _CONDITION.match(text, pos)
        if found is None:
            raise FilterError(f"cannot read the filter at {text[pos : pos + 30]!r}")
        column = found["column"].strip()
        if column not in columns:
            raise FilterError(f"there is no column {column!r} to filter on")
        op_text = found["op"]
        sensitive = True
        if op_text[:1] in ("s", "i") and op_text[1:] in _OPS:
            sensitive, op_text = op_text[0] == "s", op_text[1:]
        op = _OPS.get(op_text)
        if op is None:
            raise FilterError(f"the filter operator {found['op']!r} is not supported")
        raw = found["value"]
        if raw is None:
            raise FilterError(f"the filter on {column!r} has no value")
        if raw[:1] in "\"'`" and raw[-1:] == raw[:1] and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out.append(Condition(column=column, op=op, value=raw, case_sensitive=sensitive))
        pos = found.end()
        joined = _AND.match(text, pos)
        if joined is not None and joined.end() > pos:
            pos = joined.end()
        elif pos < len(text):
            raise FilterError(f"cannot read the filter at {text[pos : pos + 30]!r}")
    return out


@dataclass(frozen=True, kw_only=True)
class View:
    """What the browser asks of a table: a page of it, sorted and filtered."""

    page: int = 0
    size: int = 20
    sort_by: tuple[tuple[str, bool], ...] = ()
    """(column, descending) in order of precedence."""
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def from_table(
        cls,
        columns: Collection[str],
        *,
        page_current: object = 0,
        page_size: object = 20,
        sort_by: object = None,
        filter_query: object = None,
    ) -> View:
        """The view of DataTable's props (untrusted: clamped, unknown columns dropped).

        Raises FilterError for a filter that cannot be applied."""
        page = page_current if isinstance(page_current, int) and page_current > 0 else 0
        size = page_size if isinstance(page_size, int) and page_size > 0 else 20
        order: list[tuple[str, bool]] = []
        if isinstance(sort_by, list):
            for item in sort_by:
                if isinstance(item, Mapping) and item.get("column_id") in columns:
                    order.append((str(item["column_id"]), item.get("direction") == "desc"))
        text = filter_query if isinstance(filter_query, str) else None
        return cls(
            page=page,
            size=min(size, MAX_PAGE_SIZE),
            sort_by=tuple(order),
            conditions=tuple(parse_filter(text, columns)),
        )

    def columns(self) -> set[str]:
        """The columns this view sorts or filters by."""
        return {c for c, _ in self.sort_by} | {c.column for c in self.conditions}

    def select(
        self, rows: Sequence[Mapping[str, Any]], numeric: Collection[str], *, whole: bool = False
    ) -> tuple[list[int], int]:
        """(the indices into ``rows`` of this page, or of every matching row when
        ``whole``; the number of matching rows)."""
        kept = [
            i
            for i, row in enumerate(rows)
            if all(c.matches(row.get(c.column), c.column in numeric) for c in self.conditions)
        ]
        for column, descending in reversed(self.sort_by):
            present = [i for i in kept if rows[i].get(column) not in (None, "")]
            absent = [i for i in kept if rows[i].get(column) in (None, "")]
            present.sort(key=lambda i: rows[i][column], reverse=descending)
            kept = present + absent
        total = len(kept)
        if whole:
            return kept, total
        start = min(self.page, max(0, self.page_count(total) - 1)) * self.size
        return kept[start : start + self.size], total

    def page_count(self, total: int) -> int:
        return max(1, math.ceil(total / self.size))
