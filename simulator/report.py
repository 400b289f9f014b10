"""Results as plain data (JSON/YAML), rich tables, and an HTML report with Plotly charts.

The JSON of a fill run has at least ``policy``, ``total_gpus``, ``seeds`` (the seeds
used, one run each) and ``allocation_by_arrived``: arrived workload in whole percent
("0" to "130", as strings) -> allocated percent of the fleet's GPU capacity, the mean
of the seeds' curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from simulator.fill import FillResult
from simulator.replay import Needed, ReplayResult, Saving

MARKS = (50, 80, 90, 100, 130)
"""Arrived-workload percentages shown in the fill table."""


def fill_data(result: FillResult) -> dict[str, Any]:
    return {
        "policy": result.policy,
        "total_gpus": result.total_gpus,
        "seeds": list(result.seeds),
        "ratio": result.ratio,
        "order": result.order,
        "allocation_by_arrived": {str(k): v for k, v in result.allocation_by_arrived.items()},
        "per_seed": [
            {
                "seed": run.seed,
                "allocation_at_100": run.curve.get(100),
                "pods": run.pods,
                "failed_pods": run.failed_pods,
                "failed_gpus": run.failed_gpu_milli / 1000,
                "seconds": round(run.seconds, 3),
            }
            for run in result.runs
        ],
        "seconds": round(result.seconds, 3),
    }


def fill_table(results: Sequence[FillResult]) -> Table:
    marks = [m for m in MARKS if results and m in results[0].allocation_by_arrived]
    table = Table(title="Fill: % of GPU capacity allocated, by % of it requested", box=None)
    table.add_column("POLICY")
    table.add_column("GPUS", justify="right")
    table.add_column("SEEDS", justify="right")
    for mark in marks:
        table.add_column(f"@{mark}%", justify="right")
    table.add_column("FAILED PODS", justify="right")
    table.add_column("S/RUN", justify="right")
    for result in results:
        failed = sum(r.failed_pods for r in result.runs) / len(result.runs)
        table.add_row(
            result.policy,
            str(result.total_gpus),
            str(len(result.runs)),
            *(f"{result.at(m):.2f}" for m in marks),
            f"{failed:.0f}",
            f"{result.seconds / len(result.runs):.1f}",
        )
    return table


def replay_data(result: ReplayResult) -> dict[str, Any]:
    return {
        "policy": result.policy,
        "total_gpus": result.total_gpus,
        "pods": result.pods,
        "admitted": result.admitted,
        "acceptance": round(result.acceptance, 4),
        "started_on_arrival": result.started_on_arrival,
        "started_after_waiting": result.started_after_waiting,
        "still_waiting": result.still_waiting,
        "denied": result.denied,
        "allocation_pct": vars(result.allocation_pct),
        "occupancy_pct": vars(result.occupancy_pct),
        "wait_s": {**vars(result.wait_s), "max": round(result.wait_max_s, 1)},
        "duration_s": result.duration_s,
    }


def _needed_data(needed: Needed) -> dict[str, Any]:
    return {
        "acceptance": needed.acceptance,
        "gpus": needed.gpus,
        "nodes": needed.nodes,
        "achieved_acceptance": round(needed.result.acceptance, 4),
    }


def saving_data(saving: Saving) -> dict[str, Any]:
    return {
        "sliced": _needed_data(saving.sliced),
        "whole_cards": _needed_data(saving.whole_cards),
        "sliced_gpus": saving.sliced_gpus,
        "anomaly": saving.anomaly,
        "saving": None if saving.saving is None else round(saving.saving, 4),
    }


NO_GOVERNANCE = "no --config: every pod admitted (no departments, no quotas)"


def replay_table(
    results: Sequence[ReplayResult],
    savings: Sequence[Saving | None],
    *,
    caption: str = NO_GOVERNANCE,
) -> Table:
    table = Table(title="Replay over time", caption=caption, box=None)
    for column in (
        "POLICY",
        "GPUS",
        "ACCEPTED",
        "ALLOC MEAN/P50/P90 %",
        "OCCUPIED MEAN %",
        "WAIT P50/P90/MAX S",
        "DENIED",
        "NEEDED SLICED",
        "NEEDED WHOLE",
        "SAVING",
    ):
        table.add_column(column, justify="left" if column in ("POLICY", "DENIED") else "right")
    for result, saving in zip(results, savings, strict=True):
        a = result.allocation_pct
        w = result.wait_s
        denied = ", ".join(f"{k}={v}" for k, v in sorted(result.denied.items())) or "-"
        table.add_row(
            result.policy,
            str(result.total_gpus),
            f"{result.acceptance:.2%}",
            f"{a.mean:.2f}/{a.p50:.2f}/{a.p90:.2f}",
            f"{result.occupancy_pct.mean:.2f}",
            f"{w.p50:.0f}/{w.p90:.0f}/{result.wait_max_s:.0f}",
            denied,
            (_gpus(saving.sliced) + (" (anomaly)" if saving.anomaly else "")) if saving else "-",
            _gpus(saving.whole_cards) if saving else "-",
            f"{saving.saving:.1%}" if saving and saving.saving is not None else "-",
        )
    return table


QUOTA_SHOWN = (("compute_pct", "COMPUTE %"), ("memory_mib", "MEMORY GIB"), ("slices", "SLICES"))
"""Quota resources in the department table, with how they are shown (memory in GiB)."""


def _quota_cell(use: dict[str, Any] | None, resource: str) -> str:
    """``mean/peak/limit (peak % of limit)`` of one resource, or ``-``."""
    if not use:
        return "-"
    scale = 1024 if resource == "memory_mib" else 1

    def shown(value: float | None) -> str:
        return "none" if value is None else f"{value / scale:.0f}"

    pct = f" ({use['peak_pct']:.0f}%)" if use.get("peak_pct") is not None else ""
    return f"{shown(use['mean'])}/{shown(use['peak'])}/{shown(use['limit'])}{pct}"


def departments_table(policy: str, departments: dict[str, Any]) -> Table:
    """Per department: pods admitted, denied by reason, queued, and quota use."""
    table = Table(
        title=f"Departments ({policy}): quota use is mean/peak/limit (peak % of the limit)",
        box=None,
    )
    for column in ("DEPARTMENT", "PODS", "ADMITTED", "QUEUED", "DENIED"):
        table.add_column(column, justify="left" if column in ("DEPARTMENT", "DENIED") else "right")
    for _, label in QUOTA_SHOWN:
        table.add_column(label, justify="right")
    for name, row in departments.items():
        denied = ", ".join(f"{k}={v}" for k, v in sorted(row["denied"].items())) or "-"
        table.add_row(
            name,
            str(row["pods"]),
            str(row["admitted"]),
            str(row["queued"]),
            denied,
            *(_quota_cell(row["quota"].get(resource), resource) for resource, _ in QUOTA_SHOWN),
        )
    return table


def _gpus(needed: Needed) -> str:
    return "more than the fleet" if needed.gpus is None else str(needed.gpus)


ZOOM_FROM = 75
"""Arrived workload (%) from which the second fill panel is drawn: below it every policy
places everything, and the curves lie on one another."""
COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692")
"""One colour per policy, the same in both fill panels (Plotly's default sequence)."""


def write_html(
    path: Path,
    *,
    fills: Sequence[FillResult] = (),
    savings: Sequence[tuple[str, Saving]] = (),
    departments: dict[str, Any] | None = None,
    title: str = "gpupool simulate",
) -> None:
    """One self-contained HTML page (Plotly's script inlined, so it opens offline):
    allocation curves per policy, GPUs needed per policy, sliced and whole-card, and
    (a replay with a configuration) pods and quota use per department."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = 2 * int(bool(fills)) + int(bool(savings)) + 2 * int(bool(departments))
    if rows == 0:
        raise ValueError("nothing to draw")
    titles = []
    if fills:
        titles.append("GPU capacity allocated (%) by workload arrived (% of capacity)")
        titles.append(f"The same from {ZOOM_FROM}% arrived, where the policies part")
    if savings:
        share = savings[0][1].sliced.acceptance
        titles.append(f"GPUs needed to serve the trace ({share:.0%} of pods start on arrival)")
    if departments:
        titles.append("Pods per department: started on arrival, queued, denied by reason")
        titles.append("Quota use per department: peak, % of the department's limit")
    figure = make_subplots(rows=rows, cols=1, subplot_titles=titles, vertical_spacing=0.11)
    row = 1
    if fills:
        lowest = 100.0
        for index, result in enumerate(fills):
            xs = sorted(result.allocation_by_arrived)
            colour = COLOURS[index % len(COLOURS)]
            for panel, shown in ((row, xs), (row + 1, [x for x in xs if x >= ZOOM_FROM])):
                ys = [result.allocation_by_arrived[x] for x in shown]
                if panel == row + 1 and ys:
                    lowest = min(lowest, *ys)
                figure.add_trace(
                    go.Scatter(
                        x=shown,
                        y=ys,
                        mode="lines",
                        line={"color": colour},
                        legendgroup=result.policy,
                        showlegend=panel == row,
                        name=f"{result.policy} ({result.at(100):.1f}% at 100%)",
                    ),
                    row=panel,
                    col=1,
                )
        for panel in (row, row + 1):
            figure.update_xaxes(title_text="arrived workload, % of GPU capacity", row=panel, col=1)
            figure.update_yaxes(title_text="allocated, % of GPU capacity", row=panel, col=1)
        figure.update_yaxes(range=[max(0.0, lowest - 2), 100], row=row + 1, col=1)
        row += 2
    if savings:
        names = [name for name, _ in savings]
        sliced = [s.sliced_gpus for _, s in savings]
        whole = [s.whole_cards.gpus for _, s in savings]
        for label, gpus in (("sliced", sliced), ("whole cards", whole)):
            figure.add_trace(go.Bar(x=names, y=gpus, name=label, offsetgroup=label), row=row, col=1)
        figure.update_yaxes(title_text="GPUs", row=row, col=1)
        row += 1
    if departments:
        _department_panels(figure, departments, row)
    # bars of one offset group stack (the pods panel), different groups stand side by side
    figure.update_layout(title=title, height=480 * rows, barmode="relative")
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def _department_panels(figure: Any, departments: dict[str, Any], row: int) -> None:
    import plotly.graph_objects as go

    names = list(departments)
    reasons = sorted({r for d in departments.values() for r in d["denied"]})
    parts: list[tuple[str, list[int]]] = [
        ("started on arrival", [d["started_on_arrival"] for d in departments.values()]),
        ("queued", [d["queued"] for d in departments.values()]),
        *((f"denied: {r}", [d["denied"].get(r, 0) for d in departments.values()]) for r in reasons),
    ]
    for label, counts in parts:
        figure.add_trace(go.Bar(x=names, y=counts, name=label, offsetgroup="pods"), row=row, col=1)
    figure.update_yaxes(title_text="pods", row=row, col=1)
    for resource, label in QUOTA_SHOWN:
        peaks = [(d["quota"].get(resource) or {}).get("peak_pct") for d in departments.values()]
        figure.add_trace(
            go.Bar(x=names, y=peaks, name=f"peak {label.lower()}", offsetgroup=resource),
            row=row + 1,
            col=1,
        )
    figure.update_yaxes(title_text="% of limit", row=row + 1, col=1)
