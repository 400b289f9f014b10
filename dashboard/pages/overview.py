"""The overview (``/``): capacity, allocation and use, admissions, departments, waste.

For a platform admin the whole fleet (pool capacity, average GPU utilisation); for
anyone else their departments' slices only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
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
from governance.storage import ledger

PREFIX = "ov"
"""Of its component ids, and of its CSV buttons and download."""

DEPARTMENT_COLUMNS: components.Columns = [
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


# -- what it shows -----------------------------------------------------------------------


@dataclass(kw_only=True)
class Result:
    problems: list[Problem] = field(default_factory=list)
    kpis: list[Kpi] = field(default_factory=list)
    capacity: views.Figure | None = None
    history: views.Figure | None = None
    departments: views.Figure | None = None
    admissions: views.Figure | None = None
    department_rows: list[dict[str, Any]] = field(default_factory=list)
    waste_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """Why a table has no rows, by field name (``waste_rows``): shown in its place."""


def result(console: Console, scope: Scope, range_key: object) -> Result:
    out = Result()
    org = console.org()
    if org is None:
        out.problems.append(console.no_config())
    if not scope.departments:
        out.problems.append(shared.nothing_visible(scope))
        _empty(out, "Nothing to show")
        out.notes = dict.fromkeys(("department_rows", "waste_rows"), shared.NO_ROWS_NOTHING_VISIBLE)
        return out
    window = console.window(range_key)
    cap = views.capacity(org) if org is not None and scope.whole_fleet else None
    src, only = console.source, scope.filter
    try:
        # Independent questions, asked at once: with Prometheus each is a few
        # HTTP round trips that Prometheus evaluates in parallel.
        with ThreadPoolExecutor(max_workers=4) as pool:
            f_rows = pool.submit(src.usage, only, per_queue=False)
            f_fleet = pool.submit(src.fleet_utilisation) if scope.whole_fleet else None
            f_points = pool.submit(src.history, only, window.start, window.end, window.step_s)
            f_waste = pool.submit(src.waste, only, console.waste_limit)
            rows = f_rows.result()
            fleet = f_fleet.result() if f_fleet is not None else None
            points = f_points.result()
            waste = f_waste.result()
    except SourceError as exc:
        out.problems.append(console.source_problem(exc))
        _empty(out, f"{exc.source} is not answering", tone="error")
        if cap is not None:
            out.capacity = views.capacity_figure(cap, views.totals([]))
        out.kpis = _capacity_kpis(cap)
        _admissions(console, out, scope, window.start, range_key)
        why = f"No rows: {exc.source} is not answering (see above)."
        out.notes = {"department_rows": why, "waste_rows": why}
        return out
    out.problems.extend(console.caveats(org, rows))
    tot = views.totals(rows)
    if not rows and (fleet is None or fleet[0] == 0):
        out.problems.append(
            Problem(
                title="No data yet",
                detail=(
                    f"{src.describe()} has reported no GPU or slice yet. "
                    "Check that the exporters run and are scraped."
                ),
            )
        )
    out.kpis = [*_capacity_kpis(cap), *shared.usage_kpis(scope, tot, fleet)]
    out.capacity = views.capacity_figure(cap, tot)
    out.history = views.history_figure(
        points, empty="No history yet: points appear after the first scrapes"
    )
    lines = views.by_department(rows)
    out.departments = views.department_bars(lines)
    out.department_rows = views.department_table(lines)
    out.waste_rows = views.slice_table(waste)
    if not out.department_rows:
        out.notes["department_rows"] = (
            f"No rows: no slice of {scope.describe()} is placed on a GPU now "
            f"({src.describe()} reports none)."
        )
    if not out.waste_rows:
        out.notes["waste_rows"] = (
            "No rows: no slice is idle (each uses at least "
            f"{shared.IDLE_PCT}% of the compute it was granted)."
            if out.department_rows
            else "No rows: there are no slices to be idle."
        )
    _admissions(console, out, scope, window.start, range_key)
    return out


def _capacity_kpis(cap: views.Capacity | None) -> list[Kpi]:
    if cap is None:
        return []
    return [
        Kpi(
            label="Pool capacity",
            value=f"{cap.gpus:,} GPUs",
            note=f"{views.fmt_bytes(cap.physical_memory_bytes)} physical memory",
        ),
        Kpi(
            label="Sellable",
            value=views.fmt_bytes(cap.sellable_memory_bytes),
            note=f"{views.fmt_gpus(cap.sellable_compute_ratio)} compute, over-subscribed",
        ),
    ]


def _admissions(
    console: Console, out: Result, scope: Scope, start: datetime, range_key: object
) -> None:
    """The admissions figure and KPI (a store failure is shown, not raised)."""
    depts = None if scope.whole_fleet else list(scope.departments)
    try:
        admitted, denied = ledger.admission_counts(console.store, since=start, departments=depts)
    except StoreError as exc:
        out.problems.append(console.store_problem(exc))
        out.admissions = views.message_figure("Governance store unavailable", tone="error")
        return
    out.admissions = views.admissions_figure(admitted, denied)
    out.kpis.append(
        Kpi(
            label="Admissions / denials",
            value=f"{admitted:,} / {sum(n for _, n in denied):,}",
            note=f"in the {shared.range_of(range_key)[0].lower()}",
            tone="danger" if denied else "",
        )
    )


def _empty(out: Result, message: str, *, tone: str = "muted") -> None:
    out.capacity = views.message_figure(message, tone=tone, height=260)
    out.history = views.message_figure(message, tone=tone)
    out.departments = views.message_figure(message, tone=tone)
    out.admissions = views.message_figure(message, tone=tone, height=260)


# -- as the page draws it ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Outputs(callbacks.Outputs):
    status: Annotated[list[Any], Out("ov-status", "children", ALERT)]
    kpis: Annotated[list[Any], Out("ov-kpis", "children")]
    capacity: Annotated[views.Figure, Out("ov-capacity", "figure", FIGURE)]
    history: Annotated[views.Figure, Out("ov-history", "figure", FIGURE)]
    departments: Annotated[views.Figure, Out("ov-departments", "figure", FIGURE)]
    admissions: Annotated[views.Figure, Out("ov-admissions", "figure", FIGURE)]
    department_rows: Annotated[list[dict[str, Any]], Out("ov-department-table", "data")]
    waste_rows: Annotated[list[dict[str, Any]], Out("ov-waste-table", "data")]
    department_note: Annotated[Any, Out("ov-department-table-note", "children", NOTE)]
    waste_note: Annotated[Any, Out("ov-waste-table-note", "children", NOTE)]


def outputs(console: Console, scope: Scope | None, range_key: str | None) -> Outputs:
    """The page's values for the viewer (``None``: the request's, read inside the
    ``try``, so that a store that cannot say who the viewer is shows as an error)."""
    try:
        r = result(console, scope or callbacks.viewer(console), range_key)
    except Exception as exc:  # never a traceback in the page; the log has it
        return Outputs.failed(callbacks.failure(console, exc, "overview"))
    return Outputs(
        status=components.problem_alerts(r.problems),
        kpis=components.kpi_cards(r.kpis),
        capacity=components.or_blank(r.capacity),
        history=components.or_blank(r.history),
        departments=components.or_blank(r.departments),
        admissions=components.or_blank(r.admissions),
        department_rows=r.department_rows,
        waste_rows=r.waste_rows,
        department_note=components.note(r.notes.get("department_rows")),
        waste_note=components.note(r.notes.get("waste_rows")),
    )


def layout(v: Outputs) -> Any:
    return html.Div(
        [
            components.download(PREFIX),
            html.Div(v.status, id="ov-status"),
            dbc.Row(v.kpis, id="ov-kpis", className="g-3"),
            dbc.Row(
                [
                    dbc.Col(
                        graph_card(
                            "Capacity: physical, sellable, allocated, used",
                            "ov-capacity",
                            260,
                            v.capacity,
                        ),
                        lg=7,
                    ),
                    dbc.Col(
                        graph_card("Admissions and denials", "ov-admissions", 260, v.admissions),
                        lg=5,
                    ),
                ],
                className="g-3",
            ),
            graph_card("Allocated vs used over time", "ov-history", 300, v.history),
            dbc.Row(
                [
                    dbc.Col(
                        graph_card(
                            "Compute per department (top 20 by allocation)",
                            "ov-departments",
                            320,
                            v.departments,
                        ),
                        lg=5,
                    ),
                    dbc.Col(
                        components.table_card(
                            "Departments",
                            "ov-department-table",
                            DEPARTMENT_COLUMNS,
                            rows=v.department_rows,
                            note=v.department_note,
                            height=420,
                            csv=(PREFIX, "overview-departments"),
                        ),
                        lg=7,
                    ),
                ],
                className="g-3",
            ),
            components.table_card(
                "Idle but allocated: the slices that waste most",
                "ov-waste-table",
                components.SLICE_COLUMNS,
                rows=v.waste_rows,
                note=v.waste_note,
                height=360,
                csv=(PREFIX, "overview-waste"),
            ),
        ]
    )


def page(console: Console, scope: Scope, range_key: str | None) -> Any:
    """The page filled for the viewer (the first layout and the router draw it)."""
    return layout(outputs(console, scope, range_key))


def register(app: dash.Dash, console: Console) -> None:
    callbacks.register(
        app,
        Outputs,
        Input("range", "value"),
        Input("tick", "n_intervals"),
        answer=lambda range_key, _tick: outputs(console, None, range_key),
    )


DOWNLOADS = callbacks.Downloads(
    params={"range": State("range", "value")},
    tables={
        "overview-departments": lambda console, scope, p: (
            result(console, scope, p.get("range")).department_rows,
            "",
        ),
        "overview-waste": lambda console, scope, p: (
            result(console, scope, p.get("range")).waste_rows,
            "",
        ),
    },
)
