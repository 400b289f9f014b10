"""Page logic per viewer: what each page shows, scoping, empty and error states."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dashboard import pages, shared, views
from dashboard.access import AccessError
from dashboard.direct import DirectSource
from dashboard.model import GPU_MEASURES, GpuRow, HistoryPoint, SliceSample, UsageRow
from dashboard.pages import department, gpus, overview
from dashboard.prometheus import PrometheusSource
from dashboard.shared import Console
from dashboard.sources import Departments
from governance.model import Org
from governance.storage.store import Store
from tests.support import dashboard as sup

pytestmark = pytest.mark.unit

VIEWER_DEPT = "vision"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Org, sup.Fleet]]:
    org = sup.make_org(4, 32)
    fleet = sup.make_fleet(org)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'gpupool.db'}")
    sup.seed_ledger(store, org, fleet)
    yield store, org, fleet
    store.close()


@pytest.fixture
def console(world: tuple[Store, Org, sup.Fleet]) -> Console:
    store, org, fleet = world
    return sup.make_console(store, org, sup.direct_source(fleet))


def others(org: Org) -> list[str]:
    return [d for d in org.departments if d != VIEWER_DEPT]


def dump(result: Any) -> str:
    """Everything a page result would send to the browser, as text."""
    parts = []
    for value in vars(result).values():
        parts.append(json.dumps(value, default=str))
    return "\n".join(parts)


def assert_no_other_department(text: str, org: Org) -> None:
    for other in others(org):
        assert f'"{other}"' not in text, other
        assert f"{other}-" not in text, other


# -- who sees what ---------------------------------------------------------------------


def test_platform_admin_sees_the_whole_fleet(console: Console, world: Any) -> None:
    _, org, _ = world
    scope = console.scope(sup.PLATFORM_ADMIN)
    assert scope.whole_fleet and scope.departments == tuple(sorted(org.departments))


def test_dept_admin_sees_only_their_department(console: Console) -> None:
    scope = console.scope(sup.dept_admin(VIEWER_DEPT))
    assert (scope.whole_fleet, scope.departments) == (False, (VIEWER_DEPT,))


def test_a_request_without_proxy_identity_is_refused(console: Console) -> None:
    with pytest.raises(AccessError, match="X-Forwarded-User"):
        console.scope({})


def test_overview_of_a_dept_admin_holds_no_other_department(console: Console, world: Any) -> None:
    _, org, _ = world
    result = overview.result(console, console.scope(sup.dept_admin(VIEWER_DEPT)), "1h")
    assert result.department_rows and {r["department"] for r in result.department_rows} == {
        VIEWER_DEPT
    }
    assert all(r["department"] == VIEWER_DEPT for r in result.waste_rows)
    assert_no_other_department(dump(result), org)
    labels = [k.label for k in result.kpis]
    assert "Pool capacity" not in labels and "Slice utilisation" in labels


def test_overview_of_the_platform_admin_shows_capacity_and_fleet_utilisation(
    console: Console, world: Any
) -> None:
    _, org, fleet = world
    result = overview.result(console, console.scope(sup.PLATFORM_ADMIN), "1h")
    kpis = {k.label: k for k in result.kpis}
    assert kpis["Pool capacity"].value == f"{sum(p.gpus for p in org.pools.values())} GPUs"
    assert kpis["Average GPU utilisation"].note == f"over {len(fleet.gpus)} GPUs"
    idle = sum(1 for s in fleet.slices if s.idle)
    assert kpis["Idle but allocated"].value == f"{idle} slices"
    assert {r["department"] for r in result.department_rows} == set(org.departments)
    assert not result.problems


def test_department_page_shows_quota_borrowing_waste_and_denials(console: Console) -> None:
    result = department.result(console, console.scope(sup.PLATFORM_ADMIN), VIEWER_DEPT, "1h")
    assert not result.problems
    assert {r["queue"] for r in result.quota_rows} == {"", "train", "infer"}
    assert result.denial_rows and all(r["department"] == VIEWER_DEPT for r in result.denial_rows)
    assert {r["reason"] for r in result.denial_rows} >= {"QueueQuotaExceeded"}
    assert all(r["idle"] for r in result.waste_rows)


def test_a_forged_department_is_refused_with_no_data(console: Console, world: Any) -> None:
    _, org, _ = world
    scope = console.scope(sup.dept_admin(VIEWER_DEPT))
    for other in others(org):
        result = department.result(console, scope, other, "1h")
        assert [p.title for p in result.problems] == ["Not permitted"]
        assert not (result.quota_rows or result.waste_rows or result.denial_rows or result.kpis)
        text = dump(result)
        assert f"{other}-" not in text
        heat = gpus.heatmap(console, scope, other)
        table = gpus.table(console, scope, other)
        on_gpu = gpus.slices(console, scope, other, "GPU-any")
        for answer in (heat, table, on_gpu):
            assert [p.title for p in answer.problems] == ["Not permitted"], answer
        assert not table.rows and not on_gpu.rows


def test_gpu_page_of_a_dept_admin_lists_only_their_slices_even_for_a_shared_gpu(
    console: Console, world: Any
) -> None:
    _, org, fleet = world
    scope = console.scope(sup.dept_admin(VIEWER_DEPT))
    mine = {s.uuid for s in fleet.slices if s.department == VIEWER_DEPT}
    other_on_mine = next(
        s.uuid for s in fleet.slices if s.department != VIEWER_DEPT and s.uuid in mine
    )
    table = gpus.table(console, scope, None, page_size=500)
    assert {r["uuid"] for r in table.rows} == mine and table.total == len(mine)
    on_gpu = gpus.slices(console, scope, None, other_on_mine)
    assert on_gpu.rows and {r["department"] for r in on_gpu.rows} == {VIEWER_DEPT}
    for answer in (gpus.heatmap(console, scope, None), table, on_gpu):
        assert_no_other_department(dump(answer), org)


def test_csv_of_a_dept_admin_is_recomputed_for_them(console: Console, world: Any) -> None:
    _, org, _ = world
    scope = console.scope(sup.dept_admin(VIEWER_DEPT))
    name, text = pages.csv(console, scope, "overview-departments", {"range": "1h"}) or ("", "")
    assert name == "gpupool-overview-departments.csv"
    assert text.splitlines()[0].startswith("department,slices")
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == [VIEWER_DEPT]
    forged = pages.csv(console, scope, "department-denials", {"department": others(org)[0]})
    assert forged is not None and forged[1] == ""


class Reads:
    """The direct source, recording what each ``gpus`` call asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[frozenset[str] | None, int | None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def gpus(self, departments: Departments, **kw: Any) -> list[GpuRow]:
        measures, uuids = kw.get("measures"), kw.get("uuids")
        self.calls.append(
            (
                frozenset(measures) if measures is not None else None,
                len(uuids) if uuids is not None else None,
            )
        )
        return list(self.inner.gpus(departments, **kw))


def test_gpu_table_reads_every_gpu_only_for_what_it_sorts_and_filters_by(world: Any) -> None:
    store, org, fleet = world
    reads = Reads(sup.direct_source(fleet))
    console = sup.make_console(store, org, reads)  # type: ignore[arg-type]
    admin = console.scope(sup.PLATFORM_ADMIN)
    full = views.gpu_table(reads.inner.gpus(None))

    page = gpus.table(console, admin, None, page_size=4)
    assert reads.calls == [(frozenset(), None), (frozenset(GPU_MEASURES), 4)]
    assert page.rows == full[:4] and page.total == len(full)

    reads.calls.clear()
    page = gpus.table(
        console,
        admin,
        None,
        page_size=4,
        sort_by=[{"column_id": "memory_used_gib", "direction": "asc"}],
        filter_query="{slices} > 0",
    )
    assert reads.calls == [
        (frozenset({"memory_used", "slices"}), None),
        (frozenset(GPU_MEASURES) - {"memory_used", "slices"}, 4),
    ]
    wanted = sorted((r for r in full if r["slices"] > 0), key=lambda r: r["memory_used_gib"])
    assert page.rows == wanted[:4] and page.total == len(wanted)
    assert page.caption == f"{len(wanted)} GPUs match the filter"

    reads.calls.clear()
    csv = gpus.table(console, admin, None, filter_query="{slices} > 0", whole=True)
    assert reads.calls == [(None, None)] and len(csv.rows) == len(wanted)


# -- empty and error states ------------------------------------------------------------


def test_prometheus_down_is_an_error_state_not_a_traceback(world: Any) -> None:
    store, org, _ = world
    source = PrometheusSource(f"http://127.0.0.1:{sup.free_port()}", timeout_s=1.0)
    console = sup.make_console(store, org, source)
    result = overview.result(console, console.scope(sup.PLATFORM_ADMIN), "1h")
    assert [p.title for p in result.problems] == ["Metrics unavailable"]
    assert "cannot reach Prometheus at" in result.problems[0].detail
    assert "is not answering" in json.dumps(result.history)
    dept = department.result(console, console.scope(sup.PLATFORM_ADMIN), VIEWER_DEPT, "1h")
    assert "Metrics unavailable" in [p.title for p in dept.problems] and dept.quota_rows
    admin = console.scope(sup.PLATFORM_ADMIN)
    for answer in (
        gpus.heatmap(console, admin, None),
        gpus.table(console, admin, None),
        gpus.slices(console, admin, None, "GPU-1"),
    ):
        assert [p.title for p in answer.problems] == ["Metrics unavailable"], answer
    source.close()


class EmptySource:
    scrape_interval_s = 30.0

    def describe(self) -> str:
        return "an empty source"

    def usage(self, departments: Departments, *, per_queue: bool = True) -> list[UsageRow]:
        return []

    def gpus(
        self,
        departments: Departments,
        *,
        measures: Collection[str] | None = None,
        uuids: Collection[str] | None = None,
    ) -> list[GpuRow]:
        return []

    def waste(self, departments: Departments, limit: int) -> list[SliceSample]:
        return []

    def fleet_utilisation(self) -> tuple[int, float | None]:
        return 0, None

    def degraded(self) -> list[str]:
        return []

    def slices_on(self, uuid: str, departments: Departments) -> list[SliceSample]:
        return []

    def history(
        self, departments: Departments, start: datetime, end: datetime, step_s: float
    ) -> list[HistoryPoint]:
        return []


def test_no_data_yet_says_so(world: Any) -> None:
    store, org, _ = world
    console = sup.make_console(store, org, EmptySource())
    result = overview.result(console, console.scope(sup.PLATFORM_ADMIN), "1h")
    assert [p.title for p in result.problems] == ["No data yet"]
    assert "No history yet" in json.dumps(result.history)


def test_no_configuration_yet_says_how_to_apply_one(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    console = sup.make_console(store, None, EmptySource())
    scope = console.scope(sup.PLATFORM_ADMIN)
    result = overview.result(console, scope, "1h")
    titles = [p.title for p in result.problems]
    assert "No configuration yet" in titles and "No department to show" in titles
    assert "gpupool apply" in result.problems[0].detail
    store.close()


# -- refresh and ranges ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "scrape", "ms"),
    [
        pytest.param("0", 30, 0, id="off"),
        pytest.param("15", 30, 30_000, id="clamped-to-scrape"),
        pytest.param("60", 30, 60_000, id="slower-kept"),
        pytest.param("1", 15, 15_000, id="forged-fast"),
        pytest.param("nonsense", 15, 0, id="garbage-off"),
        pytest.param(None, 15, 0, id="none-off"),
    ],
)
def test_auto_refresh_is_never_faster_than_a_scrape(choice: object, scrape: float, ms: int) -> None:
    assert shared.refresh_ms(choice, scrape) == ms


def test_refresh_options_start_at_the_scrape_interval() -> None:
    values = [o["value"] for o in shared.refresh_options(30)]
    assert values == ["0", "30", "60", "300"]
    assert [o["value"] for o in shared.refresh_options(45)] == ["0", "60", "300"]


def test_history_resolution_is_bounded() -> None:
    assert shared.step_for(3600, 15) == 15
    assert shared.step_for(7 * 86400, 15) == 7 * 86400 / shared.MAX_POINTS


def test_an_exporter_down_is_a_partial_data_warning(world: Any) -> None:
    import httpx

    store, org, fleet = world
    text = sup.exposition(fleet.on_hosts(fleet.hostnames[:1]))

    def fetch(url: str) -> str:
        if "down" in url:
            raise httpx.ConnectError("connection refused")
        return text

    source = DirectSource(["http://up:9400", "http://down:9400"], fetch=fetch)
    console = sup.make_console(store, org, source)
    result = overview.result(console, console.scope(sup.PLATFORM_ADMIN), "1h")
    partial = [p for p in result.problems if p.title == "Partial data"]
    assert len(partial) == 1
    assert (
        "1 of 2 exporters" in partial[0].detail and "http://down:9400/metrics" in partial[0].detail
    )
    assert result.department_rows  # the reachable exporter's data is still there
