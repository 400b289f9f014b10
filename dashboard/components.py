"""The building blocks every page is laid out with: cards, graphs, tables, KPI cards,
alerts, notes and CSV buttons, in the console's look.

A page module (:mod:`dashboard.pages`) arranges these; none of them knows a page.
"""

from __future__ import annotations

from typing import Any, Literal

import dash_bootstrap_components as dbc
from dash import dcc, html
from dash.dash_table.DataTable import DataTable

from dashboard import views
from dashboard.shared import PAGE_ROWS, Kpi, Problem

GRAPH_CONFIG: Any = {"displaylogo": False, "displayModeBar": False, "responsive": True}

Columns = list[tuple[str, str]]
"""A table's columns: (row field, header)."""

NUMERIC_FIELDS = {
    "slices",
    "memory_allocated_gib",
    "memory_used_gib",
    "compute_allocated_pct",
    "compute_used_pct",
    "compute_allocated_gpus",
    "compute_used_gpus",
    "compute_efficiency_pct",
    "idle_slices",
    "idle_memory_gib",
    "processes",
}
"""Row fields (of :mod:`dashboard.views`' tables) that sort and align as numbers."""
SLICE_COLUMNS: Columns = [
    ("namespace", "Namespace"),
    ("pod", "Pod"),
    ("container", "Container"),
    ("department", "Department"),
    ("queue", "Queue"),
    ("sku", "SKU"),
    ("node", "Node"),
    ("memory_allocated_gib", "Mem alloc GiB"),
    ("memory_used_gib", "Mem used GiB"),
    ("compute_allocated_pct", "Compute alloc %"),
    ("compute_used_pct", "Compute used %"),
]
"""The columns of every table of slices (:func:`dashboard.views.slice_table`)."""


def graph(id_: str, height: int = 320, figure: views.Figure | None = None) -> dcc.Graph:
    return dcc.Graph(
        id=id_,
        config=GRAPH_CONFIG,
        figure=figure or views.message_figure("Loading…", height=height),
        style={"minHeight": f"{height}px"},
    )


def or_blank(figure: views.Figure | None) -> views.Figure:
    """A figure, or an empty plot where a page has none to show."""
    return figure or views.message_figure("")


def card(title: Any, body: Any, *, actions: Any = None, class_name: str = "") -> dbc.Card:
    header = dbc.CardHeader(
        html.Div(
            [html.Span(title, className="fw-semibold"), html.Div(actions or [])],
            className="d-flex justify-content-between align-items-center",
        ),
        className="bg-white",
    )
    return dbc.Card(
        [header, dbc.CardBody(body, className="p-2")], className=f"shadow-sm mb-3 {class_name}"
    )


def graph_card(title: str, id_: str, height: int, figure: views.Figure | None) -> dbc.Card:
    return card(title, graph(id_, height, figure))


# -- CSV downloads: a page's buttons and its one download, named by the page's prefix --


def download_id(prefix: str) -> str:
    """The id of the page's ``dcc.Download``."""
    return f"{prefix}-download"


def csv_button_type(prefix: str) -> str:
    """The ``type`` in the pattern id of the page's CSV buttons."""
    return f"csv-{prefix}"


def download(prefix: str) -> dcc.Download:
    return dcc.Download(id=download_id(prefix))


def csv_button(prefix: str, table: str) -> dbc.Button:
    return dbc.Button(
        "Download CSV",
        id={"type": csv_button_type(prefix), "table": table},
        size="sm",
        color="secondary",
        outline=True,
        n_clicks=0,
    )


# -- tables ----------------------------------------------------------------------------


def grid(
    id_: str,
    columns: Columns,
    *,
    height: int = 320,
    rows: list[dict[str, Any]] | None = None,
    server_side: bool = False,
    page_count: int | None = None,
) -> DataTable:
    # Dash's DataTable rather than AG Grid: its code is a 33 KB bundle that Dash loads
    # anyway plus a 0.5 MB chunk fetched when a table is first drawn, where AG Grid
    # cost 2.2 MB of script on every page, and a page of 20 rows is a plain HTML table
    # (no measuring pass). Sorting, filtering and paging stay in the browser, except
    # for ``server_side`` tables (one per GPU of the fleet): the browser asks for each
    # page, sorted and filtered, and only that page travels (dashboard.tables).
    defs: list[Any] = []
    for field, name in columns:
        col: dict[str, Any] = {"id": field, "name": name}
        if field in NUMERIC_FIELDS:
            col["type"] = "numeric"
        defs.append(col)
    action: Literal["custom", "native"] = "custom" if server_side else "native"
    paging: dict[str, Any] = (
        {"page_current": 0, "page_count": page_count or 1, "sort_by": [], "filter_query": ""}
        if server_side
        else {}
    )
    return DataTable(
        id=id_,
        columns=defs,
        data=list[Any](rows or []),
        sort_action=action,
        filter_action=action,
        page_action=action,
        page_size=PAGE_ROWS,
        **paging,
        style_table={"maxHeight": f"{height}px", "overflowY": "auto", "overflowX": "auto"},
        style_header={
            "fontWeight": "600",
            "backgroundColor": "#f8f9fa",
            "whiteSpace": "normal",
            "height": "auto",
        },
        style_cell={
            "fontFamily": views.FONT,
            "fontSize": "13px",
            "textAlign": "left",
            "padding": "4px 8px",
            "minWidth": "80px",
            "maxWidth": "320px",
            "overflow": "hidden",
            "textOverflow": "ellipsis",
        },
        style_cell_conditional=[
            {"if": {"column_type": "numeric"}, "textAlign": "right"},
            {"if": {"column_id": "message"}, "whiteSpace": "normal", "minWidth": "300px"},
        ],
        style_filter={"backgroundColor": "white"},
    )


def table_card(
    title: Any,
    id_: str,
    columns: Columns,
    *,
    rows: list[dict[str, Any]] | None,
    note: Any,
    height: int,
    csv: tuple[str, str],
    above: list[Any] | None = None,
    server_side: bool = False,
    page_count: int | None = None,
) -> dbc.Card:
    """A card holding a table, the sentence under its headers that says why it is
    empty (component ``{id_}-note``), and its CSV button (``csv``: page prefix, table
    name); ``above``: what stands over the table (a status line)."""
    table = grid(
        id_, columns, height=height, rows=rows, server_side=server_side, page_count=page_count
    )
    return card(
        title,
        [*(above or []), table, html.Div(note, id=f"{id_}-note")],
        actions=csv_button(*csv),
    )


def note(text: str | None) -> Any:
    """What stands in an empty table's place: that it has no rows, and why."""
    if not text:
        return []
    return html.Div(text, className="small text-muted fst-italic px-2 py-2 no-rows")


# -- states ----------------------------------------------------------------------------


def kpi_cards(kpis: list[Kpi]) -> list[Any]:
    cols = []
    for k in kpis:
        tone = f" border-start border-4 border-{k.tone}" if k.tone else ""
        cols.append(
            dbc.Col(
                dbc.Card(
                    dbc.CardBody(
                        [
                            html.Div(
                                k.label, className="text-muted small text-uppercase kpi-label"
                            ),
                            html.Div(k.value, className="fs-5 fw-semibold kpi-value text-nowrap"),
                            html.Div(k.note, className="small text-muted"),
                        ],
                        className="py-2",
                    ),
                    className=f"shadow-sm h-100{tone}",
                ),
                xs=12,
                sm=6,
                lg=3,
                xl=True,
                className="mb-3",
            )
        )
    return cols


def problem_alerts(problems: list[Problem]) -> list[Any]:
    return [
        dbc.Alert(
            [html.Strong(p.title + ". "), html.Span(p.detail)],
            color=p.tone,
            className="py-2 mb-3 problem",
        )
        for p in problems
    ]


def department_select(
    id_: str, label: str, options: list[dict[str, str]], value: str | None
) -> dbc.InputGroup:
    """The small labelled selector a page's departments are chosen with."""
    return dbc.InputGroup(
        [dbc.InputGroupText(label), dbc.Select(id=id_, options=options, value=value)],
        size="sm",
    )
