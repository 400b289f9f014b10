"""The GPUs (``/gpus``): a heat map of allocation and use per GPU, the slices of the
GPU clicked, and the GPU table, paged, sorted and filtered on the server.

Three callbacks, so that each asks only what it shows: a click lists one GPU's slices
without reading the fleet, and a page of the table reads the figures of the GPUs on
it (and one figure of every GPU for the column it sorts by).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from dashboard import callbacks, components, shared, tables, views
from dashboard.access import Scope
from dashboard.callbacks import ALERT, FIGURE, NOTE, Out
from dashboard.model import GPU_MEASURES, GpuRow
from dashboard.shared import PAGE_ROWS, Console, Problem
from dashboard.sources import Departments, SourceError

PREFIX = "gpu"
"""Of its component ids, and of its CSV buttons and download."""

HEATMAP_MEASURES = frozenset({"compute_limit", "compute_used"})
"""What the heat map draws: allocated and used compute per GPU."""
GPU_COLUMNS: components.Columns = [
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
ALL = "*"
"""The department choice that shows every department the viewer may view."""


# -- what it shows -----------------------------------------------------------------------


@dataclass(kw_only=True)
class HeatmapResult:
    problems: list[Problem] = field(default_factory=list)
    heatmap: views.Figure | None = None


@dataclass(kw_only=True)
class TableResult:
    """One page of the GPU table, sorted and filtered on the server."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    """The GPUs that match the filter, on every page."""
    page_count: int = 1
    caption: str = ""
    problems: list[Problem] = field(default_factory=list)
    note: str = ""
    """Why there are no rows (shown in their place), "" when there are some."""


@dataclass(kw_only=True)
class SlicesResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    selected: str = ""
    problems: list[Problem] = field(default_factory=list)
    note: str = ""
    """Why there are no rows (shown in their place), "" when there are some."""


def _departments(scope: Scope, department: str | None) -> tuple[Departments, Problem | None]:
    """The departments the page shows for this viewer and choice, or why none."""
    if not scope.departments:
        return frozenset(), shared.nothing_visible(scope)
    if department and department != ALL:
        if not scope.may_view(department):
            return frozenset(), Problem(
                title="Not permitted",
                detail=f"{scope.identity.user} may not view department {department!r}.",
                tone="secondary",
            )
        return frozenset([department]), None
    return scope.filter, None


def heatmap(console: Console, scope: Scope, department: str | None) -> HeatmapResult:
    """The heat map: allocated and used compute per GPU (two figures per GPU)."""
    departments, problem = _departments(scope, department)
    if problem is not None:
        return HeatmapResult(problems=[problem], heatmap=views.message_figure("Nothing to show"))
    out = HeatmapResult()
    try:
        gpus = console.source.gpus(departments, measures=HEATMAP_MEASURES)
    except SourceError as exc:
        out.problems.append(console.source_problem(exc))
        out.heatmap = views.message_figure(f"{exc.source} is not answering", tone="error")
        return out
    out.problems.extend(console.caveats())
    if not gpus:
        out.problems.append(
            Problem(title="No data yet", detail="No GPU has reported a slice or a reading yet.")
        )
    out.heatmap = views.heatmap_figure(gpus, whole_cards=departments is None)
    return out


def table(
    console: Console,
    scope: Scope,
    department: str | None,
    *,
    page_current: object = 0,
    page_size: object = PAGE_ROWS,
    sort_by: object = None,
    filter_query: object = None,
    whole: bool = False,
) -> TableResult:
    """One page of the GPU table (every matching row when ``whole``, for CSV).

    Reads every GPU's figures only for the columns it sorts or filters by, and the
    other figures for the GPUs on the page: the default page of a 3,000-GPU fleet
    reads 1 figure per GPU and 4 per GPU shown, instead of 5 per GPU."""
    departments, problem = _departments(scope, department)
    if problem is not None:
        return TableResult(problems=[problem], note=shared.NO_ROWS_NOTHING_VISIBLE)
    out = TableResult()
    try:
        view = tables.View.from_table(
            views.GPU_TABLE_FIELDS,
            page_current=page_current,
            page_size=page_size,
            sort_by=sort_by,
            filter_query=filter_query,
        )
    except tables.FilterError as exc:
        out.problems.append(Problem(title="Filter not applied", detail=f"{exc}.", tone="warning"))
        view = tables.View(size=PAGE_ROWS)
    needed = {views.GPU_TABLE_MEASURES[c] for c in view.columns() if c in views.GPU_TABLE_MEASURES}
    source = console.source
    try:
        gpus = source.gpus(departments, measures=None if whole else needed)
        chosen, out.total = view.select(
            views.gpu_table(gpus), views.GPU_TABLE_MEASURES, whole=whole
        )
        picked = [gpus[i] for i in chosen]
        rest = set(GPU_MEASURES) - needed
        if picked and rest and not whole:
            more = source.gpus(departments, measures=rest, uuids={g.uuid for g in picked})
            by_key = {(g.hostname, g.uuid): g for g in more}
            picked = [_with(g, by_key.get((g.hostname, g.uuid)), rest) for g in picked]
    except SourceError as exc:
        out.problems.append(console.source_problem(exc))
        out.note = f"No rows: {exc.source} is not answering (see above)."
        return out
    out.rows = views.gpu_table(picked)
    if not out.rows:
        out.note = (
            "No rows: no GPU matches the filter."
            if view.conditions and gpus
            else "No rows: no GPU holds a slice of yours now."
            if departments is not None
            else f"No rows: no GPU has reported yet ({source.describe()})."
        )
    out.page_count = view.page_count(out.total)
    shown = "GPU" if out.total == 1 else "GPUs"
    out.caption = (
        f"{out.total:,} {shown} match the filter" if view.conditions else f"{out.total:,} {shown}"
    )
    return out


def _with(gpu: GpuRow, more: GpuRow | None, measures: set[str]) -> GpuRow:
    """``gpu`` with the figures ``measures`` taken from ``more`` (a later read)."""
    if more is None:
        return gpu
    changes: dict[str, Any] = {}
    for measure in measures:
        for name in views.GPU_ROW_FIELDS[measure]:
            changes[name] = getattr(more, name)
    return dataclasses.replace(gpu, **changes)


def slices(
    console: Console, scope: Scope, department: str | None, selected: str | None
) -> SlicesResult:
    """The viewer's slices on the GPU ``selected`` (a heat-map click)."""
    if not selected:
        return SlicesResult(note="No rows yet: click a GPU in the heat map to list its slices.")
    departments, problem = _departments(scope, department)
    if problem is not None:
        why = shared.NO_ROWS_NOTHING_VISIBLE
        return SlicesResult(selected=selected, problems=[problem], note=why)
    out = SlicesResult(selected=selected)
    try:
        out.rows = views.slice_table(console.source.slices_on(selected, departments))
    except SourceError as exc:
        out.problems.append(console.source_problem(exc))
        out.note = f"No rows: {exc.source} is not answering (see above)."
        return out
    if not out.rows:
        out.note = (
            f"No rows: no slice is placed on GPU {selected} now."
            if departments is None
            else f"No rows: none of your slices is on GPU {selected} now."
        )
    return out


# -- as the page draws it ----------------------------------------------------------------
#
# Each takes the viewer, or None to read it from the request (inside the try: a store
# that fails to answer who the viewer is shows as an error state too).


@dataclass(frozen=True, kw_only=True)
class HeatmapOutputs(callbacks.Outputs):
    status: Annotated[list[Any], Out("gpu-status", "children", ALERT)]
    heatmap: Annotated[views.Figure, Out("gpu-heatmap", "figure", FIGURE)]


def heatmap_outputs(
    console: Console, scope: Scope | None, department: str | None
) -> HeatmapOutputs:
    try:
        r = heatmap(console, scope or callbacks.viewer(console), department)
    except Exception as exc:  # never a traceback in the page; the log has it
        return HeatmapOutputs.failed(callbacks.failure(console, exc, "GPU page"))
    return HeatmapOutputs(
        status=components.problem_alerts(r.problems), heatmap=components.or_blank(r.heatmap)
    )


@dataclass(frozen=True, kw_only=True)
class TableOutputs(callbacks.Outputs):
    rows: Annotated[list[dict[str, Any]], Out("gpu-table", "data")]
    page_count: Annotated[int, Out("gpu-table", "page_count")]
    status: Annotated[list[Any], Out("gpu-table-status", "children", ALERT)]
    note: Annotated[Any, Out("gpu-table-note", "children", NOTE)]
    page_current: Annotated[Any, Out("gpu-table", "page_current")]


def table_outputs(
    console: Console,
    scope: Scope | None,
    department: str | None,
    view: Mapping[str, Any],
) -> TableOutputs:
    """``view``: the table's page_current, page_size, sort_by and filter_query."""
    page = view.get("page_current", 0)
    try:
        r = table(console, scope or callbacks.viewer(console), department, **view)
    except Exception as exc:  # never a traceback in the page; the log has it
        failed = callbacks.failure(console, exc, "GPU table")
        return TableOutputs.failed(failed, page_count=1, page_current=page)
    return TableOutputs(
        rows=r.rows,
        page_count=r.page_count,
        status=[*components.problem_alerts(r.problems), html.Span(r.caption)],
        note=components.note(r.note),
        page_current=page,
    )


@dataclass(frozen=True, kw_only=True)
class SlicesOutputs(callbacks.Outputs):
    status: Annotated[list[Any], Out("gpu-slices-status", "children", ALERT)]
    rows: Annotated[list[dict[str, Any]], Out("gpu-slices-table", "data")]
    title: Annotated[str, Out("gpu-slices-title", "children")]
    note: Annotated[Any, Out("gpu-slices-table-note", "children", NOTE)]


def slices_outputs(
    console: Console, scope: Scope | None, department: str | None, selected: str | None
) -> SlicesOutputs:
    title = "Slices on the selected GPU (click a cell in the heat map)"
    try:
        r = slices(console, scope or callbacks.viewer(console), department, selected)
    except Exception as exc:  # never a traceback in the page; the log has it
        failed = callbacks.failure(console, exc, "list of slices", rows="list")
        return SlicesOutputs.failed(failed, title=title)
    if r.selected:
        title = f"Slices on GPU {r.selected}"
    return SlicesOutputs(
        status=components.problem_alerts(r.problems),
        rows=r.rows,
        title=title,
        note=components.note(r.note),
    )


def layout(scope: Scope, heat: HeatmapOutputs, rows: TableOutputs, on: SlicesOutputs) -> Any:
    options = [
        {"label": "All my departments" if not scope.whole_fleet else "Whole fleet", "value": ALL}
    ]
    options += [{"label": d, "value": d} for d in scope.departments]
    return html.Div(
        [
            dbc.Row(
                dbc.Col(components.department_select("gpu-department", "Show", options, ALL), md=4),
                className="mb-3",
            ),
            components.download(PREFIX),
            html.Div(heat.status, id="gpu-status"),
            components.graph_card(
                "Allocation and use per GPU (click a GPU to list its slices)",
                "gpu-heatmap",
                260,
                heat.heatmap,
            ),
            dcc.Store(id="gpu-selected", data=""),
            components.table_card(
                html.Span(on.title, id="gpu-slices-title"),
                "gpu-slices-table",
                components.SLICE_COLUMNS,
                rows=on.rows,
                note=on.note,
                height=260,
                csv=(PREFIX, "gpu-slices"),
                above=[html.Div(on.status, id="gpu-slices-status")],
            ),
            components.table_card(
                "GPUs",
                "gpu-table",
                GPU_COLUMNS,
                rows=rows.rows,
                note=rows.note,
                height=420,
                csv=(PREFIX, "gpus"),
                above=[
                    html.Div(
                        rows.status,
                        id="gpu-table-status",
                        className="small text-muted px-1 pb-1",
                    )
                ],
                server_side=True,
                page_count=rows.page_count,
            ),
        ]
    )


def page(console: Console, scope: Scope, range_key: str | None) -> Any:
    """The page filled for the viewer: every department they may view."""
    return layout(
        scope,
        heatmap_outputs(console, scope, ALL),
        table_outputs(console, scope, ALL, {}),
        slices_outputs(console, scope, ALL, ""),
    )


def register(app: dash.Dash, console: Console) -> None:
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

    callbacks.register(
        app,
        HeatmapOutputs,
        Input("gpu-department", "value"),
        Input("tick", "n_intervals"),
        answer=lambda dept, _tick: heatmap_outputs(console, None, dept),
    )

    def gpu_table(
        dept: str | None,
        page: Any,
        size: Any,
        sort_by: Any,
        filter_query: Any,
        _tick: int | None,
    ) -> TableOutputs:
        # A new department or filter starts again at the first page.
        changed = {t.get("prop_id") for t in dash.ctx.triggered}
        if changed & {"gpu-department.value", "gpu-table.filter_query"}:
            page = 0
        view = {
            "page_current": page,
            "page_size": size,
            "sort_by": sort_by,
            "filter_query": filter_query,
        }
        return table_outputs(console, None, dept, view)

    callbacks.register(
        app,
        TableOutputs,
        Input("gpu-department", "value"),
        Input("gpu-table", "page_current"),
        Input("gpu-table", "page_size"),
        Input("gpu-table", "sort_by"),
        Input("gpu-table", "filter_query"),
        Input("tick", "n_intervals"),
        answer=gpu_table,
    )
    callbacks.register(
        app,
        SlicesOutputs,
        Input("gpu-selected", "data"),
        Input("gpu-department", "value"),
        Input("tick", "n_intervals"),
        answer=lambda selected, dept, _tick: slices_outputs(console, None, dept, selected),
    )


DOWNLOADS = callbacks.Downloads(
    params={
        "department": State("gpu-department", "value"),
        "selected": State("gpu-selected", "data"),
        "sort_by": State("gpu-table", "sort_by"),
        "filter_query": State("gpu-table", "filter_query"),
    },
    tables={
        # every row the table's filter and order select
        "gpus": lambda console, scope, p: (
            table(
                console,
                scope,
                p.get("department"),
                sort_by=p.get("sort_by"),
                filter_query=p.get("filter_query"),
                whole=True,
            ).rows,
            "",
        ),
        "gpu-slices": lambda console, scope, p: (
            slices(console, scope, p.get("department"), p.get("selected")).rows,
            "",
        ),
    },
)
