"""A department (``/departments``): quota and borrowing, allocation and use, SKU mix,
waste and recent denials of one department the viewer may view."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, State, html

from dashboard import callbacks, components, shared, views
from dashboard.access import Scope
from dashboard.callbacks import ALERT, FIGURE, NOTE, Out
from dashboard.components import graph_card
from dashboard.shared import Console, Kpi, Problem
from dashboard.sources import SourceError
from governance.errors import StoreError
from governance.resources import YAML_KEYS, format_amount
from governance.storage import ledger

PREFIX = "dept"
"""Of its component ids, and of its CSV buttons and download."""

QUOTA_COLUMNS: components.Columns = [
    ("queue", "Queue"),
    ("resource", "Resource"),
    ("used_text", "Used"),
    ("limit_text", "Limit"),
    ("borrowed", "Borrowed"),
    ("ceiling", "Ceiling"),
]
DENIAL_COLUMNS: components.Columns = [
    ("at", "When"),
    ("queue", "Queue"),
    ("namespace", "Namespace"),
    ("sku", "SKU"),
    ("who", "Who"),
    ("reason", "Reason"),
    ("message", "Message"),
]


# -- what it shows -----------------------------------------------------------------------


@dataclass(kw_only=True)
class Result:
    department: str
    problems: list[Problem] = field(default_factory=list)
    kpis: list[Kpi] = field(default_factory=list)
    borrowing: list[str] = field(default_factory=list)
    quota: views.Figure | None = None
    history: views.Figure | None = None
    sku_mix: views.Figure | None = None
    quota_rows: list[dict[str, Any]] = field(default_factory=list)
    waste_rows: list[dict[str, Any]] = field(default_factory=list)
    denial_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """Why a table has no rows, by field name (``denial_rows``): shown in its place."""


def result(console: Console, scope: Scope, department: str | None, range_key: object) -> Result:
    if not department:
        department = scope.departments[0] if scope.departments else ""
    out = Result(department=department)
    if not department or not scope.may_view(department):
        out.problems.append(
            Problem(
                title="Not permitted",
                detail=(
                    f"{scope.identity.user} may not view department {department!r}. "
                    "Ask a dept-admin of that department, or a platform-admin, to bind "
                    "you as its viewer."
                    if department
                    else shared.nothing_visible(scope).detail
                ),
                tone="secondary",
            )
        )
        out.quota = views.message_figure("Nothing to show")
        out.history = views.message_figure("Nothing to show")
        out.sku_mix = views.message_figure("Nothing to show")
        out.notes = dict.fromkeys(
            ("quota_rows", "waste_rows", "denial_rows"), shared.NO_ROWS_NOTHING_VISIBLE
        )
        return out
    only = frozenset([department])
    org = console.org()
    window = console.window(range_key)
    try:
        if org is not None and department in org.departments:
            report = ledger.quota_report(console.store, org, departments=[department])
            out.quota_rows = [_quota_row(line) for line in report]
            out.borrowing = [
                f"{line.queue}: +{format_amount(line.resource, line.borrowed)} "
                f"{YAML_KEYS[line.resource]} borrowed"
                for line in report
                if line.queue and line.borrowed > 0
            ]
        else:
            out.notes["quota_rows"] = (
                f"No rows: the configuration in force declares no department {department}."
            )
        denials = ledger.recent_denials(
            console.store, departments=[department], limit=console.denial_limit
        )
        out.denial_rows = views.denial_table(denials)
        if not out.denial_rows:
            out.notes["denial_rows"] = (
                f"No rows: no GPU pod of {department} has been denied (the newest "
                f"{console.denial_limit} denials show here)."
            )
    except StoreError as exc:
        out.problems.append(console.store_problem(exc))
        why = "No rows: the governance store is unavailable (see above)."
        out.notes.setdefault("quota_rows", why)
        out.notes.setdefault("denial_rows", why)
    out.quota = views.quota_figure(out.quota_rows)
    src = console.source
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            f_rows = pool.submit(src.usage, only)
            f_points = pool.submit(src.history, only, window.start, window.end, window.step_s)
            f_waste = pool.submit(src.waste, only, console.waste_limit)
            rows, points, waste = f_rows.result(), f_points.result(), f_waste.result()
    except SourceError as exc:
        out.problems.append(console.source_problem(exc))
        message = f"{exc.source} is not answering"
        out.history = views.message_figure(message, tone="error")
        out.sku_mix = views.message_figure(message, tone="error")
        out.notes["waste_rows"] = f"No rows: {message} (see above)."
        return out
    out.problems.extend(console.caveats(org, rows))
    tot = views.totals(rows)
    out.kpis = [
        Kpi(label="Slices", value=f"{tot.slices:,}", note="placed on GPUs now"),
        *shared.usage_kpis(scope, tot, None),
    ]
    out.history = views.history_figure(points, empty=f"No history for {department} yet")
    out.sku_mix = views.sku_mix_figure(rows)
    out.waste_rows = views.slice_table(waste)
    if not out.waste_rows:
        out.notes["waste_rows"] = (
            f"No rows: none of {department}'s slices is idle (each uses at least "
            f"{shared.IDLE_PCT}% of the compute it was granted)."
            if tot.slices
            else f"No rows: {department} has no slice placed on a GPU now."
        )
    return out


def default_department(console: Console, scope: Scope) -> str | None:
    """The department the page opens on: the viewer's first that has slices placed
    now (else their first), so that a page with figures, not an empty one, greets
    them."""
    if not scope.departments:
        return None
    try:
        rows = console.source.usage(scope.filter, per_queue=False)
    except SourceError:
        return scope.departments[0]
    busy = {r.department for r in rows if r.slices > 0}
    return next((d for d in scope.departments if d in busy), scope.departments[0])


def _quota_row(line: ledger.QuotaLine) -> dict[str, Any]:
    res = line.resource
    return {
        "queue": line.queue,
        "resource": res,
        "used": line.used,
        "limit": line.limit,
        "used_text": format_amount(res, line.used),
        "limit_text": format_amount(res, line.limit),
        "borrowed": format_amount(res, line.borrowed) if line.borrowed else "",
        "ceiling": format_amount(res, line.ceiling),
        "ceiling_value": line.ceiling,
    }


# -- as the page draws it ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outputs(callbacks.Outputs):
    status: Annotated[list[Any], Out("dept-status", "children", ALERT)]
    kpis: Annotated[list[Any], Out("dept-kpis", "children")]
    borrowing: Annotated[list[Any], Out("dept-borrowing", "children")]
    quota: Annotated[views.Figure, Out("dept-quota", "figure", FIGURE)]
    sku_mix: Annotated[views.Figure, Out("dept-sku", "figure", FIGURE)]
    history: Annotated[views.Figure, Out("dept-history", "figure", FIGURE)]
    quota_rows: Annotated[list[dict[str, Any]], Out("dept-quota-table", "data")]
    waste_rows: Annotated[list[dict[str, Any]], Out("dept-waste-table", "data")]
    denial_rows: Annotated[list[dict[str, Any]], Out("dept-denials-table", "data")]
    quota_note: Annotated[Any, Out("dept-quota-table-note", "children", NOTE)]
    waste_note: Annotated[Any, Out("dept-waste-table-note", "children", NOTE)]
    denial_note: Annotated[Any, Out("dept-denials-table-note", "children", NOTE)]


def outputs(
    console: Console, scope: Scope | None, department: str | None, range_key: str | None
) -> Outputs:
    """The page's values for the viewer (``None``: the request's, read inside the
    ``try``, so that a store that cannot say who the viewer is shows as an error)."""
    try:
        r = result(console, scope or callbacks.viewer(console), department, range_key)
    except Exception as exc:  # never a traceback in the page; the log has it
        return Outputs.failed(callbacks.failure(console, exc, "department page"))
    badges = [
        dbc.Badge(text, color="warning", text_color="dark", className="borrowing")
        for text in r.borrowing
    ] or [html.Span("No queue is borrowing", className="text-muted small")]
    return Outputs(
        status=components.problem_alerts(r.problems),
        kpis=components.kpi_cards(r.kpis),
        borrowing=badges,
        quota=components.or_blank(r.quota),
        sku_mix=components.or_blank(r.sku_mix),
        history=components.or_blank(r.history),
        quota_rows=r.quota_rows,
        waste_rows=r.waste_rows,
        denial_rows=r.denial_rows,
        quota_note=components.note(r.notes.get("quota_rows")),
        waste_note=components.note(r.notes.get("waste_rows")),
        denial_note=components.note(r.notes.get("denial_rows")),
    )


def layout(scope: Scope, department: str | None, v: Outputs) -> Any:
    options = [{"label": d, "value": d} for d in scope.departments]
    return html.Div(
        [
            dbc.Row(
                [
                    dbc.Col(
                        components.department_select(
                            "dept-select", "Department", options, department
                        ),
                        md=4,
                    ),
                    dbc.Col(
                        html.Div(
                            v.borrowing, id="dept-borrowing", className="d-flex flex-wrap gap-2"
                        ),
                        md=8,
                    ),
                ],
                className="mb-3 align-items-center",
            ),
            components.download(PREFIX),
            html.Div(v.status, id="dept-status"),
            dbc.Row(v.kpis, id="dept-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        graph_card("Quota used per queue and resource", "dept-quota", 300, v.quota),
                        lg=7,
                    ),
                    dbc.Col(graph_card("SKU mix (slices)", "dept-sku", 300, v.sku_mix), lg=5),
                ],
                className="g-3",
            ),
            graph_card("Allocated vs used over time", "dept-history", 300, v.history),
            components.table_card(
                "Quota",
                "dept-quota-table",
                QUOTA_COLUMNS,
                rows=v.quota_rows,
                note=v.quota_note,
                height=300,
                csv=(PREFIX, "department-quota"),
            ),
            components.table_card(
                "Pods that waste most (allocated, idle)",
                "dept-waste-table",
                components.SLICE_COLUMNS,
                rows=v.waste_rows,
                note=v.waste_note,
                height=320,
                csv=(PREFIX, "department-waste"),
            ),
            components.table_card(
                "Recent denials",
                "dept-denials-table",
                DENIAL_COLUMNS,
                rows=v.denial_rows,
                note=v.denial_note,
                height=360,
                csv=(PREFIX, "department-denials"),
            ),
        ]
    )


def page(console: Console, scope: Scope, range_key: str | None) -> Any:
    """The page filled for the viewer, on their default department."""
    try:
        department = default_department(console, scope)
    except StoreError:
        department = scope.departments[0] if scope.departments else None
    return layout(scope, department, outputs(console, scope, department, range_key))


def register(app: dash.Dash, console: Console) -> None:
    callbacks.register(
        app,
        Outputs,
        Input("dept-select", "value"),
        Input("range", "value"),
        Input("tick", "n_intervals"),
        answer=lambda dept, range_key, _tick: outputs(console, None, dept, range_key),
    )


def _csv(rows: Callable[[Result], list[dict[str, Any]]]) -> callbacks.Table:
    def table(console: Console, scope: Scope, p: Mapping[str, Any]) -> tuple[Any, str]:
        r = result(console, scope, p.get("department"), p.get("range"))
        return rows(r), f"-{r.department}"

    return table


DOWNLOADS = callbacks.Downloads(
    params={"range": State("range", "value"), "department": State("dept-select", "value")},
    tables={
        "department-quota": _csv(lambda r: r.quota_rows),
        "department-waste": _csv(lambda r: r.waste_rows),
        "department-denials": _csv(lambda r: r.denial_rows),
    },
)
