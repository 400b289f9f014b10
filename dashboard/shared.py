"""What every page of the console shares, without Dash: its dependencies and its words.

:class:`Console` holds the dependencies (metrics source, governance store, the
organisation and the authorizer, how to trust identities, the clock) and answers what
every page asks of them: who the viewer is (their :class:`~dashboard.access.Scope`,
Casbin's decision), the time window of a range, and the problems every page can show
(no configuration, metrics or store unavailable, partial data). Each page
(:mod:`dashboard.pages`) computes what it shows from these, for one viewer, and asks
the source and the ledger for that viewer's departments only; a department outside
the scope is refused, never filtered late.

The organisation and the authorizer are read only through the two callables given to
:class:`Console` (today :class:`governance.storage.source.SnapshotSource`'s ``org``
and ``policy``), so that how they are kept
current can change without touching a page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard import access, views
from dashboard.access import Authorizer, Scope, Trust
from dashboard.model import IDLE_FRACTION, UsageRow
from dashboard.sources import Source, SourceError
from governance import rbac
from governance.contract import SKU_CUSTOM
from governance.errors import StoreError
from governance.model import Org
from governance.storage.store import Store

RANGES: dict[str, tuple[str, int]] = {
    "15m": ("Last 15 minutes", 15 * 60),
    "1h": ("Last hour", 3600),
    "6h": ("Last 6 hours", 6 * 3600),
    "24h": ("Last 24 hours", 24 * 3600),
    "7d": ("Last 7 days", 7 * 24 * 3600),
}
DEFAULT_RANGE = "1h"
REFRESH_CHOICES = (0, 15, 30, 60, 300)
"""Auto-refresh periods offered, in seconds (0: off); only those >= the scrape
interval are offered, and the server clamps any other value."""
MAX_POINTS = 240
PAGE_ROWS = 20
"""Rows per page of every table."""
IDLE_PCT = round(100 * IDLE_FRACTION)
NO_ROWS_NOTHING_VISIBLE = "No rows: you may view no department here (see above)."


def step_for(range_s: int, scrape_interval_s: float) -> float:
    """Query resolution: at most MAX_POINTS points, never finer than a scrape."""
    return max(scrape_interval_s, range_s / MAX_POINTS)


def refresh_ms(choice: object, scrape_interval_s: float) -> int:
    """The auto-refresh period in ms for a choice; 0 disables. Never faster than a
    scrape: new data cannot appear sooner."""
    try:
        seconds = float(str(choice))
    except ValueError:
        return 0
    if seconds <= 0:
        return 0
    return int(1000 * max(seconds, scrape_interval_s))


def refresh_options(scrape_interval_s: float) -> list[dict[str, str]]:
    options = [{"label": "Auto-refresh off", "value": "0"}]
    for s in REFRESH_CHOICES:
        if s and s >= scrape_interval_s:
            label = f"Every {s}s" if s < 60 else f"Every {s // 60} min"
            options.append({"label": label, "value": str(s)})
    if len(options) == 1:
        s = int(scrape_interval_s)
        options.append({"label": f"Every {s}s", "value": str(s)})
    return options


def range_of(key: object) -> tuple[str, int]:
    """(label, seconds) of a time range; an unknown key is the default range."""
    return RANGES.get(str(key), RANGES[DEFAULT_RANGE])


@dataclass(frozen=True, kw_only=True)
class Problem:
    """An empty or error state to show instead of data."""

    title: str
    detail: str
    tone: str = "warning"
    """Bootstrap colour: warning (no data yet), danger (source down), secondary."""


@dataclass(frozen=True, kw_only=True)
class Kpi:
    label: str
    value: str
    note: str = ""
    tone: str = ""


@dataclass(frozen=True, kw_only=True)
class Window:
    """The instants a time range covers, and the resolution to ask for."""

    start: datetime
    end: datetime
    step_s: float


class Console:
    """The console's dependencies, and what every page asks of them."""

    def __init__(
        self,
        *,
        source: Source,
        store: Store,
        org: Callable[[], Org | None],
        authorizer: Callable[[], Authorizer],
        trust: Trust,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        waste_limit: int = 25,
        denial_limit: int = 50,
    ) -> None:
        self.source = source
        self.store = store
        self._org = org
        self._authorizer = authorizer
        self.trust = trust
        self.clock = clock
        self.waste_limit = waste_limit
        self.denial_limit = denial_limit

    # -- who ---------------------------------------------------------------------------

    def org(self) -> Org | None:
        return self._org()

    def warm_up(self) -> None:
        """Build every department's policy now and settle the heap (rbac.warm): the
        server calls it before serving, so that no viewer pays for either."""
        org = self.org()
        departments = sorted(org.departments) if org is not None else []
        rbac.warm(self._authorizer(), departments, collect=True)

    def scope(self, headers: Mapping[str, str]) -> Scope:
        """The viewer of a request; AccessError without a trusted identity."""
        identity = self.trust.identify(headers)
        org = self.org()
        names = list(org.departments) if org is not None else []
        return access.scope_for(identity, names, self._authorizer())

    # -- when --------------------------------------------------------------------------

    def window(self, range_key: object) -> Window:
        seconds = range_of(range_key)[1]
        end = self.clock()
        return Window(
            start=end - timedelta(seconds=seconds),
            end=end,
            step_s=step_for(seconds, self.source.scrape_interval_s),
        )

    # -- what can go wrong -------------------------------------------------------------

    def no_config(self) -> Problem:
        return Problem(
            title="No configuration yet",
            detail=(
                f"The governance store ({self.store.safe_url}) holds no organisation: "
                "apply one with `gpupool apply -f org.yaml`."
            ),
            tone="secondary",
        )

    def source_problem(self, exc: SourceError) -> Problem:
        return Problem(
            title="Metrics unavailable",
            detail=f"{exc} The figures below are empty until it answers again.",
            tone="danger",
        )

    def store_problem(self, exc: StoreError) -> Problem:
        return Problem(
            title="Governance store unavailable",
            detail=f"{self.store.safe_url}: {exc}",
            tone="danger",
        )

    def caveats(self, org: Org | None = None, rows: Sequence[UsageRow] = ()) -> list[Problem]:
        """What to say about the source's answer: what it could not read this time
        (some exporters down) and, with ``org``, the tenants of ``rows`` that the
        organisation does not declare."""
        found = [Problem(title="Partial data", detail=text) for text in self.source.degraded()]
        if org is not None:
            found += unknown_tenants(org, rows)
        return found


def usage_kpis(
    scope: Scope, tot: views.Totals, fleet: tuple[int, float | None] | None
) -> list[Kpi]:
    """Allocated and used memory and compute, utilisation and waste of ``scope``'s
    slices (with ``fleet``, (GPUs, average utilisation), for a whole-fleet viewer)."""
    if scope.whole_fleet and fleet is not None and fleet[1] is not None:
        avg = Kpi(
            label="Average GPU utilisation",
            value=f"{fleet[1]:.0f}%",
            note=f"over {fleet[0]:,} GPUs",
        )
    else:
        avg = Kpi(
            label="Slice utilisation",
            value=views.fmt_pct(tot.compute_used_ratio, tot.compute_limit_ratio),
            note="used / allocated compute of your slices",
        )
    return [
        Kpi(
            label="Memory allocated / used",
            value=f"{views.fmt_bytes(tot.memory_limit_bytes)}",
            note=f"{views.fmt_bytes(tot.memory_used_bytes)} used "
            f"({views.fmt_pct(tot.memory_used_bytes, tot.memory_limit_bytes)})",
        ),
        Kpi(
            label="Compute allocated / used",
            value=views.fmt_gpus(tot.compute_limit_ratio),
            note=f"{views.fmt_gpus(tot.compute_used_ratio)} used "
            f"({views.fmt_pct(tot.compute_used_ratio, tot.compute_limit_ratio)})",
        ),
        avg,
        Kpi(
            label="Idle but allocated",
            value=f"{tot.idle_slices:,} slices",
            note=f"{views.fmt_bytes(tot.idle_memory_bytes)}, "
            f"{views.fmt_gpus(tot.idle_compute_ratio)} wasted",
            tone="warning" if tot.idle_slices else "",
        ),
    ]


def unknown_tenants(org: Org, rows: Sequence[UsageRow]) -> list[Problem]:
    """Metrics that name a department, queue or SKU the organisation does not declare:
    pods labelled under another configuration, or an exporter reporting tenants of
    somewhere else. Shown, never silently summed with the rest."""
    departments: dict[str, int] = {}
    queues: dict[str, int] = {}
    skus: dict[str, int] = {}
    for row in rows:
        if row.department not in org.departments:
            departments[row.department] = departments.get(row.department, 0) + row.slices
            continue
        if row.queue and (row.department, row.queue) not in org.queues:
            name = f"{row.department}/{row.queue}"
            queues[name] = queues.get(name, 0) + row.slices
        if row.sku and row.sku not in org.skus and row.sku != SKU_CUSTOM:
            skus[row.sku] = skus.get(row.sku, 0) + row.slices
    found = [
        f"{what} "
        + ", ".join(f"{name!r} ({_slices(count)})" for name, count in sorted(named.items()))
        for what, named in (("department", departments), ("queue", queues), ("SKU", skus))
        if named
    ]
    if not found:
        return []
    return [
        Problem(
            title="Metrics name what the organisation does not declare",
            detail=(
                "The exporters report slices of " + "; ".join(found) + ", which the "
                "configuration in force does not declare. Their pods were labelled under "
                "another configuration, or an exporter reports another cluster's tenants: "
                "check the pods' gpupool.io/ labels and `gpupool get departments`."
            ),
        )
    ]


def _slices(count: int) -> str:
    return f"{count} slice" if count == 1 else f"{count} slices"


def nothing_visible(scope: Scope) -> Problem:
    return Problem(
        title="No department to show",
        detail=(
            f"{scope.identity.user} (groups: {', '.join(scope.identity.groups) or 'none'}) "
            "may view no department. Ask a dept-admin to bind you as viewer of theirs."
        ),
        tone="secondary",
    )


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
