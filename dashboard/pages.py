"""What each page shows for one viewer: the callback logic, without Dash.

:class:`Console` holds the dependencies (metrics source, governance store, the
organisation and the authorizer, how to trust identities) and answers one method per
page with a plain result object. :mod:`dashboard.app` turns requests into calls here
and results into component properties. Every method takes the viewer's
:class:`~dashboard.access.Scope` and asks the source and the ledger for those
departments only; a department outside the scope is refused, never filtered late.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dashboard import access, admissions, tables, views
from dashboard.access import Authorizer, Scope, Trust
from dashboard.model import GPU_MEASURES, IDLE_FRACTION, GpuRow, UsageRow
from dashboard.sources import Departments, Source, SourceError
from governance import ledger, rbac
from governance.config import format_amount
from governance.contract import SKU_CUSTOM
from governance.errors import StoreError
from governance.model import Org
from governance.resources import RESOURCE_NAMES, ResourceName
from governance.store import Store

log = logging.getLogger(__name__)

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
HEATMAP_MEASURES = frozenset({"compute_limit", "compute_used"})
"""What the GPU heat map draws: allocated and used compute per GPU."""


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


def range_seconds(key: object) -> int:
    return RANGES.get(str(key), RANGES[DEFAULT_RANGE])[1]


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


@dataclass(kw_only=True)
class OverviewResult:
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


@dataclass(kw_only=True)
class DepartmentResult:
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


@dataclass(kw_only=True)
class GpuResult:
    """The heat map of the GPU page."""

    problems: list[Problem] = field(default_factory=list)
    heatmap: views.Figure | None = None


@dataclass(kw_only=True)
class GpuTable:
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
class GpuSlices:
    rows: list[dict[str, Any]] = field(default_factory=list)
    selected: str = ""
    problems: list[Problem] = field(default_factory=list)
    note: str = ""
    """Why there are no rows (shown in their place), "" when there are some."""


class Console:
    """The console's dependencies and the logic of its pages."""

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

    def _degraded(self, out: Any) -> None:
        for text in self.source.degraded():
            out.problems.append(Problem(title="Partial data", detail=text))

    def _window(self, range_key: object) -> tuple[datetime, datetime, float, int]:
        seconds = range_seconds(range_key)
        end = self.clock()
        return (
            end - timedelta(seconds=seconds),
            end,
            step_for(seconds, self.source.scrape_interval_s),
            seconds,
        )

    # -- overview ----------------------------------------------------------------------

    def overview(self, scope: Scope, range_key: object) -> OverviewResult:
        out = OverviewResult()
        org = self.org()
        if org is None:
            out.problems.append(self.no_config())
        if not scope.departments:
            out.problems.append(_nothing_visible(scope))
            _empty_overview(out, "Nothing to show")
            out.notes = dict.fromkeys(("department_rows", "waste_rows"), NO_ROWS_NOTHING_VISIBLE)
            return out
        start, end, step, _ = self._window(range_key)
        cap = views.capacity(org) if org is not None and scope.whole_fleet else None
        src, only = self.source, scope.filter
        try:
            # Independent questions, asked at once: with Prometheus each is a few
            # HTTP round trips that Prometheus evaluates in parallel.
            with ThreadPoolExecutor(max_workers=4) as pool:
                f_rows = pool.submit(src.usage, only, per_queue=False)
                f_fleet = pool.submit(src.fleet_utilisation) if scope.whole_fleet else None
                f_points = pool.submit(src.history, only, start, end, step)
                f_waste = pool.submit(src.waste, only, self.waste_limit)
                rows = f_rows.result()
                fleet = f_fleet.result() if f_fleet is not None else None
                points = f_points.result()
                waste = f_waste.result()
        except SourceError as exc:
            out.problems.append(self.source_problem(exc))
            _empty_overview(out, f"{exc.source} is not answering", tone="error")
            rows, points, waste = [], [], []
            if cap is not None:
                out.capacity = views.capacity_figure(cap, views.totals([]))
            out.kpis = self._capacity_kpis(cap)
            self._admissions(out, scope, start, range_key)
            why = f"No rows: {exc.source} is not answering (see above)."
            out.notes = {"department_rows": why, "waste_rows": why}
            return out
        self._degraded(out)
        if org is not None:
            out.problems.extend(unknown_tenants(org, rows))
        tot = views.totals(rows)
        if not rows and (fleet is None or fleet[0] == 0):
            out.problems.append(
                Problem(
                    title="No data yet",
                    detail=(
                        f"{self.source.describe()} has reported no GPU or slice yet. "
                        "Check that the exporters run and are scraped."
                    ),
                )
            )
        out.kpis = [*self._capacity_kpis(cap), *self._usage_kpis(scope, tot, fleet)]
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
                f"({self.source.describe()} reports none)."
            )
        if not out.waste_rows:
            out.notes["waste_rows"] = (
                "No rows: no slice is idle (each uses at least "
                f"{IDLE_PCT}% of the compute it was granted)."
                if out.department_rows
                else "No rows: there are no slices to be idle."
            )
        self._admissions(out, scope, start, range_key)
        return out

    def _capacity_kpis(self, cap: views.Capacity | None) -> list[Kpi]:
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

    def _usage_kpis(
        self, scope: Scope, tot: views.Totals, fleet: tuple[int, float | None] | None
    ) -> list[Kpi]:
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

    def _admission_counts(self, scope: Scope, start: datetime) -> tuple[int, list[tuple[str, int]]]:
        depts = None if scope.whole_fleet else list(scope.departments)
        return admissions.counts(self.store, since=start, departments=depts)

    def _admissions(
        self, out: OverviewResult, scope: Scope, start: datetime, range_key: object
    ) -> None:
        """The admissions figure and KPI (a store failure is shown, not raised)."""
        try:
            admitted, denied = self._admission_counts(scope, start)
        except StoreError as exc:
            out.problems.append(self.store_problem(exc))
            out.admissions = views.message_figure("Governance store unavailable", tone="error")
            return
        out.admissions = views.admissions_figure(admitted, denied)
        out.kpis.append(
            Kpi(
                label="Admissions / denials",
                value=f"{admitted:,} / {sum(n for _, n in denied):,}",
                note=f"in the {RANGES.get(str(range_key), RANGES[DEFAULT_RANGE])[0].lower()}",
                tone="danger" if denied else "",
            )
        )

    # -- department --------------------------------------------------------------------

    def department(
        self, scope: Scope, department: str | None, range_key: object
    ) -> DepartmentResult:
        if not department:
            department = scope.departments[0] if scope.departments else ""
        out = DepartmentResult(department=department)
        if not department or not scope.may_view(department):
            out.problems.append(
                Problem(
                    title="Not permitted",
                    detail=(
                        f"{scope.identity.user} may not view department {department!r}. "
                        "Ask a dept-admin of that department, or a platform-admin, to bind "
                        "you as its viewer."
                        if department
                        else _nothing_visible(scope).detail
                    ),
                    tone="secondary",
                )
            )
            _empty_department(out, "Nothing to show")
            out.notes = dict.fromkeys(
                ("quota_rows", "waste_rows", "denial_rows"), NO_ROWS_NOTHING_VISIBLE
            )
            return out
        only = frozenset([department])
        org = self.org()
        start, end, step, _ = self._window(range_key)
        try:
            if org is not None and department in org.departments:
                report = ledger.quota_report(self.store, org, departments=[department])
                out.quota_rows = [_quota_row(line) for line in report]
                out.borrowing = [
                    f"{line.queue}: +{format_amount(_resource(line.resource), line.borrowed)} "
                    f"{_resource_word(line.resource)} borrowed"
                    for line in report
                    if line.queue and line.borrowed > 0
                ]
            else:
                out.notes["quota_rows"] = (
                    f"No rows: the configuration in force declares no department {department}."
                )
            denials = ledger.recent_denials(
                self.store, departments=[department], limit=self.denial_limit
            )
            out.denial_rows = views.denial_table(denials)
            if not out.denial_rows:
                out.notes["denial_rows"] = (
                    f"No rows: no GPU pod of {department} has been denied (the newest "
                    f"{self.denial_limit} denials show here)."
                )
        except StoreError as exc:
            out.problems.append(self.store_problem(exc))
            why = "No rows: the governance store is unavailable (see above)."
            out.notes.setdefault("quota_rows", why)
            out.notes.setdefault("denial_rows", why)
        out.quota = views.quota_figure(out.quota_rows)
        try:
            with ThreadPoolExecutor(max_workers=3) as pool:
                f_rows = pool.submit(self.source.usage, only)
                f_points = pool.submit(self.source.history, only, start, end, step)
                f_waste = pool.submit(self.source.waste, only, self.waste_limit)
                rows, points, waste = f_rows.result(), f_points.result(), f_waste.result()
        except SourceError as exc:
            out.problems.append(self.source_problem(exc))
            message = f"{exc.source} is not answering"
            out.history = views.message_figure(message, tone="error")
            out.sku_mix = views.message_figure(message, tone="error")
            out.notes["waste_rows"] = f"No rows: {message} (see above)."
            return out
        self._degraded(out)
        if org is not None:
            out.problems.extend(unknown_tenants(org, rows))
        tot = views.totals(rows)
        out.kpis = [
            Kpi(label="Slices", value=f"{tot.slices:,}", note="placed on GPUs now"),
            *self._usage_kpis(scope_of(scope, department), tot, None),
        ]
        out.history = views.history_figure(points, empty=f"No history for {department} yet")
        out.sku_mix = views.sku_mix_figure(rows)
        out.waste_rows = views.slice_table(waste)
        if not out.waste_rows:
            out.notes["waste_rows"] = (
                f"No rows: none of {department}'s slices is idle (each uses at least "
                f"{IDLE_PCT}% of the compute it was granted)."
                if tot.slices
                else f"No rows: {department} has no slice placed on a GPU now."
            )
        return out

    def default_department(self, scope: Scope) -> str | None:
        """The department the Departments page opens on: the viewer's first that has
        slices placed now (else their first), so that a page with figures, not an
        empty one, greets them."""
        if not scope.departments:
            return None
        try:
            rows = self.source.usage(scope.filter, per_queue=False)
        except SourceError:
            return scope.departments[0]
        busy = {r.department for r in rows if r.slices > 0}
        return next((d for d in scope.departments if d in busy), scope.departments[0])

    # -- GPUs --------------------------------------------------------------------------

    def _gpu_departments(
        self, scope: Scope, department: str | None
    ) -> tuple[Departments, Problem | None]:
        """The departments the GPU page shows for this viewer and choice, or why none."""
        if not scope.departments:
            return frozenset(), _nothing_visible(scope)
        if department and department != "*":
            if not scope.may_view(department):
                return frozenset(), Problem(
                    title="Not permitted",
                    detail=f"{scope.identity.user} may not view department {department!r}.",
                    tone="secondary",
                )
            return frozenset([department]), None
        return scope.filter, None

    def gpus(self, scope: Scope, department: str | None) -> GpuResult:
        """The heat map: allocated and used compute per GPU (two figures per GPU)."""
        out = GpuResult()
        departments, problem = self._gpu_departments(scope, department)
        if problem is not None:
            out.problems.append(problem)
            out.heatmap = views.message_figure("Nothing to show")
            return out
        try:
            gpus = self.source.gpus(departments, measures=HEATMAP_MEASURES)
        except SourceError as exc:
            out.problems.append(self.source_problem(exc))
            out.heatmap = views.message_figure(f"{exc.source} is not answering", tone="error")
            return out
        self._degraded(out)
        if not gpus:
            out.problems.append(
                Problem(title="No data yet", detail="No GPU has reported a slice or a reading yet.")
            )
        out.heatmap = views.heatmap_figure(gpus, whole_cards=departments is None)
        return out

    def gpu_table(
        self,
        scope: Scope,
        department: str | None,
        *,
        page_current: object = 0,
        page_size: object = PAGE_ROWS,
        sort_by: object = None,
        filter_query: object = None,
        whole: bool = False,
    ) -> GpuTable:
        """One page of the GPU table (every matching row when ``whole``, for CSV).

        Reads every GPU's figures only for the columns it sorts or filters by, and the
        other figures for the GPUs on the page: the default page of a 3,000-GPU fleet
        reads 1 figure per GPU and 4 per GPU shown, instead of 5 per GPU."""
        out = GpuTable()
        departments, problem = self._gpu_departments(scope, department)
        if problem is not None:
            out.problems.append(problem)
            out.note = NO_ROWS_NOTHING_VISIBLE
            return out
        try:
            view = tables.View.from_table(
                views.GPU_TABLE_FIELDS,
                page_current=page_current,
                page_size=page_size,
                sort_by=sort_by,
                filter_query=filter_query,
            )
        except tables.FilterError as exc:
            out.problems.append(
                Problem(title="Filter not applied", detail=f"{exc}.", tone="warning")
            )
            view = tables.View(size=PAGE_ROWS)
        needed = {
            views.GPU_TABLE_MEASURES[c] for c in view.columns() if c in views.GPU_TABLE_MEASURES
        }
        try:
            gpus = self.source.gpus(departments, measures=None if whole else needed)
            chosen, out.total = view.select(
                views.gpu_table(gpus), views.GPU_TABLE_MEASURES, whole=whole
            )
            picked = [gpus[i] for i in chosen]
            rest = set(GPU_MEASURES) - needed
            if picked and rest and not whole:
                more = self.source.gpus(departments, measures=rest, uuids={g.uuid for g in picked})
                by_key = {(g.hostname, g.uuid): g for g in more}
                picked = [_with(g, by_key.get((g.hostname, g.uuid)), rest) for g in picked]
        except SourceError as exc:
            out.problems.append(self.source_problem(exc))
            out.note = f"No rows: {exc.source} is not answering (see above)."
            return out
        out.rows = views.gpu_table(picked)
        if not out.rows:
            out.note = (
                "No rows: no GPU matches the filter."
                if view.conditions and gpus
                else "No rows: no GPU holds a slice of yours now."
                if departments is not None
                else f"No rows: no GPU has reported yet ({self.source.describe()})."
            )
        out.page_count = view.page_count(out.total)
        shown = "GPU" if out.total == 1 else "GPUs"
        out.caption = (
            f"{out.total:,} {shown} match the filter"
            if view.conditions
            else f"{out.total:,} {shown}"
        )
        return out

    def gpu_slices(self, scope: Scope, department: str | None, selected: str | None) -> GpuSlices:
        """The viewer's slices on the GPU ``selected`` (a heat-map click)."""
        out = GpuSlices(selected=selected or "")
        if not selected:
            out.note = "No rows yet: click a GPU in the heat map to list its slices."
            return out
        departments, problem = self._gpu_departments(scope, department)
        if problem is not None:
            out.problems.append(problem)
            out.note = NO_ROWS_NOTHING_VISIBLE
            return out
        try:
            out.rows = views.slice_table(self.source.slices_on(selected, departments))
        except SourceError as exc:
            out.problems.append(self.source_problem(exc))
            out.note = f"No rows: {exc.source} is not answering (see above)."
            return out
        if not out.rows:
            out.note = (
                f"No rows: no slice is placed on GPU {selected} now."
                if departments is None
                else f"No rows: none of your slices is on GPU {selected} now."
            )
        return out

    # -- CSV ---------------------------------------------------------------------------

    def table(self, scope: Scope, name: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
        """(file name, CSV text) of one table, recomputed for this viewer."""
        rng = params.get("range")
        rows: list[dict[str, Any]]
        if name == "overview-departments":
            rows = self.overview(scope, rng).department_rows
        elif name == "overview-waste":
            rows = self.overview(scope, rng).waste_rows
        elif name.startswith("department-"):
            result = self.department(scope, params.get("department"), rng)
            rows = {
                "department-quota": result.quota_rows,
                "department-waste": result.waste_rows,
                "department-denials": result.denial_rows,
            }.get(name, [])
            name = f"{name}-{result.department}"
        elif name == "gpus":  # every row the table's filter and order select
            rows = self.gpu_table(
                scope,
                params.get("gpu_department"),
                sort_by=params.get("sort_by"),
                filter_query=params.get("filter_query"),
                whole=True,
            ).rows
        elif name == "gpu-slices":
            rows = self.gpu_slices(scope, params.get("gpu_department"), params.get("selected")).rows
        else:
            return None
        return f"gpupool-{name}.csv", to_csv(rows)


def _with(gpu: GpuRow, more: GpuRow | None, measures: set[str]) -> GpuRow:
    """``gpu`` with the figures ``measures`` taken from ``more`` (a later read)."""
    if more is None:
        return gpu
    changes: dict[str, Any] = {}
    for measure in measures:
        for name in views.GPU_ROW_FIELDS[measure]:
            changes[name] = getattr(more, name)
    return dataclasses.replace(gpu, **changes)


IDLE_PCT = round(100 * IDLE_FRACTION)
NO_ROWS_NOTHING_VISIBLE = "No rows: you may view no department here (see above)."


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


def scope_of(scope: Scope, department: str) -> Scope:
    return Scope(identity=scope.identity, departments=(department,), whole_fleet=False)


def _nothing_visible(scope: Scope) -> Problem:
    return Problem(
        title="No department to show",
        detail=(
            f"{scope.identity.user} (groups: {', '.join(scope.identity.groups) or 'none'}) "
            "may view no department. Ask a dept-admin to bind you as viewer of theirs."
        ),
        tone="secondary",
    )


def _empty_overview(out: OverviewResult, message: str, *, tone: str = "muted") -> None:
    out.capacity = views.message_figure(message, tone=tone, height=260)
    out.history = views.message_figure(message, tone=tone)
    out.departments = views.message_figure(message, tone=tone)
    out.admissions = views.message_figure(message, tone=tone, height=260)


def _empty_department(out: DepartmentResult, message: str) -> None:
    out.quota = views.message_figure(message)
    out.history = views.message_figure(message)
    out.sku_mix = views.message_figure(message)


def _resource_word(resource: str) -> str:
    return {"slices": "slices", "memory_mib": "memory", "compute_pct": "compute"}.get(
        resource, resource
    )


def _resource(name: str) -> ResourceName:
    for known in RESOURCE_NAMES:
        if known == name:
            return known
    raise ValueError(f"unknown quota resource {name!r}")


def _quota_row(line: ledger.QuotaLine) -> dict[str, Any]:
    res = _resource(line.resource)
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


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
