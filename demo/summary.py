"""The live summary: admitted, denied by reason, slices per department, progress.

On a terminal it is a rich display redrawn in place; elsewhere (a pipe, CI) one line
every :data:`LINE_EVERY_S` seconds, so that logs stay readable.
"""

from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from demo.driver import Stats

LINE_EVERY_S = 10.0


def line(stats: Stats, elapsed_s: float) -> str:
    """One line of the summary (for logs)."""
    denied = sum(stats.denied.values())
    reasons = ", ".join(f"{r} {n}" for r, n in stats.denied.most_common())
    slices = ", ".join(f"{d} {n}" for d, n in sorted(stats.slices.items()))
    state = " (frozen)" if stats.frozen else ""
    return (
        f"t={elapsed_s:.0f}s{state} admitted {stats.admitted}, denied {denied}"
        + (f" ({reasons})" if reasons else "")
        + f"; running {stats.running}, pending {stats.pending}; slices in use: "
        + (slices or "none")
    )


def table(stats: Stats) -> Table:
    grid = Table(show_header=True, header_style="bold", expand=False, box=None, padding=(0, 2))
    grid.add_column("admissions")
    grid.add_column("", justify="right")
    grid.add_column("slices in use")
    grid.add_column("", justify="right")
    denials = [("admitted", str(stats.admitted))] + [
        (f"denied {reason}", str(count)) for reason, count in stats.denied.most_common()
    ]
    slices = [(department, str(count)) for department, count in sorted(stats.slices.items())]
    slices.append(("pods running / pending", f"{stats.running} / {stats.pending}"))
    for i in range(max(len(denials), len(slices))):
        left = denials[i] if i < len(denials) else ("", "")
        right = slices[i] if i < len(slices) else ("", "")
        grid.add_row(left[0], left[1], right[0], right[1])
    return grid


class Display:
    """Shows ``stats`` until closed; ``duration_s`` None means until Ctrl-C."""

    def __init__(self, console: Console, stats: Stats, duration_s: float | None) -> None:
        self.console = console
        self.stats = stats
        self.duration_s = duration_s
        self.started = time.monotonic()
        self._last_line = self.started
        self._frozen_shown = False
        """A line is printed at once when the workload freezes."""
        self.progress = Progress(
            TextColumn("[bold]workload"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("", total=duration_s)
        self.live: Live | None = None

    def _renderable(self) -> RenderableType:
        recent = []
        for d in list(self.stats.recent_denials):
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(f"{d.reason} ", style="bold red")
            line.append(d.message.split(" denied the request: ", 1)[-1])
            recent.append(line)
        if recent:
            recent.insert(0, Text("latest denials", style="bold"))
        return Group(self.progress, table(self.stats), *recent)

    def start(self) -> None:
        if self.console.is_terminal:
            self.live = Live(self._renderable(), console=self.console, refresh_per_second=2)
            self.live.start()

    def update(self) -> None:
        elapsed = time.monotonic() - self.started
        state = "frozen, serving" if self.stats.frozen else f"{self.stats.planned} pods sent"
        self.progress.update(self.task, completed=elapsed, description=state)
        if self.live is not None:
            self.live.update(self._renderable())
        elif (
            time.monotonic() - self._last_line >= LINE_EVERY_S
            or self.stats.frozen != self._frozen_shown
        ):
            self._frozen_shown = self.stats.frozen
            self._last_line = time.monotonic()
            self.console.print(line(self.stats, elapsed), soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._renderable())
            self.live.stop()
