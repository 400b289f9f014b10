"""The console in real headless Chromium, over real HTTP: exporters served on loopback
and scraped by the direct source, the console behind "proxy" headers that the browser
sends (Chrome DevTools' Network.setExtraHTTPHeaders), a seeded SQLite store.

Set GPUPOOL_SCREENSHOTS=DIR to keep a screenshot of each page there.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard.app import create_app
from dashboard.direct import DirectSource
from dashboard.pages import department
from governance.model import Org
from governance.storage.store import Store
from tests.support import dashboard as sup
from tests.support import waiting

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        not sup.have_chromium(),
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, chromedriver)",
    ),
]

MINE = "vision"
WAIT_S = 20.0


class Exporter(BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Org, sup.Fleet]]:
    from werkzeug.serving import make_server

    org = sup.make_org(6, 64)
    fleet = sup.make_fleet(org)
    hosts = fleet.hostnames
    exporters = []
    for part in (hosts[: len(hosts) // 2], hosts[len(hosts) // 2 :]):
        handler = type("FleetExporter", (Exporter,), {"text": sup.exposition(fleet.on_hosts(part))})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        exporters.append(server)
    source = DirectSource(
        [f"http://127.0.0.1:{s.server_address[1]}" for s in exporters], scrape_interval_s=15
    )
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'gpupool.db'}")
    sup.seed_ledger(store, org, fleet)
    app = create_app(sup.make_console(store, org, source))
    web = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{web.server_port}", org, fleet
    finally:
        web.shutdown()
        web.server_close()
        for s in exporters:
            s.shutdown()
            s.server_close()
        source.stop()
        store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = sup.chromium(console_log=True)
    try:
        yield driver
    finally:
        driver.quit()


def as_user(browser: Any, headers: dict[str, str]) -> None:
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return waiting.wait_for(check, what, timeout)


def text_of(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css))


def grid_cells(browser: Any, grid_id: str, col: str) -> list[str]:
    from selenium.webdriver.common.by import By

    cells = browser.find_elements(By.CSS_SELECTOR, f"#{grid_id} td[data-dash-column='{col}']")
    return [c.text for c in cells]


def page_loaded(browser: Any) -> bool:
    from selenium.webdriver.common.by import By

    loading = browser.find_elements(By.CSS_SELECTOR, "[data-dash-is-loading='true']")
    placeholders = [
        e
        for e in browser.find_elements(By.CSS_SELECTOR, ".annotation-text")
        if e.text == "Loading…"
    ]
    return not loading and not placeholders


def severe_logs(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(browser: Any, name: str) -> None:
    folder = os.environ.get("GPUPOOL_SCREENSHOTS")
    if not folder:
        return
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1440, min(int(height) + 40, 4000))
    time.sleep(0.5)
    browser.save_screenshot(str(Path(folder) / f"{name}.png"))
    browser.set_window_size(1440, 1800)


def test_overview_renders_with_data_for_the_platform_admin(browser: Any, console_url: Any) -> None:
    url, org, _ = console_url
    as_user(browser, sup.PLATFORM_ADMIN)
    browser.get(url + "/")
    wait_for(lambda: "pool capacity" in text_of(browser, "#ov-kpis").lower(), "the KPI cards")
    wait_for(lambda: page_loaded(browser), "every figure")
    kpis = text_of(browser, "#ov-kpis")
    assert f"{sum(p.gpus for p in org.pools.values())} GPUs" in kpis
    assert "idle but allocated" in kpis.lower()
    assert wait_for(
        lambda: grid_cells(browser, "ov-department-table", "department"), "department rows"
    )
    assert set(grid_cells(browser, "ov-department-table", "department")) <= set(org.departments)
    from selenium.webdriver.common.by import By

    assert browser.find_elements(By.CSS_SELECTOR, "#ov-capacity .bars .point")
    assert "pat" in text_of(browser, "#who")
    # The layout arrived with the page drawn: no callback round trip on load.
    requests = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [r for r in requests if "_dash-update-component" in r], requests
    # plotly.js's cartesian bundle from assets/, not Dash's full bundle (3x larger).
    assert [r for r in requests if "/assets/plotly-cartesian-" in r], requests
    assert not [r for r in requests if "plotly.min.js" in r], requests
    # Tables are Dash's DataTable: no AG Grid script (2.2 MB) is fetched at all.
    assert not [r for r in requests if "ag_grid" in r or "async-community" in r], requests
    screenshot(browser, "overview")
    assert severe_logs(browser) == []


def test_department_filter_switches_every_panel(browser: Any, console_url: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, org, _ = console_url
    as_user(browser, sup.PLATFORM_ADMIN)
    browser.get(url + "/departments")
    select = wait_for(lambda: browser.find_element(By.ID, "dept-select"), "the department select")
    names = [o.get_attribute("value") for o in Select(select).options if o.get_attribute("value")]
    assert names == sorted(org.departments)
    for dept in ("nlp", MINE):
        Select(browser.find_element(By.ID, "dept-select")).select_by_value(dept)
        wait_for(
            lambda d=dept: (
                grid_cells(browser, "dept-denials-table", "namespace")
                and set(grid_cells(browser, "dept-denials-table", "namespace")) == {d}
            ),
            f"denials of {dept}",
        )
        wait_for(lambda: page_loaded(browser), "every figure")
        pods = grid_cells(browser, "dept-waste-table", "pod")
        assert all(p.startswith(f"{dept}-") for p in pods), pods
    screenshot(browser, "department")
    assert severe_logs(browser) == []


def test_a_dept_admin_sees_only_their_department(browser: Any, console_url: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, org, _ = console_url
    as_user(browser, sup.dept_admin(MINE))
    browser.get(url + "/departments")
    select = wait_for(lambda: browser.find_element(By.ID, "dept-select"), "the department select")
    assert [
        o.get_attribute("value") for o in Select(select).options if o.get_attribute("value")
    ] == [MINE]
    wait_for(lambda: grid_cells(browser, "dept-denials-table", "namespace"), "denials")
    for path in ("/", "/gpus"):
        browser.get(url + path)
        wait_for(lambda: page_loaded(browser) and text_of(browser, "#page"), f"{path}")
        time.sleep(0.5)
        source = browser.page_source
        for other in org.departments:
            if other != MINE:
                assert f"{other}-" not in source and f">{other}<" not in source, (path, other)
    assert f"{MINE}-lead" in text_of(browser, "#who")
    assert severe_logs(browser) == []


def test_gpu_heat_map_lists_the_slices_of_a_clicked_gpu(browser: Any, console_url: Any) -> None:
    from selenium.webdriver.common.by import By

    url, _, fleet = console_url
    as_user(browser, sup.PLATFORM_ADMIN)
    browser.get(url + "/gpus")
    wait_for(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, "#gpu-heatmap .heatmaplayer image, #gpu-heatmap .hm image"
        ),
        "the heat map",
    )
    wait_for(lambda: grid_cells(browser, "gpu-table", "uuid"), "GPU rows")
    target = fleet.gpus[0].uuid
    browser.execute_script(
        """
        const gd = document.querySelector('#gpu-heatmap .js-plotly-plot');
        gd.emit('plotly_click', {points: [{customdata: arguments[0], curveNumber: 0,
                                           pointNumber: [0, 0], x: 'GPU 0', y: arguments[1]}]});
        """,
        target,
        fleet.gpus[0].hostname,
    )
    wait_for(lambda: target in text_of(browser, "#gpu-slices-title"), "the selected GPU")
    expected = sorted(s.pod for s in fleet.slices if s.uuid == target)
    wait_for(
        lambda: sorted(grid_cells(browser, "gpu-slices-table", "pod")) == expected, "its slices"
    )
    screenshot(browser, "gpus")
    assert severe_logs(browser) == []


def test_gpu_table_pages_and_filters_through_the_server(browser: Any, console_url: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _, fleet = console_url
    as_user(browser, sup.PLATFORM_ADMIN)
    browser.get(url + "/gpus")
    ordered = sorted((g.hostname, g.uuid) for g in fleet.gpus)
    first = [u for _, u in ordered[:20]]
    wait_for(lambda: grid_cells(browser, "gpu-table", "uuid") == first, "the first page")
    assert f"{len(fleet.gpus)} GPUs" in text_of(browser, "#gpu-table-status")

    browser.find_element(By.CSS_SELECTOR, "#gpu-table button.next-page").click()
    second = [u for _, u in ordered[20:40]]
    wait_for(lambda: grid_cells(browser, "gpu-table", "uuid") == second, "the second page")

    host = ordered[-1][0]
    box = browser.find_element(
        By.CSS_SELECTOR, "#gpu-table th.dash-filter[data-dash-column='node'] input"
    )
    box.send_keys(host + Keys.ENTER)
    on_host = [u for h, u in ordered if h == host]
    wait_for(lambda: grid_cells(browser, "gpu-table", "uuid") == on_host, "the filtered rows")
    assert f"{len(on_host)} GPUs match the filter" in text_of(browser, "#gpu-table-status")
    assert severe_logs(browser) == []


def test_forged_callback_over_http_gets_no_other_department(console_url: Any) -> None:
    url, _, _ = console_url
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in department.Outputs.spec()) + "..",
        "outputs": [{"id": i, "property": p} for i, p in department.Outputs.spec()],
        "inputs": [
            {"id": "dept-select", "property": "value", "value": "nlp"},
            {"id": "range", "property": "value", "value": "1h"},
            {"id": "tick", "property": "n_intervals", "value": 0},
        ],
        "changedPropIds": ["dept-select.value"],
        "state": [],
    }
    reply = httpx.post(f"{url}/_dash-update-component", json=body, headers=sup.dept_admin(MINE))
    assert reply.status_code == 200
    assert "Not permitted" in reply.text and "nlp-" not in reply.text
    anonymous = httpx.post(f"{url}/_dash-update-component", json=body)
    assert anonymous.status_code == 401


def test_every_page_works_under_the_content_security_policy(browser: Any, console_url: Any) -> None:
    """The policy is sent, and Dash, Plotly and DataTable run under it: no violation
    reported by Chromium on any page, and each page draws its figures and tables."""
    url, _, _ = console_url
    sent = httpx.get(f"{url}/", headers=sup.PLATFORM_ADMIN)
    assert "script-src 'self' 'sha256-" in sent.headers["Content-Security-Policy"]
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__csp = []; document.addEventListener("
            "'securitypolicyviolation', e => window.__csp.push("
            "e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    as_user(browser, sup.PLATFORM_ADMIN)
    for path, drawn in (
        ("/", "#ov-capacity .main-svg"),
        ("/departments", "#dept-quota .main-svg"),
        ("/gpus", "#gpu-heatmap .main-svg"),
    ):
        browser.get(f"{url}{path}")
        wait_for(lambda: page_loaded(browser) and text_of(browser, "#who"), f"{path} loaded")
        wait_for(lambda d=drawn: browser.find_elements("css selector", d), f"{path} drawn")
        assert browser.execute_script("return window.__csp") == [], path
    assert severe_logs(browser) == []
