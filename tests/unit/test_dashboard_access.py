"""Who the console thinks is looking (the proxy's headers) and what they may see.

Several groups arrive in one header, comma-separated as oauth2-proxy writes them, with
or without spaces and with empty items; a group name may itself hold spaces. A viewer
bound in no department gets an empty scope, never the whole fleet: every source given
that scope answers with nothing, and the Prometheus source without asking Prometheus
(an empty department matcher, ``department=~""``, would match the series that carry no
department at all).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashboard.access import AccessError, ProxyHeaders, Scope, scope_for
from dashboard.app import create_app
from dashboard.direct import DirectSource
from dashboard.pages import overview
from dashboard.prometheus import PrometheusSource
from dashboard.sources import SourceUnavailable
from governance import rbac
from governance.rbac import Identity
from governance.storage.store import Store
from tests.support import dashboard as sup

pytestmark = pytest.mark.unit

ORG = sup.make_org(4, 32)
DEPARTMENTS = sorted(ORG.departments)
MINE, OTHER = DEPARTMENTS[0], DEPARTMENTS[1]
AUTHORIZER = rbac.Policy.compile(ORG.role_bindings)


@pytest.mark.parametrize(
    ("header", "groups"),
    [
        pytest.param("a,b", ("a", "b"), id="two"),
        pytest.param("a, b,c", ("a", "b", "c"), id="spaces-after-commas"),
        pytest.param(" a ,  b  ", ("a", "b"), id="spaces-around"),
        pytest.param("a,,b,", ("a", "b"), id="empty-items"),
        pytest.param(", ,a, ,", ("a",), id="blank-items"),
        pytest.param("ML Team,platform", ("ML Team", "platform"), id="a-name-with-a-space"),
        pytest.param("", (), id="empty-header"),
        pytest.param(" , ", (), id="only-separators"),
    ],
)
def test_groups_are_the_comma_separated_items_of_one_header(
    header: str, groups: tuple[str, ...]
) -> None:
    identity = ProxyHeaders().identify({"X-Forwarded-User": "ana", "X-Forwarded-Groups": header})
    assert identity == Identity(user="ana", groups=groups)


def test_the_groups_separator_and_header_names_are_settings() -> None:
    trust = ProxyHeaders(
        user_header="X-Auth-Request-User",
        groups_header="X-Auth-Request-Groups",
        groups_separator=";",
    )
    identity = trust.identify(
        {"x-auth-request-user": " ana ", "X-AUTH-REQUEST-GROUPS": "a,b; c ;;d"}
    )
    assert identity == Identity(user="ana", groups=("a,b", "c", "d"))


def test_no_user_header_is_refused_whatever_the_groups() -> None:
    with pytest.raises(AccessError, match="X-Forwarded-User"):
        ProxyHeaders().identify({"X-Forwarded-User": "  ", "X-Forwarded-Groups": "platform"})


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"ml-team,{MINE}-admins", id="second-of-two"),
        pytest.param(f"ml-team, {MINE}-admins , ", id="spaces-and-an-empty-item"),
        pytest.param(f"{MINE}-admins,ml-team", id="first-of-two"),
    ],
)
def test_a_group_anywhere_in_the_header_grants_its_department(header: str) -> None:
    identity = ProxyHeaders().identify({"X-Forwarded-User": "lee", "X-Forwarded-Groups": header})
    scope = scope_for(identity, DEPARTMENTS, AUTHORIZER)
    assert scope.departments == (MINE,)
    assert scope.filter == frozenset({MINE})
    assert not scope.whole_fleet


def test_two_department_groups_in_one_header_see_both() -> None:
    identity = ProxyHeaders().identify(
        {"X-Forwarded-User": "lee", "X-Forwarded-Groups": f"{OTHER}-admins, {MINE}-admins"}
    )
    scope = scope_for(identity, DEPARTMENTS, AUTHORIZER)
    assert scope.departments == tuple(sorted((MINE, OTHER)))


def test_the_platform_group_among_others_sees_the_whole_fleet() -> None:
    identity = ProxyHeaders().identify(
        {"X-Forwarded-User": "pat", "X-Forwarded-Groups": "ml-team, platform,"}
    )
    scope = scope_for(identity, DEPARTMENTS, AUTHORIZER)
    assert scope.whole_fleet and scope.filter is None
    assert scope.departments == tuple(DEPARTMENTS)


def test_the_console_reads_every_group_of_the_header(tmp_path: Path) -> None:
    """Through the app: the overview's department table, for a department admin whose
    group comes second in the header after a space, lists their department only."""
    fleet = sup.make_fleet(ORG)
    store = Store(f"sqlite:///{tmp_path / 'gpupool.db'}")
    try:
        sup.seed_ledger(store, ORG, fleet)
        app = create_app(sup.make_console(store, ORG, sup.direct_source(fleet)))
        reply = app.server.test_client().post(
            "/_dash-update-component",
            json=sup.callback_body(
                list(overview.Outputs.spec()),
                [("range", "value", "1h"), ("tick", "n_intervals", 0)],
            ),
            headers={"X-Forwarded-User": "lee", "X-Forwarded-Groups": f"ml-team, {MINE}-admins"},
        )
    finally:
        store.close()
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    rows = reply.get_json()["response"]["ov-department-table"]["data"]
    assert {row["department"] for row in rows} == {MINE}


# -- a viewer bound in no department ---------------------------------------------------


def _nobody() -> Scope:
    identity = ProxyHeaders().identify(
        {"X-Forwarded-User": "eve", "X-Forwarded-Groups": "ml-team, , strangers"}
    )
    return scope_for(identity, DEPARTMENTS, AUTHORIZER)


def test_a_viewer_with_no_department_gets_an_empty_filter_not_the_whole_fleet() -> None:
    scope = _nobody()
    assert scope.departments == ()
    assert not scope.whole_fleet
    assert scope.filter == frozenset()
    assert scope.filter is not None  # None would mean every department
    assert not any(scope.may_view(d) for d in DEPARTMENTS)
    assert scope.describe() == "no department"


def test_the_direct_source_shows_an_empty_filter_nothing() -> None:
    fleet = sup.make_fleet(ORG)
    text = sup.exposition(fleet)
    source = DirectSource(["x"], fetch=lambda _: text)
    empty = _nobody().filter
    assert source.usage(None) and source.gpus(None)  # there is something to show
    assert source.usage(empty) == []
    assert source.usage(empty, per_queue=False) == []
    assert source.gpus(empty) == []
    assert source.waste(empty, 100) == []
    assert source.slices_on(fleet.slices[0].uuid, empty) == []
    now = datetime.now(UTC)
    points = source.history(empty, now - timedelta(hours=1), now, 15)
    assert points, "one point per scrape, even for nobody"
    assert all(
        (p.memory_limit_bytes, p.memory_used_bytes, p.compute_limit_ratio, p.compute_used_ratio)
        == (0.0, 0.0, 0.0, 0.0)
        for p in points
    )


def test_the_prometheus_source_answers_an_empty_filter_without_asking_prometheus() -> None:
    """Nothing listens on the URL: a query would raise SourceUnavailable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = PrometheusSource(f"http://127.0.0.1:{port}", timeout_s=1.0)
    empty = _nobody().filter
    now = datetime.now(UTC)
    try:
        assert source.usage(empty) == []
        assert source.gpus(empty) == []
        assert source.waste(empty, 100) == []
        assert source.slices_on("GPU-1", empty) == []
        assert source.history(empty, now - timedelta(hours=1), now, 60) == []
        with pytest.raises(SourceUnavailable, match=str(port)):
            source.usage(None)  # the whole fleet does ask, and finds nobody there
    finally:
        source.close()
