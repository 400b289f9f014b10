"""The Dash application: layout, routing and callbacks (the HTTP edge).

Each callback reads the viewer from the request headers (:meth:`Console.scope`), asks
:class:`dashboard.pages.Console` for that viewer's page, and turns the answer into
component properties. Authorisation happens here on the server for every callback:
the department dropdown only offers visible departments, but a forged request to
``/_dash-update-component`` naming another department gets "Not permitted" and no
data. Requests without a trusted identity get HTTP 401 before Dash sees them.

Every asset is served by the console itself (``serve_locally``; Bootstrap's CSS is
vendored in ``assets/``): clusters often have no internet egress.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import flask
from dash import ALL, Input, Output, State, dcc, html

from dashboard import views
from dashboard.access import AccessError, Scope
from dashboard.pages import (
    DEFAULT_RANGE,
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


def graph(id_: str, height: int = 320) -> dcc.Graph:
    return dcc.Graph(
        id=id_,
        config=GRAPH_CONFIG,
        figure=views.message_figure("Loading…", height=height),
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


def grid(id_: str, columns: list[tuple[str, str]], *, height: int = 320) -> dag.AgGrid:
    defs = []
    for field, name in columns:
        col: dict[str, Any] = {"field": field, "headerName": name}
        if field in ("message",):
            col.update({"flex": 3, "wrapText": True, "autoHeight": True, "minWidth": 300})
        elif field in TEXT_FIELDS:
            col.update({"minWidth": 140})
        elif field in NUMERIC_FIELDS:
            col.update({"minWidth": 118, "type": "numericColumn"})
        defs.append(col)
    return dag.AgGrid(
        id=id_,
        columnDefs=defs,
        rowData=[],
        defaultColDef={
            "sortable": True,
            "filter": True,
            "resizable": True,
            "minWidth": 100,
            "wrapHeaderText": True,
            "autoHeaderHeight": True,
        },
        columnSize="responsiveSizeToFit",
        dashGridOptions={
            "pagination": True,
            "paginationPageSize": 20,
            "paginationPageSizeSelector": False,
        },
        className="ag-theme-alpine",
        style={"height": f"{height}px", "width": "100%"},
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
TEXT_FIELDS = {"department", "namespace", "pod", "node", "uuid", "model", "gpu_uuid", "who", "at"}
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


def overview_page() -> Any:
    return html.Div(
        [
            dcc.Download(id="ov-download"),
            html.Div(id="ov-status"),
            dbc.Row(id="ov-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        card(
                            "Capacity: physical, sellable, allocated, used",
                            graph("ov-capacity", 260),
                        ),
                        lg=7,
                    ),
                    dbc.Col(card("Admissions and denials", graph("ov-admissions", 260)), lg=5),
                ],
                className="g-3",
            ),
            card("Allocated vs used over time", graph("ov-history", 300)),
            dbc.Row(
                [
                    dbc.Col(
                        card(
                            "Compute per department (top 20 by allocation)",
                            graph("ov-departments", 320),
                        ),
                        lg=5,
                    ),
                    dbc.Col(
                        card(
                            "Departments",
                            grid("ov-department-table", DEPARTMENT_COLUMNS, height=420),
                            actions=csv_button("ov", "overview-departments"),
                        ),
                        lg=7,
                    ),
                ],
                className="g-3",
            ),
            card(
                "Idle but allocated: the slices that waste most",
                grid("ov-waste-table", SLICE_COLUMNS, height=360),
                actions=csv_button("ov", "overview-waste"),
            ),
        ]
    )


def department_page(scope: Scope) -> Any:
    options = [{"label": d, "value": d} for d in scope.departments]
    return html.Div(
        [
            dbc.Row(
                [
                    dbc.Col(
                        dbc.InputGroup(
                            [
                                dbc.InputGroupText("Department"),
                                dbc.Select(
                                    id="dept-select",
                                    options=options,
                                    value=scope.departments[0] if scope.departments else None,
                                ),
                            ],
                            size="sm",
                        ),
                        md=4,
                    ),
                    dbc.Col(
                        html.Div(id="dept-borrowing", className="d-flex flex-wrap gap-2"), md=8
                    ),
                ],
                className="mb-3 align-items-center",
            ),
            dcc.Download(id="dept-download"),
            html.Div(id="dept-status"),
            dbc.Row(id="dept-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        card("Quota used per queue and resource", graph("dept-quota", 300)), lg=7
                    ),
                    dbc.Col(card("SKU mix (slices)", graph("dept-sku", 300)), lg=5),
                ],
                className="g-3",
            ),
            card("Allocated vs used over time", graph("dept-history", 300)),
            card(
                "Quota",
                grid("dept-quota-table", QUOTA_COLUMNS, height=300),
                actions=csv_button("dept", "department-quota"),
            ),
            card(
                "Pods that waste most (allocated, idle)",
                grid("dept-waste-table", SLICE_COLUMNS, height=320),
                actions=csv_button("dept", "department-waste"),
            ),
            card(
                "Recent denials",
                grid("dept-denials-table", DENIAL_COLUMNS, height=360),
                actions=csv_button("dept", "department-denials"),
            ),
        ]
    )


def gpu_page(scope: Scope) -> Any:
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
            html.Div(id="gpu-status"),
            card(
                "Allocation and use per GPU (click a GPU to list its slices)",
                graph("gpu-heatmap", 260),
            ),
            dcc.Store(id="gpu-selected", data=""),
            card(
                html.Span("Slices on the selected GPU", id="gpu-slices-title"),
                grid("gpu-slices-table", SLICE_COLUMNS, height=260),
                actions=csv_button("gpu", "gpu-slices"),
            ),
            card(
                "GPUs",
                grid("gpu-table", GPU_COLUMNS, height=420),
                actions=csv_button("gpu", "gpus"),
            ),
        ]
    )


# -- the app ---------------------------------------------------------------------------


def navbar(console: Console) -> Any:
    refresh = refresh_options(console.source.scrape_interval_s)
    default_refresh = next((o["value"] for o in refresh if o["value"] != "0"), "0")
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
                            value=default_refresh,
                            size="sm",
                            className="me-3",
                            style={"width": "10rem"},
                        ),
                        html.Span(id="who", className="text-light small"),
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
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            dcc.Interval(id="tick", interval=60_000, disabled=True),
            navbar(console),
            dbc.Container(id="page", fluid=True, className="pb-4"),
        ]
    )
    server: flask.Flask = app.server

    @server.before_request
    def require_identity() -> Any:
        if flask.request.path in ("/healthz",):
            return None
        try:
            console.trust.identify(dict(flask.request.headers))
        except AccessError as exc:
            return flask.Response(f"401 Unauthorized: {exc}\n", status=401, mimetype="text/plain")
        return None

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

    @app.callback(
        Output("page", "children"),
        Output("who", "children"),
        Input("url", "pathname"),
    )
    def route(pathname: str | None) -> tuple[Any, Any]:
        try:
            scope = viewer()
        except StoreError as exc:
            return problem_alerts([console.store_problem(exc)]), ""
        who = [
            html.Span(scope.identity.user, className="fw-semibold"),
            html.Span(f" · {scope.describe()}", className="text-white-50"),
        ]
        if pathname == "/departments":
            return department_page(scope), who
        if pathname == "/gpus":
            return gpu_page(scope), who
        if pathname in ("/", None, ""):
            return overview_page(), who
        return dbc.Alert(f"No page at {pathname}.", color="secondary"), who

    @app.callback(
        Output("tick", "interval"),
        Output("tick", "disabled"),
        Input("refresh", "value"),
    )
    def set_refresh(choice: str | None) -> tuple[int, bool]:
        ms = refresh_ms(choice, console.source.scrape_interval_s)
        return (ms or 60_000), ms == 0

    @app.callback(
        Output("ov-status", "children"),
        Output("ov-kpis", "children"),
        Output("ov-capacity", "figure"),
        Output("ov-history", "figure"),
        Output("ov-departments", "figure"),
        Output("ov-admissions", "figure"),
        Output("ov-department-table", "rowData"),
        Output("ov-waste-table", "rowData"),
        Input("range", "value"),
        Input("tick", "n_intervals"),
    )
    def overview(range_key: str | None, _tick: int | None) -> tuple[Any, ...]:
        try:
            result = console.overview(viewer(), range_key)
        except Exception as exc:  # never a traceback in the page; the log has it
            alert, err = failure(exc, "overview")
            return alert, [], err, err, err, err, [], []
        return (
            problem_alerts(result.problems),
            kpi_cards(result.kpis),
            result.capacity or _blank(),
            result.history or _blank(),
            result.departments or _blank(),
            result.admissions or _blank(),
            result.department_rows,
            result.waste_rows,
        )

    @app.callback(
        Output("dept-status", "children"),
        Output("dept-kpis", "children"),
        Output("dept-borrowing", "children"),
        Output("dept-quota", "figure"),
        Output("dept-sku", "figure"),
        Output("dept-history", "figure"),
        Output("dept-quota-table", "rowData"),
        Output("dept-waste-table", "rowData"),
        Output("dept-denials-table", "rowData"),
        Input("dept-select", "value"),
        Input("range", "value"),
        Input("tick", "n_intervals"),
    )
    def department(dept: str | None, range_key: str | None, _tick: int | None) -> tuple[Any, ...]:
        try:
            result = console.department(viewer(), dept, range_key)
        except Exception as exc:
            alert, err = failure(exc, "department page")
            return alert, [], [], err, err, err, [], [], []
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
        )

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

    @app.callback(
        Output("gpu-status", "children"),
        Output("gpu-heatmap", "figure"),
        Output("gpu-table", "rowData"),
        Output("gpu-slices-table", "rowData"),
        Output("gpu-slices-title", "children"),
        Input("gpu-department", "value"),
        Input("gpu-selected", "data"),
        Input("tick", "n_intervals"),
    )
    def gpus(dept: str | None, selected: str | None, _tick: int | None) -> tuple[Any, ...]:
        try:
            result = console.gpus(viewer(), dept, selected)
        except Exception as exc:
            alert, err = failure(exc, "GPU page")
            return alert, err, [], [], ""
        title = (
            f"Slices on GPU {result.selected}"
            if result.selected
            else "Slices on the selected GPU (click a cell in the heat map)"
        )
        return (
            problem_alerts(result.problems),
            result.heatmap or _blank(),
            result.gpu_rows,
            result.slice_rows,
            title,
        )

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
        prevent_initial_call=True,
    )
    def download_gpus(_clicks: list[int | None], dept: str | None, selected: str | None) -> Any:
        return send_table("gpu", {"gpu_department": dept, "selected": selected})

    if debug:
        app.enable_dev_tools(debug=True)
    return app


def _blank() -> views.Figure:
    return views.message_figure("")
