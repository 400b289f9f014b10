"""Figures, table rows and formatting: values in, Plotly figures and row dicts out.

Pure (no request, no source): the callbacks of :mod:`dashboard.app` gather the data
for one viewer, these functions draw it. Every figure is SVG (no WebGL trace types),
so a page never holds more WebGL contexts than browsers allow, and the figures carry
only aggregated series (per department, per GPU), never per-slice data, to stay small.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dashboard.model import GpuRow, HistoryPoint, SliceSample, UsageRow, gpu_index
from governance.model import Org

GIB = 1024**3
MIB = 1024**2

COLOR_PHYSICAL = "#adb5bd"
COLOR_SELLABLE = "#6c757d"
COLOR_ALLOCATED = "#4c78a8"
COLOR_USED = "#2a9d8f"
COLOR_IDLE = "#e76f51"
COLOR_DENIED = "#d62828"
COLOR_BORROWING = "#f4a261"
COLOR_ADMITTED = "#2a9d8f"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
COLORWAY = [
    "#4c78a8",
    "#2a9d8f",
    "#e76f51",
    "#f4a261",
    "#8e6c8a",
    "#e9c46a",
    "#264653",
    "#a8dadc",
    "#6d597a",
    "#b56576",
]
HEAT_SCALE = [[0.0, "#f7fbff"], [0.35, "#9ecae1"], [0.7, "#3182bd"], [1.0, "#08306b"]]


def fmt_bytes(value: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def fmt_gpus(ratio: float) -> str:
    """Compute as a number of whole GPUs."""
    return f"{ratio:,.1f} GPUs" if abs(ratio) >= 10 else f"{ratio:,.2f} GPUs"


def fmt_pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole > 0 else "-"


GRID = "#e9ecef"
AXIS: dict[str, Any] = {
    "gridcolor": GRID,
    "zerolinecolor": GRID,
    "linecolor": GRID,
    "automargin": True,
}

Figure = dict[str, Any]
"""A Plotly figure as plain JSON-able data. Built as dicts rather than
``plotly.graph_objects`` because validating graph objects cost most of a callback's
time (tens of ms per figure, ~0.5 s for a 3,000-GPU heat map)."""


def figure(
    data: list[dict[str, Any]],
    *,
    height: int = 320,
    margin: dict[str, int] | None = None,
    fixed_margins: bool = False,
    **layout: Any,
) -> Figure:
    """A figure with the console's look. ``fixed_margins``: the margins given fit
    every label (known names and numbers), so Plotly need not measure the tick labels
    and redraw to grow them (automargin); on the overview that halves the time Plotly
    takes to draw the history and department plots."""
    base: dict[str, Any] = {
        "height": height,
        "margin": {"l": 50, "r": 20, "t": 16, "b": 40, **(margin or {})},
        "font": {"family": FONT, "size": 12, "color": "#343a40"},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "hoverlabel": {"font": {"family": FONT}},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "xaxis": dict(AXIS),
        "yaxis": dict(AXIS),
    }
    for key, value in layout.items():
        if key.startswith(("xaxis", "yaxis")) and isinstance(value, dict):
            base[key] = {**AXIS, **value}
        else:
            base[key] = value
    if fixed_margins:
        for key, value in base.items():
            if key.startswith(("xaxis", "yaxis")):
                value["automargin"] = False
    return {"data": data, "layout": base}


def subplot_titles(
    titles: Sequence[str], domains: Sequence[tuple[float, float]]
) -> list[dict[str, Any]]:
    return [
        {
            "text": title,
            "x": (a + b) / 2,
            "y": 1.0,
            "xref": "paper",
            "yref": "paper",
            "xanchor": "center",
            "yanchor": "bottom",
            "showarrow": False,
            "font": {"size": 13},
        }
        for title, (a, b) in zip(titles, domains, strict=True)
    ]


def message_figure(message: str, *, height: int = 320, tone: str = "muted") -> Figure:
    """An empty plot that says why it is empty (no data yet, source down)."""
    color = {"muted": "#6c757d", "error": COLOR_DENIED}.get(tone, "#6c757d")
    return figure(
        [],
        height=height,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "showarrow": False,
                "x": 0.5,
                "y": 0.5,
                "xref": "paper",
                "yref": "paper",
                "font": {"size": 14, "color": color},
            }
        ],
    )


# -- capacity --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Capacity:
    gpus: int
    physical_memory_bytes: float
    sellable_memory_bytes: float
    physical_compute_ratio: float
    sellable_compute_ratio: float


def capacity(org: Org) -> Capacity:
    pools = list(org.pools.values())
    return Capacity(
        gpus=sum(p.gpus for p in pools),
        physical_memory_bytes=float(sum(p.physical.memory_mib for p in pools)) * MIB,
        sellable_memory_bytes=float(sum(p.sellable.memory_mib for p in pools)) * MIB,
        physical_compute_ratio=sum(p.physical.compute_pct for p in pools) / 100.0,
        sellable_compute_ratio=sum(p.sellable.compute_pct for p in pools) / 100.0,
    )


@dataclass(frozen=True, kw_only=True)
class Totals:
    slices: int
    memory_limit_bytes: float
    memory_used_bytes: float
    compute_limit_ratio: float
    compute_used_ratio: float
    idle_slices: int
    idle_memory_bytes: float
    idle_compute_ratio: float


def totals(rows: Iterable[UsageRow]) -> Totals:
    rows = list(rows)
    return Totals(
        slices=sum(r.slices for r in rows),
        memory_limit_bytes=sum(r.memory_limit_bytes for r in rows),
        memory_used_bytes=sum(r.memory_used_bytes for r in rows),
        compute_limit_ratio=sum(r.compute_limit_ratio for r in rows),
        compute_used_ratio=sum(r.compute_used_ratio for r in rows),
        idle_slices=sum(r.idle_slices for r in rows),
        idle_memory_bytes=sum(r.idle_memory_bytes for r in rows),
        idle_compute_ratio=sum(r.idle_compute_ratio for r in rows),
    )


def capacity_figure(cap: Capacity | None, tot: Totals) -> Figure:
    """Physical, sellable, allocated and used: memory (GiB) and compute (GPUs)."""
    names = ["Used", "Allocated", "Sellable", "Physical"]
    colors = [COLOR_USED, COLOR_ALLOCATED, COLOR_SELLABLE, COLOR_PHYSICAL]
    mem = [tot.memory_used_bytes / GIB, tot.memory_limit_bytes / GIB]
    comp = [tot.compute_used_ratio, tot.compute_limit_ratio]
    if cap is not None:
        mem += [cap.sellable_memory_bytes / GIB, cap.physical_memory_bytes / GIB]
        comp += [cap.sellable_compute_ratio, cap.physical_compute_ratio]
    n = len(mem)
    domains = [(0.0, 0.44), (0.56, 1.0)]
    data = []
    for i, (values, unit) in enumerate(((mem, "GiB"), (comp, "GPUs"))):
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "x": [round(v, 2) for v in values],
                "y": names[:n],
                "marker": {"color": colors[:n]},
                "text": [f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" for v in values],
                "textposition": "auto",
                "hovertemplate": "%{y}: %{x:,.1f} " + unit + "<extra></extra>",
                "showlegend": False,
                "xaxis": "x" if i == 0 else "x2",
                "yaxis": "y" if i == 0 else "y2",
            }
        )
    return figure(
        data,
        height=260,
        margin={"l": 80, "t": 36, "b": 30},
        fixed_margins=True,
        bargap=0.25,
        xaxis={"domain": domains[0], "anchor": "y"},
        xaxis2={"domain": domains[1], "anchor": "y2"},
        yaxis={"anchor": "x"},
        yaxis2={"anchor": "x2", "showticklabels": True},
        annotations=subplot_titles(("GPU memory (GiB)", "Compute (GPUs)"), domains),
    )


def history_figure(points: Sequence[HistoryPoint], *, empty: str) -> Figure:
    """Allocated vs used over time: memory (left) and compute (right)."""
    if not points:
        return message_figure(empty)
    times = [p.at.isoformat() for p in points]
    mode = "lines+markers" if len(points) < 3 else "lines"
    domains = [(0.0, 0.46), (0.54, 1.0)]
    series = (
        ([p.memory_limit_bytes / GIB for p in points], [p.memory_used_bytes / GIB for p in points]),
        ([p.compute_limit_ratio for p in points], [p.compute_used_ratio for p in points]),
    )
    data = []
    for i, (allocated, used) in enumerate(series):
        axes = {"xaxis": "x" if i == 0 else "x2", "yaxis": "y" if i == 0 else "y2"}
        data.append(
            {
                "type": "scatter",
                "x": times,
                "y": [round(v, 3) for v in allocated],
                "name": "Allocated",
                "mode": mode,
                "line": {"color": COLOR_ALLOCATED, "width": 2, "dash": "dot"},
                "showlegend": i == 0,
                "legendgroup": "allocated",
                "hovertemplate": "Allocated %{y:,.1f}<extra></extra>",
                **axes,
            }
        )
        data.append(
            {
                "type": "scatter",
                "x": times,
                "y": [round(v, 3) for v in used],
                "name": "Used",
                "mode": mode,
                "fill": "tozeroy",
                "line": {"color": COLOR_USED, "width": 2},
                "showlegend": i == 0,
                "legendgroup": "used",
                "hovertemplate": "Used %{y:,.1f}<extra></extra>",
                **axes,
            }
        )
    return figure(
        data,
        height=300,
        # Room for the date axis' second line (the day under the first tick).
        margin={"l": 56, "t": 50, "b": 44},
        fixed_margins=True,
        hovermode="x unified",
        xaxis={"domain": domains[0], "anchor": "y", "type": "date"},
        xaxis2={"domain": domains[1], "anchor": "y2", "type": "date"},
        yaxis={"anchor": "x", "rangemode": "tozero"},
        yaxis2={"anchor": "x2", "rangemode": "tozero"},
        annotations=subplot_titles(("GPU memory (GiB)", "Compute (GPUs)"), domains),
    )


@dataclass(frozen=True, kw_only=True)
class DepartmentLine:
    department: str
    slices: int
    memory_limit_bytes: float
    memory_used_bytes: float
    compute_limit_ratio: float
    compute_used_ratio: float
    idle_slices: int
    idle_memory_bytes: float


def by_department(rows: Iterable[UsageRow]) -> list[DepartmentLine]:
    acc: dict[str, list[UsageRow]] = {}
    for r in rows:
        acc.setdefault(r.department, []).append(r)
    out = []
    for dept, items in sorted(acc.items()):
        t = totals(items)
        out.append(
            DepartmentLine(
                department=dept,
                slices=t.slices,
                memory_limit_bytes=t.memory_limit_bytes,
                memory_used_bytes=t.memory_used_bytes,
                compute_limit_ratio=t.compute_limit_ratio,
                compute_used_ratio=t.compute_used_ratio,
                idle_slices=t.idle_slices,
                idle_memory_bytes=t.idle_memory_bytes,
            )
        )
    return out


def department_bars(lines: Sequence[DepartmentLine], *, top: int = 20) -> Figure:
    """Compute allocated per department, split into used and unused; the top ``top``."""
    if not lines:
        return message_figure("No slices allocated yet")
    chosen = sorted(lines, key=lambda d: (-d.compute_limit_ratio, d.department))[:top]
    chosen.reverse()
    names = [d.department for d in chosen]
    used = [round(min(d.compute_used_ratio, d.compute_limit_ratio), 3) for d in chosen]
    unused = [round(max(0.0, d.compute_limit_ratio - d.compute_used_ratio), 3) for d in chosen]
    return figure(
        [
            {
                "type": "bar",
                "orientation": "h",
                "y": names,
                "x": used,
                "name": "Used",
                "marker": {"color": COLOR_USED},
                "hovertemplate": "%{y}: %{x:.2f} GPUs used<extra></extra>",
            },
            {
                "type": "bar",
                "orientation": "h",
                "y": names,
                "x": unused,
                "name": "Allocated, unused",
                "marker": {"color": COLOR_IDLE},
                "opacity": 0.75,
                "hovertemplate": "%{y}: %{x:.2f} GPUs allocated but unused<extra></extra>",
            },
        ],
        height=max(260, 22 * len(names) + 80),
        margin={"l": max(110, 8 * max(len(n) for n in names) + 16), "b": 50},
        fixed_margins=True,
        barmode="stack",
        xaxis={"title": {"text": "Compute (GPUs)"}},
    )


def admissions_figure(admitted: int, denials: Sequence[tuple[str, int]]) -> Figure:
    """Admissions and denials (by reason) in the time range."""
    if admitted == 0 and not denials:
        return message_figure("No admissions or denials in this time range", height=260)
    labels = ["Admitted", *[reason for reason, _ in denials]]
    values = [admitted, *[n for _, n in denials]]
    colors = [COLOR_ADMITTED, *[COLOR_DENIED] * len(denials)]
    return figure(
        [
            {
                "type": "bar",
                "x": labels,
                "y": values,
                "marker": {"color": colors},
                "text": values,
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{x}: %{y}<extra></extra>",
            }
        ],
        height=260,
        margin={"t": 24},
        yaxis={"title": {"text": "Pods"}},
    )


def sku_mix_figure(rows: Iterable[UsageRow]) -> Figure:
    acc: dict[str, int] = {}
    for r in rows:
        acc[r.sku or "(none)"] = acc.get(r.sku or "(none)", 0) + r.slices
    acc = {k: v for k, v in acc.items() if v > 0}
    if not acc:
        return message_figure("No slices allocated yet")
    return figure(
        [
            {
                "type": "pie",
                "labels": list(acc),
                "values": list(acc.values()),
                "hole": 0.55,
                "sort": True,
                "textinfo": "label+percent",
                "hovertemplate": "%{label}: %{value} slices<extra></extra>",
                "marker": {"colors": COLORWAY[: len(acc)]},
            }
        ],
        height=300,
        margin={"l": 20, "r": 20, "t": 20, "b": 20},
        showlegend=False,
    )


def quota_figure(lines: Sequence[dict[str, Any]]) -> Figure:
    """Used as a percent of the limit, per queue and resource (limited ones only)."""
    limited = [x for x in lines if isinstance(x.get("limit"), int | float) and x["limit"]]
    if not limited:
        return message_figure("No quota limits set for this department (unlimited)")
    labels = [f"{x['queue'] or '(department)'} · {x['resource']}" for x in limited]
    pct = [100.0 * float(x["used"]) / float(x["limit"]) for x in limited]

    def color(x: dict[str, Any], p: float) -> str:
        ceiling = x.get("ceiling_value")
        if p > 100 and ceiling is not None and x["used"] > ceiling:
            return COLOR_DENIED  # above even what borrowing allows
        if p > 100:
            return COLOR_BORROWING  # borrowing the department's unused quota
        return COLOR_IDLE if p >= 90 else COLOR_ALLOCATED

    colors = [color(x, p) for x, p in zip(limited, pct, strict=True)]
    return figure(
        [
            {
                "type": "bar",
                "orientation": "h",
                "y": labels[::-1],
                "x": [round(p, 1) for p in pct[::-1]],
                "marker": {"color": colors[::-1]},
                "text": [f"{x['used_text']} / {x['limit_text']}" for x in limited][::-1],
                "textposition": "auto",
                "hovertemplate": "%{y}: %{x:.0f}% of the limit<extra></extra>",
            }
        ],
        height=max(220, 24 * len(labels) + 70),
        margin={"l": 170},
        xaxis={"title": {"text": "% of limit used"}},
        shapes=[
            {
                "type": "line",
                "x0": 100,
                "x1": 100,
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"dash": "dash", "color": "#495057"},
            }
        ],
    )


# -- GPUs ------------------------------------------------------------------------------


def heatmap_figure(gpus: Sequence[GpuRow], *, whole_cards: bool) -> Figure:
    """Allocation and use per physical GPU: one row per node, one column per GPU index
    on the node, labelled by that index (a department that holds GPUs 2 and 5 of a node
    sees "GPU 2" and "GPU 5", not its first and second); a GPU whose index is unknown
    gets a column of its own, labelled by its UUID."""
    if not gpus:
        return message_figure("No GPUs reported yet", height=260)
    hosts = sorted({g.hostname for g in gpus})
    row_of = {h: i for i, h in enumerate(hosts)}
    labels = sorted({_column(g) for g in gpus}, key=lambda c: (c[0], c[1]))
    col_of = {label: i for i, (_, label) in enumerate(labels)}
    width = len(labels)
    alloc: list[list[float | None]] = [[None] * width for _ in hosts]
    used: list[list[float | None]] = [[None] * width for _ in hosts]
    custom: list[list[str]] = [[""] * width for _ in hosts]
    for g in gpus:
        r, col = row_of[g.hostname], col_of[_column(g)[1]]
        alloc[r][col] = round(100.0 * g.compute_limit_ratio, 1)
        used[r][col] = round(100.0 * g.compute_used_ratio, 1)
        custom[r][col] = g.uuid
    columns = [label for _, label in labels]
    titles = (
        ("Allocated compute (% of card)", "GPU utilisation (%)")
        if whole_cards
        else ("Your allocated compute (% of card)", "Your slices' utilisation (% of card)")
    )
    domains = [(0.0, 0.47), (0.51, 0.98)]
    data = []
    for i, z in enumerate((alloc, used)):
        data.append(
            {
                "type": "heatmap",
                "z": z,
                "x": columns,
                "y": hosts,
                "customdata": custom,
                "zmin": 0,
                "zmax": 100,
                "colorscale": HEAT_SCALE,
                "xgap": 1,
                "ygap": 1,
                "showscale": i == 1,
                "colorbar": {"title": {"text": "%"}, "thickness": 12},
                "hovertemplate": "%{y} %{x}<br>%{z:.0f}%<br>%{customdata}<extra></extra>",
                "xaxis": "x" if i == 0 else "x2",
                "yaxis": "y" if i == 0 else "y2",
            }
        )
    return figure(
        data,
        height=min(1000, max(260, 16 * len(hosts) + 90)),
        margin={"l": 120, "t": 40},
        xaxis={"domain": domains[0], "anchor": "y"},
        xaxis2={"domain": domains[1], "anchor": "y2"},
        # Plotly thins crowded category labels itself; every node is in the hover.
        yaxis={"anchor": "x", "autorange": "reversed", "nticks": 40},
        yaxis2={"anchor": "x2", "autorange": "reversed", "showticklabels": False, "matches": "y"},
        annotations=subplot_titles(titles, domains),
    )


def _column(gpu: GpuRow) -> tuple[int, str]:
    """(sort key, label) of a GPU's heat-map column: its index on the node."""
    index = gpu_index(gpu.gpu)
    if gpu.gpu.isdigit():
        return index, f"GPU {index}"
    return index, f"GPU {gpu.uuid[:12]}"


# -- tables ----------------------------------------------------------------------------


def department_table(lines: Sequence[DepartmentLine]) -> list[dict[str, Any]]:
    return [
        {
            "department": d.department,
            "slices": d.slices,
            "memory_allocated_gib": round(d.memory_limit_bytes / GIB, 1),
            "memory_used_gib": round(d.memory_used_bytes / GIB, 1),
            "compute_allocated_gpus": round(d.compute_limit_ratio, 2),
            "compute_used_gpus": round(d.compute_used_ratio, 2),
            "compute_efficiency_pct": round(100 * d.compute_used_ratio / d.compute_limit_ratio, 1)
            if d.compute_limit_ratio
            else None,
            "idle_slices": d.idle_slices,
            "idle_memory_gib": round(d.idle_memory_bytes / GIB, 1),
        }
        for d in lines
    ]


def slice_table(slices: Iterable[SliceSample]) -> list[dict[str, Any]]:
    return [
        {
            "namespace": s.namespace,
            "pod": s.pod,
            "container": s.container,
            "department": s.department,
            "queue": s.queue,
            "sku": s.sku,
            "node": s.hostname,
            "gpu_uuid": s.uuid,
            "memory_allocated_gib": round((s.memory_limit_bytes or 0.0) / GIB, 2),
            "memory_used_gib": round(s.memory_used_bytes / GIB, 2),
            "compute_allocated_pct": round(100 * (s.compute_limit_ratio or 0.0), 1),
            "compute_used_pct": round(100 * s.compute_used_ratio, 1),
            "processes": int(s.processes),
            "idle": s.idle,
        }
        for s in slices
    ]


GPU_TABLE_MEASURES = {
    "slices": "slices",
    "memory_allocated_gib": "memory_limit",
    "memory_used_gib": "memory_used",
    "compute_allocated_pct": "compute_limit",
    "compute_used_pct": "compute_used",
}
"""The numeric columns of :func:`gpu_table`, and the figure
(:data:`dashboard.model.GPU_MEASURES`) each shows."""
GPU_TABLE_FIELDS = ("node", "gpu", "uuid", "model", *GPU_TABLE_MEASURES)
GPU_ROW_FIELDS = {
    "slices": ("slices",),
    "memory_limit": ("memory_limit_bytes",),
    "memory_used": ("memory_used_bytes",),
    "compute_limit": ("compute_limit_ratio",),
    "compute_used": ("compute_used_ratio", "util_pct"),
}
"""The :class:`GpuRow` fields that hold each figure."""


def gpu_table(gpus: Iterable[GpuRow]) -> list[dict[str, Any]]:
    return [
        {
            "node": g.hostname,
            "gpu": g.gpu,
            "uuid": g.uuid,
            "model": g.model,
            "slices": g.slices,
            "memory_allocated_gib": round(g.memory_limit_bytes / GIB, 1),
            "memory_used_gib": round(g.memory_used_bytes / GIB, 1),
            "compute_allocated_pct": round(100 * g.compute_limit_ratio, 1),
            "compute_used_pct": round(100 * g.compute_used_ratio, 1),
        }
        for g in gpus
    ]


def denial_table(denials: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {
            "at": _iso(d.at),
            "department": d.department,
            "queue": d.queue,
            "namespace": d.namespace,
            "sku": d.sku,
            "who": d.subject,
            "reason": d.reason,
            "message": d.message,
        }
        for d in denials
    ]


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")
