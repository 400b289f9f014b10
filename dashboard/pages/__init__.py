"""The console's pages, one module each, and the one table that lists them.

A page module holds everything of its page: what it shows for one viewer (a plain
result, computed without Dash), its callbacks' outputs as a named structure
(:class:`dashboard.callbacks.Outputs`) and their values, its layout, its callbacks
and its CSV downloads; it meets :class:`PageModule`. :data:`PAGES` registers it: the
navbar, the router, the paths the console serves and the CSV downloads all read that
table, so adding a page is its module and one line here (docs/dashboard.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import dash

from dashboard import callbacks, shared
from dashboard.access import Scope
from dashboard.pages import department, gpus, overview
from dashboard.shared import Console


class PageModule(Protocol):
    """What a page module provides (module-level names)."""

    PREFIX: str
    """Of the page's component ids; its CSV buttons and download are named after it."""
    DOWNLOADS: callbacks.Downloads

    def page(self, console: Console, scope: Scope, range_key: str | None) -> Any:
        """The page filled for the viewer (the first layout and the router draw it:
        the first render needs no callback round trip)."""
        ...

    def register(self, app: dash.Dash, console: Console) -> None:
        """Register the page's callbacks (they fire only when an input changes)."""
        ...


@dataclass(frozen=True, kw_only=True)
class Page:
    path: str
    title: str
    """Its name in the navbar."""
    module: PageModule


PAGES: tuple[Page, ...] = (
    Page(path="/", title="Overview", module=overview),
    Page(path="/departments", title="Departments", module=department),
    Page(path="/gpus", title="GPUs", module=gpus),
)
PATHS = frozenset(p.path for p in PAGES)


def at(path: str | None) -> Page | None:
    """The page at ``path`` (the overview for no path), None if there is none."""
    return next((p for p in PAGES if p.path == (path or "/")), None)


def csv(
    console: Console, scope: Scope, name: str, params: Mapping[str, Any]
) -> tuple[str, str] | None:
    """(file name, CSV text) of the table ``name``, recomputed for this viewer; None
    when no page has such a table."""
    for p in PAGES:
        table = p.module.DOWNLOADS.tables.get(name)
        if table is not None:
            rows, suffix = table(console, scope, params)
            return f"gpupool-{name}{suffix}.csv", shared.to_csv(rows)
    return None
