"""The Dash application: layout, routing and callbacks (the HTTP edge).

Each callback reads the viewer from the request headers (:meth:`Console.scope`), asks
:class:`dashboard.pages.Console` for that viewer's page, and turns the answer into
component properties. Authorisation happens here on the server for every callback:
the department dropdown only offers visible departments, but a forged request to
``/_dash-update-component`` naming another department gets "Not permitted" and no
data. Requests without a trusted identity get HTTP 401 before Dash sees them: proxy
headers count only from a trusted proxy's address (:mod:`dashboard.access`).

Every answer carries X-Frame-Options, X-Content-Type-Options and a
Content-Security-Policy (:func:`security_headers`) that Dash works under: scripts only
from the console and the hashes of Dash's own inline scripts, no framing. A path that
is no page of the console (``/metrics``, ``/wp-admin``) is 404, not the page's HTML.

Every asset is served by the console itself (``serve_locally``; Bootstrap's CSS is
vendored in ``assets/``): clusters often have no internet egress. So is plotly.js's
*cartesian* bundle (npm ``plotly.js-cartesian-dist-min``, the version that the
installed plotly package bundles; bar, pie, scatter and heatmap are all the console
draws): it defines ``window.Plotly``, so ``dcc.Graph`` never loads Dash's full bundle,
three times its size and most of a first render's script time.

A page arrives filled: the layout served to ``/_dash-layout`` holds the page of the
request's Referer already drawn for the viewer, so the first render costs no callback
round trip; page callbacks fire only when an input changes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dash
import dash_bootstrap_components as dbc
import flask
from dash import ALL, Input, Output, State, dcc, html
from dash.dash_table.DataTable import DataTable

from dashboard import views
from dashboard.access import AccessError, Scope
from dashboard.pages import (
    DEFAULT_RANGE,
    PAGE_ROWS,
    RANGES,
    Console,
    Kpi,
    Problem,
    refresh_ms,
    refresh_options,
)
from dashboard.sources import SourceError
from governance.errors import StoreError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("assets")
TITLE = "gpupool console"
PAGES = (("/", "Overview"), ("/departments", "Departments"), ("/gpus", "GPUs"))
GRAPH_CONFIG: Any = {"displaylogo": False, "displayModeBar": False, "responsive": True}


# -- small building blocks -------------------------------------------------------------


def graph(id_: str, height: int = 320, figure: views.Figure | None = None) -> dcc.Graph:
    return dcc.Graph(
        id=id_,
        config=GRAPH_CONFIG,
        figure=figure or views.message_figure("Loading…", height=height),
        style={"minHeight": f"{height}px"},
    )


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


def csv_button(page: str, table: str) -> dbc.Button:
    return dbc.Button(
        "Download CSV",
        id={"type": f"csv-{page}", "table": table},
        size="sm",
        color="secondary",
        outline=True,
        n_clicks=0,
    )


def grid(
    id_: str,
    columns: list[tuple[str, str]],
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


def note(text: str | None) -> Any:
    """What stands in an empty table's place: that it has no rows, and why."""
    if not text:
        return []
    return html.Div(text, className="small text-muted fst-italic px-2 py-2 no-rows")


def noted(id_: str, table: DataTable, v: Values) -> list[Any]:
    """A table and, under its headers, the sentence that says why it is empty."""
    return [table, html.Div(v.get(f"{id_}-note.children"), id=f"{id_}-note")]


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
SLICE_COLUMNS = [
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
DEPARTMENT_COLUMNS = [
    ("department", "Department"),
    ("slices", "Slices"),
    ("memory_allocated_gib", "Mem alloc GiB"),
    ("memory_used_gib", "Mem used GiB"),
    ("compute_allocated_gpus", "GPUs alloc"),
    ("compute_used_gpus", "GPUs used"),
    ("compute_efficiency_pct", "Efficiency %"),
    ("idle_slices", "Idle slices"),
    ("idle_memory_gib", "Idle mem GiB"),
]
QUOTA_COLUMNS = [
    ("queue", "Queue"),
    ("resource", "Resource"),
    ("used_text", "Used"),
    ("limit_text", "Limit"),
    ("borrowed", "Borrowed"),
    ("ceiling", "Ceiling"),
]
DENIAL_COLUMNS = [
    ("at", "When"),
    ("queue", "Queue"),
    ("namespace", "Namespace"),
    ("sku", "SKU"),
    ("who", "Who"),
    ("reason", "Reason"),
    ("message", "Message"),
]
GPU_COLUMNS = [
    ("node", "Node"),
    ("gpu", "GPU"),
    ("uuid", "UUID"),
    ("model", "Model"),
    ("slices", "Slices"),
    ("memory_allocated_gib", "Mem alloc GiB"),
    ("memory_used_gib", "Mem used GiB"),
    ("compute_allocated_pct", "Compute alloc %"),
    ("compute_used_pct", "Compute used %"),
]


# -- pages -----------------------------------------------------------------------------
#
# A page is built already filled: the layout served to the browser (and the router's
# answer on navigation) carries the viewer's figures and rows, so the first render
# needs no further round trip. The page callbacks below fire only when an input
# changes (time range, department, GPU, auto-refresh), never on load.

Values = dict[str, Any]
"""The value of each output of a page callback, by component id."""

OVERVIEW_OUTPUTS = (
    ("ov-status", "children"),
    ("ov-kpis", "children"),
    ("ov-capacity", "figure"),
    ("ov-history", "figure"),
    ("ov-departments", "figure"),
    ("ov-admissions", "figure"),
    ("ov-department-table", "data"),
    ("ov-waste-table", "data"),
    ("ov-department-table-note", "children"),
    ("ov-waste-table-note", "children"),
)
DEPARTMENT_OUTPUTS = (
    ("dept-status", "children"),
    ("dept-kpis", "children"),
    ("dept-borrowing", "children"),
    ("dept-quota", "figure"),
    ("dept-sku", "figure"),
    ("dept-history", "figure"),
    ("dept-quota-table", "data"),
    ("dept-waste-table", "data"),
    ("dept-denials-table", "data"),
    ("dept-quota-table-note", "children"),
    ("dept-waste-table-note", "children"),
    ("dept-denials-table-note", "children"),
)
GPU_OUTPUTS = (
    ("gpu-status", "children"),
    ("gpu-heatmap", "figure"),
)
GPU_TABLE_OUTPUTS = (
    ("gpu-table", "data"),
    ("gpu-table", "page_count"),
    ("gpu-table-status", "children"),
    ("gpu-table-note", "children"),
)
GPU_SLICE_OUTPUTS = (
    ("gpu-slices-status", "children"),
    ("gpu-slices-table", "data"),
    ("gpu-slices-title", "children"),
    ("gpu-slices-table-note", "children"),
)


def values_of(outputs: tuple[tuple[str, str], ...], answer: tuple[Any, ...]) -> Values:
    return {f"{id_}.{prop}": value for (id_, prop), value in zip(outputs, answer, strict=True)}


def overview_page(v: Values) -> Any:
    return html.Div(
        [
            dcc.Download(id="ov-download"),
            html.Div(v.get("ov-status.children"), id="ov-status"),
            dbc.Row(v.get("ov-kpis.children"), id="ov-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        card(
                            "Capacity: physical, sellable, allocated, used",
                            graph("ov-capacity", 260, v.get("ov-capacity.figure")),
                        ),
                        lg=7,
                    ),
                    dbc.Col(
                        card(
                            "Admissions and denials",
                            graph("ov-admissions", 260, v.get("ov-admissions.figure")),
                        ),
                        lg=5,
                    ),
                ],
                className="g-3",
            ),
            card(
                "Allocated vs used over time", graph("ov-history", 300, v.get("ov-history.figure"))
            ),
            dbc.Row(
                [
                    dbc.Col(
                        card(
                            "Compute per department (top 20 by allocation)",
                            graph("ov-departments", 320, v.get("ov-departments.figure")),
                        ),
                        lg=5,
                    ),
                    dbc.Col(
                        card(
                            "Departments",
                            noted(
                                "ov-department-table",
                                grid(
                                    "ov-department-table",
                                    DEPARTMENT_COLUMNS,
                                    height=420,
                                    rows=v.get("ov-department-table.data"),
                                ),
                                v,
                            ),
                            actions=csv_button("ov", "overview-departments"),
                        ),
                        lg=7,
                    ),
                ],
                className="g-3",
            ),
            card(
                "Idle but allocated: the slices that waste most",
                noted(
                    "ov-waste-table",
                    grid(
                        "ov-waste-table",
                        SLICE_COLUMNS,
                        height=360,
                        rows=v.get("ov-waste-table.data"),
                    ),
                    v,
                ),
                actions=csv_button("ov", "overview-waste"),
            ),
        ]
    )


def department_page(scope: Scope, department: str | None, v: Values) -> Any:
    options = [{"label": d, "value": d} for d in scope.departments]
    return html.Div(
        [
            dbc.Row(
                [
                    dbc.Col(
                        dbc.InputGroup(
                            [
                                dbc.InputGroupText("Department"),
                                dbc.Select(id="dept-select", options=options, value=department),
                            ],
                            size="sm",
                        ),
                        md=4,
                    ),
                    dbc.Col(
                        html.Div(
                            v.get("dept-borrowing.children"),
                            id="dept-borrowing",
                            className="d-flex flex-wrap gap-2",
                        ),
                        md=8,
                    ),
                ],
                className="mb-3 align-items-center",
            ),
            dcc.Download(id="dept-download"),
            html.Div(v.get("dept-status.children"), id="dept-status"),
            dbc.Row(v.get("dept-kpis.children"), id="dept-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        card(
                            "Quota used per queue and resource",
                            graph("dept-quota", 300, v.get("dept-quota.figure")),
                        ),
                        lg=7,
                    ),
                    dbc.Col(
                        card("SKU mix (slices)", graph("dept-sku", 300, v.get("dept-sku.figure"))),
                        lg=5,
                    ),
                ],
                className="g-3",
            ),
            card(
                "Allocated vs used over time",
                graph("dept-history", 300, v.get("dept-history.figure")),
            ),
            card(
                "Quota",
                noted(
                    "dept-quota-table",
                    grid(
                        "dept-quota-table",
                        QUOTA_COLUMNS,
                        height=300,
                        rows=v.get("dept-quota-table.data"),
                    ),
                    v,
                ),
                actions=csv_button("dept", "department-quota"),
            ),
            card(
                "Pods that waste most (allocated, idle)",
                noted(
                    "dept-waste-table",
                    grid(
                        "dept-waste-table",
                        SLICE_COLUMNS,
                        height=320,
                        rows=v.get("dept-waste-table.data"),
                    ),
                    v,
                ),
                actions=csv_button("dept", "department-waste"),
            ),
            card(
                "Recent denials",
                noted(
                    "dept-denials-table",
                    grid(
                        "dept-denials-table",
                        DENIAL_COLUMNS,
                        height=360,
                        rows=v.get("dept-denials-table.data"),
                    ),
                    v,
                ),
                actions=csv_button("dept", "department-denials"),
            ),
        ]
    )


def gpu_page(scope: Scope, v: Values) -> Any:
    options = [
        {"label": "All my departments" if not scope.whole_fleet else "Whole fleet", "value": "*"}
    ]
    options += [{"label": d, "value": d} for d in scope.departments]
    return html.Div(
        [
            dbc.Row(
                dbc.Col(
                    dbc.InputGroup(
                        [
                            dbc.InputGroupText("Show"),
                            dbc.Select(id="gpu-department", options=options, value="*"),
                        ],
                        size="sm",
                    ),
                    md=4,
                ),
                className="mb-3",
            ),
            dcc.Download(id="gpu-download"),
            html.Div(v.get("gpu-status.children"), id="gpu-status"),
            card(
                "Allocation and use per GPU (click a GPU to list its slices)",
                graph("gpu-heatmap", 260, v.get("gpu-heatmap.figure")),
            ),
            dcc.Store(id="gpu-selected", data=""),
            card(
                html.Span(v.get("gpu-slices-title.children"), id="gpu-slices-title"),
                [
                    html.Div(v.get("gpu-slices-status.children"), id="gpu-slices-status"),
                    *noted(
                        "gpu-slices-table",
                        grid(
                            "gpu-slices-table",
                            SLICE_COLUMNS,
                            height=260,
                            rows=v.get("gpu-slices-table.data"),
                        ),
                        v,
                    ),
                ],
                actions=csv_button("gpu", "gpu-slices"),
            ),
            card(
                "GPUs",
                [
                    html.Div(
                        v.get("gpu-table-status.children"),
                        id="gpu-table-status",
                        className="small text-muted px-1 pb-1",
                    ),
                    *noted(
                        "gpu-table",
                        grid(
                            "gpu-table",
                            GPU_COLUMNS,
                            height=420,
                            rows=v.get("gpu-table.data"),
                            server_side=True,
                            page_count=v.get("gpu-table.page_count"),
                        ),
                        v,
                    ),
                ],
                actions=csv_button("gpu", "gpus"),
            ),
        ]
    )


# -- the app ---------------------------------------------------------------------------


def navbar(console: Console, who: Any = "") -> Any:
    refresh = refresh_options(console.source.scrape_interval_s)
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand(
                    [
                        html.Span("gpupool", className="fw-bold"),
                        html.Span(" console", className="fw-light"),
                    ],
                    href="/",
                ),
                dbc.Nav(
                    [
                        dbc.NavItem(dbc.NavLink(name, href=path, active="exact"))
                        for path, name in PAGES
                    ],
                    navbar=True,
                    className="me-auto",
                ),
                html.Div(
                    [
                        dbc.Select(
                            id="range",
                            options=[
                                {"label": label, "value": key} for key, (label, _) in RANGES.items()
                            ],
                            value=DEFAULT_RANGE,
                            size="sm",
                            className="me-2",
                            style={"width": "10rem"},
                        ),
                        dbc.Select(
                            id="refresh",
                            options=refresh,
                            value=default_refresh(console),
                            size="sm",
                            className="me-3",
                            style={"width": "10rem"},
                        ),
                        html.Span(who, id="who", className="text-light small"),
                    ],
                    className="d-flex align-items-center",
                ),
            ],
            fluid=True,
        ),
        color="dark",
        dark=True,
        className="mb-3 shadow-sm",
    )


def default_refresh(console: Console) -> str:
    refresh = refresh_options(console.source.scrape_interval_s)
    return next((o["value"] for o in refresh if o["value"] != "0"), "0")


def page_path(referrer: str | None) -> str | None:
    """The page a ``/_dash-layout`` request is for: the path of the page that asks
    (its Referer), if it is one of ours; None when unknown (then the router draws the
    page after load, one round trip later)."""
    if not referrer:
        return None
    path = urlsplit(referrer).path or "/"
    return path if path in KNOWN_PATHS else None


KNOWN_PATHS = {path for path, _ in PAGES}
DASH_PREFIXES = ("/_dash-", "/_reload-hash", "/_favicon.ico", "/assets/")
"""Paths Dash serves itself (its callbacks, component bundles, assets)."""
MAX_BODY_BYTES = 2 * 1024 * 1024
"""A callback's request carries inputs and state, never table data: a few KiB."""


def serves(path: str) -> bool:
    """Whether ``path`` is a page of the console, Dash's or the health check."""
    return path in KNOWN_PATHS or path == "/healthz" or path.startswith(DASH_PREFIXES)


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


def inline_script_hashes(page: str) -> list[str]:
    """CSP hashes of a page's inline scripts, as the page was rendered: Dash's
    renderer start-up, its browser check and the clientside callbacks
    (``Dash.csp_hashes`` misses the browser check)."""
    return sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in _INLINE_SCRIPT.findall(page)
            if body.strip()
        }
    )


def security_headers(script_hashes: list[str]) -> dict[str, str]:
    """The headers every answer carries. Scripts: the console's own files and Dash's
    inline scripts by hash (its renderer start-up and the clientside router), nothing
    inline otherwise. Styles: Plotly and DataTable write ``<style>`` elements at run
    time, hence 'unsafe-inline' for styles only. Images: Plotly's and Bootstrap's
    ``data:`` icons. Checked in headless Chromium (tests/integration)."""
    policy = "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *script_hashes]),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


ROUTE_IF_NOT_RENDERED = """
function (pathname, rendered) {
    // The layout arrived with this page drawn: nothing to fetch.
    return pathname === rendered ? window.dash_clientside.no_update : pathname;
}
"""


def create_app(console: Console, *, debug: bool = False) -> dash.Dash:
    """The console as a Dash app (``app.server`` is the Flask WSGI app)."""
    app = dash.Dash(
        __name__,
        title=TITLE,
        assets_folder=str(ASSETS),
        serve_locally=True,
        external_stylesheets=[],
        external_scripts=[],
        suppress_callback_exceptions=True,
        update_title="",
    )
    server: flask.Flask = app.server
    server.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @server.before_request
    def require_identity() -> Any:
        path = flask.request.path
        if not serves(path):
            return flask.Response(
                f"404 Not Found: {path} is no page of the gpupool console (it exports no "
                "metrics: the exporters and the webhook do)\n",
                status=404,
                mimetype="text/plain",
            )
        if path == "/healthz":
            return None
        try:
            console.trust.identify(dict(flask.request.headers), peer=flask.request.remote_addr)
        except AccessError as exc:
            return flask.Response(f"401 Unauthorized: {exc}\n", status=401, mimetype="text/plain")
        return None

    @server.after_request
    def secure(response: flask.Response) -> flask.Response:
        hashes: list[str] = []
        if response.mimetype == "text/html" and not response.direct_passthrough:
            hashes = inline_script_hashes(response.get_data(as_text=True))
        response.headers.update(security_headers(hashes))
        return response

    @server.route("/healthz")
    def healthz() -> Any:
        return flask.Response("ok\n", mimetype="text/plain")

    def viewer() -> Scope:
        return console.scope(dict(flask.request.headers))

    def failure(exc: Exception, what: str) -> tuple[list[Any], views.Figure]:
        """The error state of a page whose callback failed."""
        if isinstance(exc, StoreError):
            problem = console.store_problem(exc)
            message = "Governance store unavailable"
        else:
            log.exception("the %s failed", what)
            problem = Problem(
                title="Something went wrong",
                detail=f"The {what} could not be built ({type(exc).__name__}); the "
                "console's log has the details.",
                tone="danger",
            )
            message = "Could not build this figure"
        return problem_alerts([problem]), views.message_figure(message, tone="error")

    # -- what each page shows (used by the layout, the router and the callbacks) ------

    # Each takes the viewer, or None to read it from the request (inside the try: a
    # store that fails to answer who the viewer is shows as an error state too).

    def overview_values(scope: Scope | None, range_key: str | None) -> tuple[Any, ...]:
        try:
            result = console.overview(scope or viewer(), range_key)
        except Exception as exc:  # never a traceback in the page; the log has it
            alert, err = failure(exc, "overview")
            why = note("No rows: the overview could not be built (see above).")
            return alert, [], err, err, err, err, [], [], why, why
        return (
            problem_alerts(result.problems),
            kpi_cards(result.kpis),
            result.capacity or _blank(),
            result.history or _blank(),
            result.departments or _blank(),
            result.admissions or _blank(),
            result.department_rows,
            result.waste_rows,
            note(result.notes.get("department_rows")),
            note(result.notes.get("waste_rows")),
        )

    def department_values(
        scope: Scope | None, dept: str | None, range_key: str | None
    ) -> tuple[Any, ...]:
        try:
            result = console.department(scope or viewer(), dept, range_key)
        except Exception as exc:
            alert, err = failure(exc, "department page")
            why = note("No rows: the department page could not be built (see above).")
            return alert, [], [], err, err, err, [], [], [], why, why, why
        badges = [
            dbc.Badge(text, color="warning", text_color="dark", className="borrowing")
            for text in result.borrowing
        ] or [html.Span("No queue is borrowing", className="text-muted small")]
        return (
            problem_alerts(result.problems),
            kpi_cards(result.kpis),
            badges,
            result.quota or _blank(),
            result.sku_mix or _blank(),
            result.history or _blank(),
            result.quota_rows,
            result.waste_rows,
            result.denial_rows,
            note(result.notes.get("quota_rows")),
            note(result.notes.get("waste_rows")),
            note(result.notes.get("denial_rows")),
        )

    def gpu_values(scope: Scope | None, dept: str | None) -> tuple[Any, ...]:
        try:
            result = console.gpus(scope or viewer(), dept)
        except Exception as exc:
            return failure(exc, "GPU page")
        return problem_alerts(result.problems), result.heatmap or _blank()

    def gpu_table_values(
        scope: Scope | None, dept: str | None, table: dict[str, Any]
    ) -> tuple[Any, ...]:
        try:
            result = console.gpu_table(scope or viewer(), dept, **table)
        except Exception as exc:
            alert, _ = failure(exc, "GPU table")
            return [], 1, alert, note("No rows: the GPU table could not be built (see above).")
        status = [*problem_alerts(result.problems), html.Span(result.caption)]
        return result.rows, result.page_count, status, note(result.note)

    def gpu_slice_values(
        scope: Scope | None, dept: str | None, selected: str | None
    ) -> tuple[Any, ...]:
        title = "Slices on the selected GPU (click a cell in the heat map)"
        try:
            result = console.gpu_slices(scope or viewer(), dept, selected)
        except Exception as exc:
            alert, _ = failure(exc, "list of slices")
            return alert, [], title, note("No rows: the list could not be built (see above).")
        if result.selected:
            title = f"Slices on GPU {result.selected}"
        return problem_alerts(result.problems), result.rows, title, note(result.note)

    def render(pathname: str | None, range_key: str | None) -> tuple[Any, Any]:
        """(the page at ``pathname``, filled for the viewer; the viewer's name)."""
        try:
            scope = viewer()
        except StoreError as exc:
            return problem_alerts([console.store_problem(exc)]), ""
        who = [
            html.Span(scope.identity.user, className="fw-semibold"),
            html.Span(f" · {scope.describe()}", className="text-white-50"),
        ]
        if pathname == "/departments":
            try:
                dept = console.default_department(scope)
            except StoreError:
                dept = scope.departments[0] if scope.departments else None
            answer = department_values(scope, dept, range_key)
            return department_page(scope, dept, values_of(DEPARTMENT_OUTPUTS, answer)), who
        if pathname == "/gpus":
            values = {
                **values_of(GPU_OUTPUTS, gpu_values(scope, "*")),
                **values_of(GPU_TABLE_OUTPUTS, gpu_table_values(scope, "*", {})),
                **values_of(GPU_SLICE_OUTPUTS, gpu_slice_values(scope, "*", "")),
            }
            return gpu_page(scope, values), who
        if pathname in ("/", None, ""):
            answer = overview_values(scope, range_key)
            return overview_page(values_of(OVERVIEW_OUTPUTS, answer)), who
        return dbc.Alert(f"No page at {pathname}.", color="secondary"), who

    def layout() -> Any:
        # Dash also calls this outside a layout request (to validate it): only a
        # /_dash-layout request, with its viewer, gets a page drawn.
        path = None
        page: Any = []
        who: Any = ""
        if flask.has_request_context() and flask.request.path.endswith("/_dash-layout"):
            path = page_path(flask.request.referrer)
            if path is not None:
                page, who = render(path, DEFAULT_RANGE)
        ms = refresh_ms(default_refresh(console), console.source.scrape_interval_s)
        return html.Div(
            [
                dcc.Location(id="url"),
                dcc.Store(id="rendered", data=path),
                dcc.Store(id="route"),
                dcc.Interval(id="tick", interval=ms or 60_000, disabled=ms == 0),
                navbar(console, who),
                dbc.Container(page, id="page", fluid=True, className="pb-4"),
            ]
        )

    app.layout = layout

    app.clientside_callback(  # type: ignore[no-untyped-call]
        ROUTE_IF_NOT_RENDERED,
        Output("route", "data"),
        Input("url", "pathname"),
        State("rendered", "data"),
    )

    @app.callback(
        Output("page", "children"),
        Output("who", "children"),
        Output("rendered", "data"),
        Input("route", "data"),
        State("range", "value"),
        prevent_initial_call=True,
    )
    def route(pathname: str | None, range_key: str | None) -> tuple[Any, Any, Any]:
        page, who = render(pathname, range_key)
        return page, who, pathname

    @app.callback(
        Output("tick", "interval"),
        Output("tick", "disabled"),
        Input("refresh", "value"),
        prevent_initial_call=True,  # the layout starts with the default period
    )
    def set_refresh(choice: str | None) -> tuple[int, bool]:
        ms = refresh_ms(choice, console.source.scrape_interval_s)
        return (ms or 60_000), ms == 0

    @app.callback(
        *(Output(i, p) for i, p in OVERVIEW_OUTPUTS),
        Input("range", "value"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def overview(range_key: str | None, _tick: int | None) -> tuple[Any, ...]:
        return overview_values(None, range_key)

    @app.callback(
        *(Output(i, p) for i, p in DEPARTMENT_OUTPUTS),
        Input("dept-select", "value"),
        Input("range", "value"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def department(dept: str | None, range_key: str | None, _tick: int | None) -> tuple[Any, ...]:
        return department_values(None, dept, range_key)

    @app.callback(
        Output("gpu-selected", "data"),
        Input("gpu-heatmap", "clickData"),
        prevent_initial_call=True,
    )
    def select_gpu(click: dict[str, Any] | None) -> str:
        try:
            uuid = click["points"][0]["customdata"] if click else ""
        except (KeyError, IndexError, TypeError):
            uuid = ""
        return str(uuid or "")

    # Three callbacks, so that each asks only what it shows: a click lists one GPU's
    # slices without reading the fleet, and a page of the table reads the figures of
    # the GPUs on it (and one figure of every GPU for the column it sorts by).

    @app.callback(
        *(Output(i, p) for i, p in GPU_OUTPUTS),
        Input("gpu-department", "value"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def gpus(dept: str | None, _tick: int | None) -> tuple[Any, ...]:
        return gpu_values(None, dept)

    @app.callback(
        *(Output(i, p) for i, p in GPU_TABLE_OUTPUTS),
        Output("gpu-table", "page_current"),
        Input("gpu-department", "value"),
        Input("gpu-table", "page_current"),
        Input("gpu-table", "page_size"),
        Input("gpu-table", "sort_by"),
        Input("gpu-table", "filter_query"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def gpu_table(
        dept: str | None,
        page: Any,
        size: Any,
        sort_by: Any,
        filter_query: Any,
        _tick: int | None,
    ) -> tuple[Any, ...]:
        # A new department or filter starts again at the first page.
        changed = {t.get("prop_id") for t in dash.ctx.triggered}
        if changed & {"gpu-department.value", "gpu-table.filter_query"}:
            page = 0
        table = {
            "page_current": page,
            "page_size": size,
            "sort_by": sort_by,
            "filter_query": filter_query,
        }
        return (*gpu_table_values(None, dept, table), page)

    @app.callback(
        *(Output(i, p) for i, p in GPU_SLICE_OUTPUTS),
        Input("gpu-selected", "data"),
        Input("gpu-department", "value"),
        Input("tick", "n_intervals"),
        prevent_initial_call=True,
    )
    def gpu_slices(selected: str | None, dept: str | None, _tick: int | None) -> tuple[Any, ...]:
        return gpu_slice_values(None, dept, selected)

    def send_table(page: str, params: dict[str, Any]) -> Any:
        trigger = dash.ctx.triggered_id
        if not isinstance(trigger, dict) or not dash.ctx.triggered:
            return dash.no_update
        if not dash.ctx.triggered[0].get("value"):
            return dash.no_update  # a button appeared (n_clicks 0), nobody clicked
        try:
            found = console.table(viewer(), str(trigger.get("table", "")), params)
        except (SourceError, StoreError) as exc:
            log.warning("CSV download of %s failed: %s", trigger, exc)
            return dash.no_update
        if found is None:
            return dash.no_update
        filename, text = found
        return {"content": text, "filename": filename, "type": "text/csv", "base64": False}

    @app.callback(
        Output("ov-download", "data"),
        Input({"type": "csv-ov", "table": ALL}, "n_clicks"),
        State("range", "value"),
        prevent_initial_call=True,
    )
    def download_overview(_clicks: list[int | None], range_key: str | None) -> Any:
        return send_table("ov", {"range": range_key})

    @app.callback(
        Output("dept-download", "data"),
        Input({"type": "csv-dept", "table": ALL}, "n_clicks"),
        State("range", "value"),
        State("dept-select", "value"),
        prevent_initial_call=True,
    )
    def download_department(
        _clicks: list[int | None], range_key: str | None, dept: str | None
    ) -> Any:
        return send_table("dept", {"range": range_key, "department": dept})

    @app.callback(
        Output("gpu-download", "data"),
        Input({"type": "csv-gpu", "table": ALL}, "n_clicks"),
        State("gpu-department", "value"),
        State("gpu-selected", "data"),
        State("gpu-table", "sort_by"),
        State("gpu-table", "filter_query"),
        prevent_initial_call=True,
    )
    def download_gpus(
        _clicks: list[int | None],
        dept: str | None,
        selected: str | None,
        sort_by: Any,
        filter_query: Any,
    ) -> Any:
        params = {
            "gpu_department": dept,
            "selected": selected,
            "sort_by": sort_by,
            "filter_query": filter_query,
        }
        return send_table("gpu", params)

    if debug:
        app.enable_dev_tools(debug=True)
    return app


def _blank() -> views.Figure:
    return views.message_figure("")
