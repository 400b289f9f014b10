"""The Dash app over HTTP (Flask's test client): layout, callbacks, access control,
forged callback requests, CSV downloads, local assets only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from dashboard import callbacks, components, pages, views
from dashboard.access import DevUser
from dashboard.app import create_app
from dashboard.cli import dashboard as dashboard_command
from dashboard.pages import department, gpus, overview
from governance.model import Org
from governance.storage.store import Store
from tests.support import dashboard as sup

pytestmark = pytest.mark.unit

MINE = "vision"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Org, sup.Fleet]]:
    org = sup.make_org(4, 32)
    fleet = sup.make_fleet(org)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'gpupool.db'}")
    sup.seed_ledger(store, org, fleet)
    yield store, org, fleet
    store.close()


@pytest.fixture(scope="module")
def client(world: tuple[Store, Org, sup.Fleet]) -> Any:
    store, org, fleet = world
    app = create_app(sup.make_console(store, org, sup.direct_source(fleet)))
    return app.server.test_client()


def callback(
    client: Any,
    output: str,
    inputs: list[tuple[str, str, Any]],
    headers: dict[str, str],
    state: list[tuple[Any, str, Any]] | None = None,
    changed: str | None = None,
) -> Any:
    outputs = [
        {"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")
    ]
    body = {
        "output": output,
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": [changed or f"{inputs[0][0]}.{inputs[0][1]}"],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in (state or [])],
    }
    return client.post("/_dash-update-component", json=body, headers=headers)


def spec(outputs: Any) -> str:
    """Dash's name of a multi-output callback: ``..id.prop...id.prop..``."""
    return ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".."


OVERVIEW = spec(overview.Outputs.spec())
DEPARTMENT = spec(department.Outputs.spec())


def no_other(text: str, org: Org) -> None:
    for other in org.departments:
        if other != MINE:
            assert f'"{other}"' not in text and f"{other}-" not in text, other


def test_requests_without_identity_get_401_and_health_is_open(client: Any) -> None:
    assert client.get("/").status_code == 401
    assert client.get("/_dash-layout").status_code == 401
    assert (
        callback(
            client, OVERVIEW, [("range", "value", "1h"), ("tick", "n_intervals", 0)], {}
        ).status_code
        == 401
    )
    assert client.get("/healthz").status_code == 200


def test_index_loads_only_local_assets(client: Any) -> None:
    html = client.get("/", headers=sup.PLATFORM_ADMIN).get_data(as_text=True)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/") for r in refs), refs
    assert "/assets/bootstrap.min.css" in html
    css = client.get("/assets/bootstrap.min.css", headers=sup.PLATFORM_ADMIN)
    try:
        assert css.status_code == 200 and b"Bootstrap" in css.get_data()[:200]
    finally:
        css.close()


def test_layout_has_the_navigation_and_controls(client: Any) -> None:
    layout = json.dumps(client.get("/_dash-layout", headers=sup.PLATFORM_ADMIN).get_json())
    for needle in ('"range"', '"refresh"', '"Overview"', '"Departments"', '"GPUs"', '"page"'):
        assert needle in layout


def test_router_names_the_viewer_and_offers_only_their_departments(client: Any, world: Any) -> None:
    _, org, _ = world
    reply = callback(
        client,
        "..page.children...who.children...rendered.data..",
        [("route", "data", "/departments")],
        sup.dept_admin(MINE),
        state=[("range", "value", "1h")],
    )
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert f"{MINE}-lead" in text and '"options": [{"label": "vision"' in text.replace('":', '": ')
    assert reply.get_json()["response"]["rendered"]["data"] == "/departments"
    no_other(text, org)


def find(node: Any, id_: str) -> dict[str, Any] | None:
    """The props of the component ``id_`` in a layout's JSON."""
    if isinstance(node, list):
        for item in node:
            if (found := find(item, id_)) is not None:
                return found
    elif isinstance(node, dict):
        props = node.get("props", {})
        if props.get("id") == id_:
            return dict(props)
        for value in props.values():
            if isinstance(value, list | dict) and (found := find(value, id_)) is not None:
                return found
    return None


@pytest.mark.parametrize(
    ("path", "filled"),
    [
        pytest.param("/", ("ov-department-table", "data"), id="overview"),
        pytest.param("/departments", ("dept-quota-table", "data"), id="department"),
        pytest.param("/gpus", ("gpu-table", "data"), id="gpus"),
    ],
)
def test_layout_arrives_with_the_viewers_page_filled(
    client: Any, world: Any, path: str, filled: tuple[str, str]
) -> None:
    _, org, _ = world
    headers = {**sup.dept_admin(MINE), "Referer": f"http://console.test{path}"}
    reply = client.get("/_dash-layout", headers=headers)
    layout = reply.get_json()
    assert find(layout, "rendered") == {"id": "rendered", "data": path}
    component = find(layout, filled[0])
    assert component is not None and component[filled[1]], filled
    assert f"{MINE}-lead" in json.dumps(find(layout, "who"))
    no_other(reply.get_data(as_text=True), org)


def props_of(node: Any) -> list[dict[str, Any]]:
    """The props of every component in a layout's JSON."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += props_of(item)
    elif isinstance(node, dict) and "props" in node:
        found.append(node["props"])
        for value in node["props"].values():
            if isinstance(value, list | dict):
                found += props_of(value)
    return found


def components_of(node: Any) -> list[dict[str, Any]]:
    """The props of every component with an id in a layout's JSON."""
    return [props for props in props_of(node) if "id" in props]


@pytest.mark.parametrize("page", pages.PAGES, ids=lambda p: p.path)
def test_every_page_lays_out_what_its_callbacks_and_downloads_name(
    client: Any, page: pages.Page
) -> None:
    """The registry's contract with a page module: each output its callbacks declare
    is a component of its layout with that property filled, and its CSV buttons and
    its download are exactly the tables it declares."""
    headers = {**sup.PLATFORM_ADMIN, "Referer": f"http://console.test{page.path}"}
    laid_out = components_of(client.get("/_dash-layout", headers=headers).get_json())
    by_id = {str(c["id"]): c for c in laid_out if isinstance(c["id"], str)}
    declared = [
        cls
        for cls in vars(page.module).values()
        if isinstance(cls, type) and issubclass(cls, callbacks.Outputs)
    ]
    assert declared, page
    for cls in declared:
        for component, prop in cls.spec():
            assert component in by_id and prop in by_id[component], (cls, component, prop)
            assert component.startswith(page.module.PREFIX + "-"), component
    buttons = {
        c["id"]["table"]
        for c in laid_out
        if isinstance(c["id"], dict)
        and c["id"].get("type") == components.csv_button_type(page.module.PREFIX)
    }
    assert buttons == set(page.module.DOWNLOADS.tables)
    assert components.download_id(page.module.PREFIX) in by_id
    chrome = {"range", "refresh", "tick"}
    for state in page.module.DOWNLOADS.params.values():
        assert state.component_id in by_id or state.component_id in chrome, state


def test_the_navbar_lists_the_registered_pages_and_others_are_404(client: Any) -> None:
    layout = client.get("/_dash-layout", headers=sup.PLATFORM_ADMIN).get_json()
    links = [c for c in props_of(layout) if c.get("active") == "exact"]
    assert [(c["href"], c["children"]) for c in links] == [(p.path, p.title) for p in pages.PAGES]
    assert client.get("/nowhere", headers=sup.PLATFORM_ADMIN).status_code == 404


@pytest.mark.parametrize(
    "referrer",
    [pytest.param(None, id="no-referrer"), pytest.param("http://x/elsewhere", id="unknown-page")],
)
def test_layout_without_a_known_page_leaves_it_to_the_router(
    client: Any, referrer: str | None
) -> None:
    headers = dict(sup.PLATFORM_ADMIN)
    if referrer:
        headers["Referer"] = referrer
    layout = client.get("/_dash-layout", headers=headers).get_json()
    assert find(layout, "rendered") == {"id": "rendered", "data": None}
    assert find(layout, "page")["children"] == []  # type: ignore[index]
    assert find(layout, "ov-kpis") is None


def test_overview_callback_for_a_dept_admin_holds_only_their_data(client: Any, world: Any) -> None:
    _, org, _ = world
    reply = callback(
        client,
        OVERVIEW,
        [("range", "value", "1h"), ("tick", "n_intervals", 0)],
        sup.dept_admin(MINE),
    )
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert f'"{MINE}"' in text
    no_other(text, org)


@pytest.mark.parametrize("forged", ["nlp", "speech", "recsys", "*", ""])
def test_forged_department_in_a_callback_gets_no_data(client: Any, world: Any, forged: str) -> None:
    _, org, _ = world
    reply = callback(
        client,
        DEPARTMENT,
        [("dept-select", "value", forged), ("range", "value", "1h"), ("tick", "n_intervals", 0)],
        sup.dept_admin(MINE),
    )
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    if forged:
        assert "Not permitted" in text
        no_other(text, org)
    else:  # no choice: their own department
        assert f'"{MINE}"' in text
        no_other(text, org)


GPU_HEAT = spec(gpus.HeatmapOutputs.spec())
GPU_TABLE = spec(gpus.TableOutputs.spec())
GPU_SLICES = spec(gpus.SlicesOutputs.spec())


def table_inputs(dept: str, **props: Any) -> list[tuple[str, str, Any]]:
    return [
        ("gpu-department", "value", dept),
        ("gpu-table", "page_current", props.get("page_current", 0)),
        ("gpu-table", "page_size", props.get("page_size", 20)),
        ("gpu-table", "sort_by", props.get("sort_by", [])),
        ("gpu-table", "filter_query", props.get("filter_query", "")),
        ("tick", "n_intervals", 0),
    ]


def test_forged_gpu_filter_gets_no_data(client: Any, world: Any) -> None:
    _, org, fleet = world
    other_gpu = next(s.uuid for s in fleet.slices if s.department != MINE)
    dept_admin = sup.dept_admin(MINE)
    replies = [
        callback(
            client,
            GPU_HEAT,
            [("gpu-department", "value", "nlp"), ("tick", "n_intervals", 0)],
            dept_admin,
        ),
        callback(client, GPU_TABLE, table_inputs("nlp"), dept_admin),
        callback(
            client,
            GPU_SLICES,
            [
                ("gpu-selected", "data", other_gpu),
                ("gpu-department", "value", "nlp"),
                ("tick", "n_intervals", 0),
            ],
            dept_admin,
        ),
    ]
    for reply in replies:
        assert reply.status_code == 200
        assert "Not permitted" in reply.get_data(as_text=True)
        no_other(reply.get_data(as_text=True), org)


def test_another_departments_gpu_lists_none_of_its_slices(client: Any, world: Any) -> None:
    _, org, fleet = world
    other_gpu = next(
        g.uuid
        for g in fleet.gpus
        if all(s.department != MINE for s in fleet.slices if s.uuid == g.uuid)
        and any(s.uuid == g.uuid for s in fleet.slices)
    )
    reply = callback(
        client,
        GPU_SLICES,
        [
            ("gpu-selected", "data", other_gpu),
            ("gpu-department", "value", "*"),
            ("tick", "n_intervals", 0),
        ],
        sup.dept_admin(MINE),
    )
    answer = reply.get_json()["response"]
    assert answer["gpu-slices-table"]["data"] == []
    no_other(reply.get_data(as_text=True), org)


def test_gpu_table_pages_sorts_and_filters_on_the_server(client: Any, world: Any) -> None:
    _, _, fleet = world
    admin = sup.PLATFORM_ADMIN
    first = callback(client, GPU_TABLE, table_inputs("*", page_size=5), admin).get_json()[
        "response"
    ]
    rows = first["gpu-table"]["data"]
    assert len(rows) == 5
    assert first["gpu-table"]["page_count"] == -(-len(fleet.gpus) // 5)
    assert [(r["node"], r["uuid"]) for r in rows] == sorted(
        (g.hostname, g.uuid) for g in fleet.gpus
    )[:5]
    assert all(r["slices"] is not None and "memory_used_gib" in r for r in rows)

    by_used = callback(
        client,
        GPU_TABLE,
        table_inputs(
            "*",
            page_current=1,
            page_size=3,
            sort_by=[{"column_id": "compute_used_pct", "direction": "desc"}],
        ),
        admin,
        changed="gpu-table.page_current",
    ).get_json()["response"]
    everything = views.gpu_table(sup.direct_source(fleet).gpus(None))
    used = sorted((r["compute_used_pct"] for r in everything), reverse=True)
    assert [r["compute_used_pct"] for r in by_used["gpu-table"]["data"]] == used[3:6]
    assert by_used["gpu-table"]["page_current"] == 1

    host = fleet.gpus[0].hostname
    filtered = callback(
        client,
        GPU_TABLE,
        table_inputs(
            "*", page_current=4, filter_query=f"{{node}} scontains {host} && {{slices}} >= 1"
        ),
        admin,
        changed="gpu-table.filter_query",
    ).get_json()["response"]
    want = {
        g.uuid
        for g in fleet.gpus
        if host in g.hostname and any(s.uuid == g.uuid for s in fleet.slices)
    }
    assert {r["uuid"] for r in filtered["gpu-table"]["data"]} == want
    assert filtered["gpu-table"]["page_current"] == 0  # a new filter starts at page 1
    assert f"{len(want)} GPU" in json.dumps(filtered["gpu-table-status"]["children"])


def test_gpu_table_says_when_a_filter_cannot_be_applied(client: Any) -> None:
    reply = callback(
        client,
        GPU_TABLE,
        table_inputs("*", filter_query="{node} contains a || {gpu} = 1"),
        sup.PLATFORM_ADMIN,
    ).get_json()["response"]
    status = json.dumps(reply["gpu-table-status"]["children"])
    assert "Filter not applied" in status and "||" in status
    assert len(reply["gpu-table"]["data"]) == 20  # the unfiltered first page


def test_csv_download_callback_is_scoped_server_side(client: Any, world: Any) -> None:
    _, org, _ = world
    body = {
        "output": "dept-download.data",
        "outputs": {"id": "dept-download", "property": "data"},
        "inputs": [
            [
                {
                    "id": {"table": "department-denials", "type": "csv-dept"},
                    "property": "n_clicks",
                    "value": 1,
                }
            ]
        ],
        "changedPropIds": ['{"table":"department-denials","type":"csv-dept"}.n_clicks'],
        "state": [
            {"id": "range", "property": "value", "value": "1h"},
            {"id": "dept-select", "property": "value", "value": "nlp"},
        ],
    }
    forged = client.post("/_dash-update-component", json=body, headers=sup.dept_admin(MINE))
    assert forged.status_code in (200, 204)
    no_other(forged.get_data(as_text=True), org)
    body["state"][1]["value"] = MINE  # type: ignore[index]
    mine = client.post("/_dash-update-component", json=body, headers=sup.dept_admin(MINE))
    data = mine.get_json()["response"]["dept-download"]["data"]
    assert data["filename"] == f"gpupool-department-denials-{MINE}.csv"
    assert data["content"].startswith("at,department,queue")
    no_other(data["content"], org)


def test_refresh_callback_clamps_to_the_scrape_interval(client: Any) -> None:
    reply = callback(
        client, "..tick.interval...tick.disabled..", [("refresh", "value", "1")], sup.PLATFORM_ADMIN
    )
    response = reply.get_json()["response"]["tick"]
    assert response == {"interval": 15_000, "disabled": False}


def test_dev_user_mode_needs_no_headers(world: Any) -> None:
    store, org, fleet = world
    app = create_app(
        sup.make_console(
            store, org, sup.direct_source(fleet), trust=DevUser(user="pat", groups=("platform",))
        )
    )
    assert app.server.test_client().get("/").status_code == 200


# -- the command -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--exporter", "http://x"], "say whom the console trusts", id="no-trust"),
        pytest.param(
            ["--exporter", "http://x", "--trust-proxy-headers", "--dev-user", "a"],
            "not both",
            id="both-trusts",
        ),
        pytest.param(["--dev-user", "a"], "name a metrics source", id="no-source"),
        pytest.param(
            ["--dev-user", "a", "--prometheus", "http://p", "--exporter", "http://x"],
            "choose one source",
            id="two-sources",
        ),
        pytest.param(
            ["--exporter", "http://x", "--dev-group", "g"],
            "--dev-group needs --dev-user",
            id="group-alone",
        ),
    ],
)
def test_the_command_refuses_to_start_without_clear_settings(args: list[str], message: str) -> None:
    result = CliRunner().invoke(dashboard_command, ["--store", "sqlite://", *args])
    assert result.exit_code == 2
    assert message in result.output


class BrokenSource:
    """A source with a bug: every question raises."""

    scrape_interval_s = 15.0

    def describe(self) -> str:
        return "a broken source"

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug")

        return fail


def test_a_failing_callback_shows_an_error_state_not_a_traceback(world: Any) -> None:
    store, org, _ = world
    app = create_app(sup.make_console(store, org, BrokenSource()))  # type: ignore[arg-type]
    reply = callback(
        app.server.test_client(),
        OVERVIEW,
        [("range", "value", "1h"), ("tick", "n_intervals", 0)],
        sup.PLATFORM_ADMIN,
    )
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert "Something went wrong" in text and "RuntimeError" in text
    assert "Traceback" not in text


def test_every_trace_type_drawn_is_in_the_vendored_plotly_bundle(client: Any, world: Any) -> None:
    """The console serves plotly.js's cartesian bundle (assets/, a third of the full
    bundle's size) instead of the full one: each trace type of each page must be in it."""
    import re

    from dashboard.app import ASSETS

    (bundle,) = ASSETS.glob("plotly-cartesian-*.min.js")
    text = bundle.read_text()
    assert "window.Plotly = Plotly" in text  # dcc.Graph then loads no other plotly.js
    modules = set(re.findall(r'moduleType:"trace",name:"(\w+)"', text))
    drawn: set[str] = set()
    for path in ("/", "/departments", "/gpus"):
        headers = {**sup.PLATFORM_ADMIN, "Referer": f"http://console.test{path}"}
        drawn |= trace_types(client.get("/_dash-layout", headers=headers).get_json())
    assert {"bar", "heatmap", "pie", "scatter"} <= drawn
    assert drawn <= modules, drawn - modules


def trace_types(node: Any) -> set[str]:
    """The trace types of every figure in a layout's JSON."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= trace_types(item)
    elif isinstance(node, dict):
        figure = node.get("figure")
        if isinstance(figure, dict):
            found |= {str(t.get("type", "scatter")) for t in figure.get("data", [])}
        for value in node.values():
            if isinstance(value, list | dict):
                found |= trace_types(value)
    return found
