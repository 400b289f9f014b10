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


def replay_table(results: Sequence[ReplayResult], savings: Sequence[Saving | None]) -> Table:
    table = Table(
        title="Replay over time",
        caption="every pod admitted: departments and quotas come with the governance decision",
        box=None,
    )
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
    title: str = "gpupool simulate",
) -> None:
    """One self-contained HTML page (Plotly's script inlined, so it opens offline):
    allocation curves per policy, and GPUs needed per policy, sliced and whole-card."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = 2 * int(bool(fills)) + int(bool(savings))
    if rows == 0:
        raise ValueError("nothing to draw")
    titles = []
    if fills:
        titles.append("GPU capacity allocated (%) by workload arrived (% of capacity)")
        titles.append(f"The same from {ZOOM_FROM}% arrived, where the policies part")
    if savings:
        share = savings[0][1].sliced.acceptance
        titles.append(f"GPUs needed to serve the trace ({share:.0%} of pods start on arrival)")
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
            figure.add_trace(go.Bar(x=names, y=gpus, name=label), row=row, col=1)
        figure.update_yaxes(title_text="GPUs", row=row, col=1)
    figure.update_layout(title=title, height=480 * rows, barmode="group")
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
