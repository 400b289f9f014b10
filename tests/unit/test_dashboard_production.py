"""The console as production needs it: whom it believes, what every answer carries,
GPUs named and ordered as they are on their nodes, empty tables and stray tenants
explained."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from dashboard import views
from dashboard.access import ProxyHeaders, parse_networks, scope_for
from dashboard.app import create_app
from dashboard.model import GpuRow
from dashboard.pages import department, gpus, overview
from dashboard.shared import Console
from governance import rbac
from governance.model import Org
from governance.rbac import Identity
from governance.storage.store import Store
from tests.support import dashboard as sup

pytestmark = pytest.mark.unit

MINE = "vision"


def shuffled_uuids(fleet: sup.Fleet) -> sup.Fleet:
    """The fleet with UUIDs that do not sort in index order, as real ones do not."""
    new = {g.uuid: "GPU-" + hashlib.sha1(g.uuid.encode()).hexdigest()[:16] for g in fleet.gpus}
    return sup.Fleet(
        gpus=tuple(replace(g, uuid=new[g.uuid]) for g in fleet.gpus),
        slices=tuple(replace(s, uuid=new[s.uuid]) for s in fleet.slices),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Org, sup.Fleet]]:
    org = sup.make_org(4, 32)
    fleet = shuffled_uuids(sup.make_fleet(org))
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'gpupool.db'}")
    yield store, org, fleet
    store.close()


def console_of(world: tuple[Store, Org, sup.Fleet], **kwargs: Any) -> Console:
    store, org, fleet = world
    return sup.make_console(store, org, sup.direct_source(kwargs.pop("fleet", fleet)), **kwargs)


def scope_of(console: Console, headers: dict[str, str]) -> Any:
    return console.scope(headers)


# -- whom the console believes ---------------------------------------------------------


def test_identity_headers_count_only_from_a_trusted_proxy(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    client = create_app(console_of(world)).server.test_client()
    spoofed = client.get("/", headers=sup.PLATFORM_ADMIN, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert spoofed.status_code == 401
    assert "10.9.8.7 is not a trusted proxy" in spoofed.get_data(as_text=True)
    forged_callback = client.post(
        "/_dash-update-component",
        json={"output": "x.children", "inputs": [], "changedPropIds": []},
        headers=sup.PLATFORM_ADMIN,
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    )
    assert forged_callback.status_code == 401
    local = client.get("/", headers=sup.PLATFORM_ADMIN, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert local.status_code == 200
    v6 = client.get("/", headers=sup.PLATFORM_ADMIN, environ_base={"REMOTE_ADDR": "::1"})
    assert v6.status_code == 200


def test_a_configured_proxy_network_replaces_loopback(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    trust = ProxyHeaders(trusted_proxies=parse_networks(["10.0.0.0/8", "192.0.2.7"]))
    client = create_app(console_of(world, trust=trust)).server.test_client()

    def status(peer: str) -> int:
        reply = client.get("/", headers=sup.PLATFORM_ADMIN, environ_base={"REMOTE_ADDR": peer})
        return int(reply.status_code)

    assert [status(p) for p in ("10.1.2.3", "192.0.2.7", "192.0.2.8", "127.0.0.1")] == [
        200,
        200,
        401,
        401,
    ]
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8' is not an address or CIDR"):
        parse_networks(["10.0.0.300/8"])


# -- what every answer carries ---------------------------------------------------------


def test_metrics_and_other_unknown_paths_are_404_not_the_page(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    client = create_app(console_of(world)).server.test_client()
    for path in ("/metrics", "/wp-admin", "/departments/x"):
        reply = client.get(path, headers=sup.PLATFORM_ADMIN)
        assert reply.status_code == 404, path
        assert "<html" not in reply.get_data(as_text=True).lower()
    for path in ("/", "/departments", "/gpus"):
        assert client.get(path, headers=sup.PLATFORM_ADMIN).status_code == 200, path


def test_every_answer_carries_the_security_headers_and_the_inline_scripts_hashes(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    client = create_app(console_of(world)).server.test_client()
    index = client.get("/", headers=sup.PLATFORM_ADMIN)
    answers = [
        index,
        client.get("/_dash-layout", headers=sup.PLATFORM_ADMIN),
        client.get("/assets/bootstrap.min.css", headers=sup.PLATFORM_ADMIN),
        client.get("/"),  # 401
        client.get("/metrics"),  # 404
        client.get("/healthz"),
    ]
    for reply in answers:
        reply.close()
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        policy = reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
        assert "'unsafe-eval'" not in policy
    script_src = next(
        d
        for d in index.headers["Content-Security-Policy"].split("; ")
        if d.startswith("script-src")
    )
    assert "'unsafe-inline'" not in script_src
    html = index.get_data(as_text=True)
    inline = re.findall(
        r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>(.*?)</script>", html, re.S
    )
    assert inline, "Dash's renderer starts from an inline script"
    for script in (s for s in inline if s.strip()):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src, script[:60]


def test_a_callback_body_above_the_limit_is_refused(world: tuple[Store, Org, sup.Fleet]) -> None:
    client = create_app(console_of(world)).server.test_client()
    reply = client.post(
        "/_dash-update-component",
        data=b"x" * (3 * 1024 * 1024),
        headers={**sup.PLATFORM_ADMIN, "Content-Type": "application/json"},
    )
    assert reply.status_code == 413


# -- GPUs as they are on their nodes ---------------------------------------------------


def gpu(host: str, index: str, uuid: str, limit: float = 0.5) -> GpuRow:
    return GpuRow(
        hostname=host,
        gpu=index,
        uuid=uuid,
        model="NVIDIA A100-SXM4-80GB",
        memory_limit_bytes=0.0,
        compute_limit_ratio=limit,
        memory_used_bytes=0.0,
        compute_used_ratio=0.0,
        slices=1,
    )


def test_heat_map_columns_are_the_gpus_indexes_on_their_nodes() -> None:
    figure = views.heatmap_figure(
        [gpu("n1", "2", "GPU-z", 0.25), gpu("n1", "10", "GPU-a", 0.5), gpu("n2", "5", "GPU-m", 1)],
        whole_cards=False,
    )
    trace = figure["data"][0]
    assert trace["x"] == ["GPU 2", "GPU 5", "GPU 10"]
    assert trace["y"] == ["n1", "n2"]
    assert trace["z"] == [[25.0, None, 50.0], [None, 100.0, None]]
    assert trace["customdata"] == [["GPU-z", "", "GPU-a"], ["", "GPU-m", ""]]


def test_a_dept_admin_sees_index_and_model_of_their_gpus_sorted_by_node_then_index(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    _, _, fleet = world
    console = console_of(world)
    scope = console.scope(sup.dept_admin(MINE))
    assert not scope.whole_fleet
    table = gpus.table(console, scope, "*", page_size=500)
    mine = {s.uuid for s in fleet.slices if s.department == MINE}
    by_uuid = {g.uuid: g for g in fleet.gpus}
    assert {r["uuid"] for r in table.rows} == mine
    for row in table.rows:
        card = by_uuid[row["uuid"]]
        assert (row["gpu"], row["model"]) == (str(card.index), card.model)
    order = [(r["node"], int(r["gpu"])) for r in table.rows]
    assert order == sorted(order)
    assert [r["uuid"] for r in table.rows] != sorted(r["uuid"] for r in table.rows)
    heat = gpus.heatmap(console, scope, "*").heatmap
    assert heat is not None
    indexes = {str(by_uuid[u].index) for u in mine}
    assert set(heat["data"][0]["x"]) == {f"GPU {i}" for i in indexes}
    admin = gpus.table(console, console.scope(sup.PLATFORM_ADMIN), "*", page_size=500)
    whole = [(r["node"], int(r["gpu"])) for r in admin.rows]
    assert whole == sorted(whole) and len(whole) == len(fleet.gpus)


# -- empty tables, default department, stray tenants ------------------------------------


def test_empty_tables_say_that_they_are_empty_and_why(world: tuple[Store, Org, sup.Fleet]) -> None:
    fleet = world[2]
    busy = sup.Fleet(
        gpus=fleet.gpus,
        slices=tuple(
            replace(s, compute_used_ratio=s.compute_limit_ratio or 0.0) for s in fleet.slices
        ),
    )
    console = console_of(world, fleet=busy)
    admin = console.scope(sup.PLATFORM_ADMIN)
    ov = overview.result(console, admin, "1h")
    assert ov.department_rows and not ov.waste_rows
    assert "no slice is idle" in ov.notes["waste_rows"]
    assert "department_rows" not in ov.notes
    dept = department.result(console, admin, MINE, "1h")
    assert not dept.denial_rows
    assert f"no GPU pod of {MINE} has been denied" in dept.notes["denial_rows"]
    assert "click a GPU" in gpus.slices(console, admin, "*", "").note
    unknown = gpus.slices(console, admin, "*", "GPU-nowhere")
    assert not unknown.rows and "no slice is placed on GPU GPU-nowhere" in unknown.note
    client = create_app(console).server.test_client()
    layout = client.get(
        "/_dash-layout", headers={**sup.PLATFORM_ADMIN, "Referer": "http://console/"}
    ).get_data(as_text=True)
    assert "No rows: no slice is idle" in layout


def test_the_departments_page_opens_on_a_department_with_data(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    _, org, fleet = world
    first = sorted(org.departments)[0]
    without_first = sup.Fleet(
        gpus=fleet.gpus, slices=tuple(s for s in fleet.slices if s.department != first)
    )
    console = console_of(world, fleet=without_first)
    admin = console.scope(sup.PLATFORM_ADMIN)
    chosen = department.default_department(console, admin)
    assert chosen is not None and chosen != first
    assert any(s.department == chosen for s in without_first.slices)
    client = create_app(console).server.test_client()
    layout = client.get(
        "/_dash-layout", headers={**sup.PLATFORM_ADMIN, "Referer": "http://console/departments"}
    ).get_data(as_text=True)
    assert f'"value":"{chosen}"' in layout.replace(" ", "")


def test_metrics_of_tenants_the_organisation_lacks_are_flagged(
    world: tuple[Store, Org, sup.Fleet],
) -> None:
    fleet = world[2]
    stray = [
        replace(fleet.slices[0], department="ghost", namespace="ghost", pod="ghost-1"),
        replace(fleet.slices[1], department=MINE, queue="nightly", pod="nightly-1"),
        replace(fleet.slices[2], department=MINE, sku="h100-8x", pod="big-1"),
    ]
    console = console_of(world, fleet=sup.Fleet(gpus=fleet.gpus, slices=(*fleet.slices, *stray)))
    admin = console.scope(sup.PLATFORM_ADMIN)
    flagged = [
        p for p in overview.result(console, admin, "1h").problems if "does not declare" in p.title
    ]
    assert len(flagged) == 1 and "department 'ghost' (1 slice)" in flagged[0].detail
    page = department.result(console, admin, MINE, "1h")
    detail = " ".join(p.detail for p in page.problems if "does not declare" in p.title)
    assert f"queue '{MINE}/nightly' (1 slice)" in detail and "SKU 'h100-8x' (1 slice)" in detail
    clean = console_of(world)
    assert not [
        p for p in overview.result(clean, admin, "1h").problems if "does not declare" in p.title
    ]


def test_scope_for_still_answers_as_before() -> None:
    """Helper "meas" tests these APIs: the trust change keeps them callable as before."""
    org = sup.make_org(2, 16)
    authorizer = rbac.Policy.compile(org.role_bindings)
    identity = ProxyHeaders().identify(sup.dept_admin(sorted(org.departments)[0]))
    scope = scope_for(identity, org.departments, authorizer)
    assert scope.filter == frozenset([sorted(org.departments)[0]])
    assert isinstance(identity, Identity)
