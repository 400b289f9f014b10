"""Benchmark of the console: an organisation of 100 departments and 3,000 GPUs.

Measures, from the direct source (exporters scraped over loopback HTTP) and from a
real Prometheus (backfilled with promtool):

* first render: headless Chromium opens the overview as a platform admin; the time
  from navigation until every figure is drawn and every table filled. Cold: the first
  visit (nothing cached; mostly the browser parsing Dash's and plotly.js's
  scripts); warm: the median of later visits (scripts cached), the figure the target
  applies to. Each is measured beside the same figure of a trivial Dash app (the
  baseline), visits alternating between the two; a page of the browser's own is
  opened first, so that starting the browser is paid by nobody measured;
* per-callback server latency (p50/p95) of the overview, department and GPU callbacks,
  for a platform admin and for a department admin, through Flask's test client; the
  GPU page has three: the heat map, a page of the GPU table (in its default order, and
  sorted by memory used, which reads that figure of every GPU) and the slices of a
  clicked GPU. Every call is followed by a call of the baseline, a trivial Dash
  callback (returns a string) served the same way, so that each ratio compares two
  figures of the same moments on a noisy, shared machine;
* what a page sends: figure JSON bytes per page and WebGL traces per page.

The history Prometheus holds is 30 points 2 minutes apart (the hour the pages show).
``--quick`` measures the same callbacks, history, renders (cold and warm) and
interleaved baseline on a fleet a tenth the size (10 departments, about 300 GPUs: the
full fleet's history takes about 80 s to generate and backfill) with fewer
repetitions, never fewer than a percentile needs (bench/stats.py); the JSON says how
many samples each figure rests on.

Targets (issue 6): first render <= 1.5 s, callbacks <= 300 ms p95, <= 4 WebGL figures
and <= 1 MB of figure data per page (for the full fleet).

    python bench/dashboard.py [--quick] [--screenshots docs/img]

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dash  # noqa: E402
from dash import Input, Output, html  # noqa: E402

from bench import stats  # noqa: E402
from dashboard.app import create_app  # noqa: E402
from dashboard.direct import DirectSource  # noqa: E402
from dashboard.pages import department, gpus, overview  # noqa: E402
from dashboard.prometheus import PrometheusSource  # noqa: E402
from governance.storage.store import Store  # noqa: E402
from tests.support import dashboard as sup  # noqa: E402

DEPARTMENTS = 100
GPUS = 3000
QUICK_SCALE = 10
"""--quick's fleet: DEPARTMENTS and GPUS divided by this."""
HISTORY_POINTS = 30
HISTORY_STEP_S = 120.0
EXPORTERS = 8
CALLBACK_REPS = {"quick": stats.min_samples(0.95), "full": 40}
WARM_RENDERS = {"quick": 2, "full": 5}

# The outputs of each page callback, as the app declares them.
OVERVIEW = list(overview.Outputs.spec())
DEPARTMENT = list(department.Outputs.spec())
GPUS_PAGE = list(gpus.HeatmapOutputs.spec())
GPU_TABLE = list(gpus.TableOutputs.spec())
GPU_SLICES = list(gpus.SlicesOutputs.spec())


def table_inputs(sort_by: list[dict[str, str]] | None = None) -> list[tuple[str, str, Any]]:
    return [
        ("gpu-department", "value", "*"),
        ("gpu-table", "page_current", 0),
        ("gpu-table", "page_size", 20),
        ("gpu-table", "sort_by", sort_by or []),
        ("gpu-table", "filter_query", ""),
        ("tick", "n_intervals", 0),
    ]


def _ms(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1000


def time_calls(
    call: Callable[[], Any], baseline: Callable[[], Any], reps: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``reps`` calls of ``call``, each followed by one of
    ``baseline``: the two series see the same moments of a noisy machine."""
    call()  # warm
    baseline()
    ours, base = [], []
    for _ in range(reps):
        ours.append(_ms(call))
        base.append(_ms(baseline))
    return ours, base


def baseline_app() -> dash.Dash:
    """A trivial Dash app: one callback filling a div and one small graph."""
    from dash import dcc

    app = dash.Dash(__name__, serve_locally=True)
    app.layout = html.Div(
        [
            html.Div(id="in"),
            html.Div(id="out"),
            dcc.Graph(id="g", figure={"data": [{"type": "bar", "x": [1, 2], "y": [3, 4]}]}),
        ]
    )

    @app.callback(Output("out", "children"), Input("in", "children"))
    def echo(value: Any) -> str:
        return f"got {value}"

    return app


def figure_stats(payload: dict[str, Any]) -> tuple[int, int]:
    """(figure JSON bytes, WebGL traces) in one callback response."""
    size = 0
    webgl = 0
    for props in payload.get("response", {}).values():
        fig = props.get("figure") if isinstance(props, dict) else None
        if fig is None:
            continue
        size += len(json.dumps(fig, separators=(",", ":")))
        webgl += sum(1 for t in fig.get("data", []) if str(t.get("type", "")).endswith("gl"))
    return size, webgl


class Exporter(BaseHTTPRequestHandler):
    text = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.text)))
        self.end_headers()
        self.wfile.write(self.text)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def exporters(fleet: sup.Fleet, n: int) -> Iterator[list[str]]:
    hosts = fleet.hostnames
    servers = []
    for i in range(n):
        part = hosts[i::n]
        text = sup.exposition(fleet.on_hosts(part)).encode()
        handler = type("BenchExporter", (Exporter,), {"text": text})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@contextmanager
def serving(app: dash.Dash) -> Iterator[str]:
    from werkzeug.serving import make_server

    web = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{web.server_port}"
    finally:
        web.shutdown()
        web.server_close()


def chromium() -> Any:
    driver = sup.chromium()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": sup.PLATFORM_ADMIN})
    return driver


READY_JS = """
const graphs = document.querySelectorAll('.js-plotly-plot');
const loading = document.querySelectorAll('[data-dash-is-loading="true"]').length;
const placeholders = [...document.querySelectorAll('.annotation-text')]
    .filter(e => e.textContent === 'Loading…').length;
const rows = Math.min(
    document.querySelectorAll('#ov-department-table td[data-dash-column]').length,
    document.querySelectorAll('#ov-waste-table td[data-dash-column]').length);
const baseline = document.getElementById('out');
if (baseline) { return graphs.length >= 1 && baseline.textContent.startsWith('got'); }
return graphs.length >= 4 && loading === 0 && placeholders === 0 && rows > 0;
"""


def first_render(driver: Any, url: str, path: str = "/", timeout: float = 30.0) -> float:
    driver.get("about:blank")
    t0 = time.perf_counter()
    driver.get(url + path)
    while time.perf_counter() - t0 < timeout:
        if driver.execute_script(READY_JS):
            return time.perf_counter() - t0
        time.sleep(0.02)
    raise RuntimeError(f"{url}{path} did not finish rendering in {timeout}s")


@dataclass(frozen=True, kw_only=True)
class Renders:
    """First renders of one app: the cold visit and the warm ones."""

    cold_s: float
    warm_s: list[float]

    @property
    def warm_median_s(self) -> float:
        return stats.percentile(self.warm_s, 0.5)


def renders(driver: Any, url: str, baseline_url: str, warm: int) -> tuple[Renders, Renders]:
    """First renders of the app at ``url`` and of the baseline at ``baseline_url``,
    visits alternating: each one's first visit (a new origin: nothing of it in the
    browser's HTTP or code cache), a warm-up visit each (Chromium keeps compiled code
    from the second visit on), then ``warm`` rounds of one visit each (scripts cached
    and compiled: the figure a returning user sees)."""
    base_cold = first_render(driver, baseline_url)
    cold = first_render(driver, url)
    first_render(driver, baseline_url)
    first_render(driver, url)
    ours: list[float] = []
    base: list[float] = []
    for _ in range(warm):
        base.append(first_render(driver, baseline_url))
        ours.append(first_render(driver, url))
    return Renders(cold_s=cold, warm_s=ours), Renders(cold_s=base_cold, warm_s=base)


def screenshots(driver: Any, url: str, folder: Path, user: dict[str, str]) -> list[str]:
    from selenium.webdriver.common.by import By

    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    pages = [("/", "overview"), ("/departments", "department"), ("/gpus", "gpus")]
    for path, name in pages:
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": user})
        driver.get(url + path)
        time.sleep(4)
        if name == "gpus":
            cells = driver.find_elements(By.CSS_SELECTOR, "#gpu-heatmap .js-plotly-plot")
            if cells:
                driver.execute_script(
                    "arguments[0].emit('plotly_click', {points: [{customdata: arguments[1]}]});",
                    cells[0],
                    "GPU-a100-001-3",
                )
                time.sleep(2)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1440, min(int(height) + 40, 3200))
        time.sleep(1)
        target = folder / f"{name}.png"
        driver.save_screenshot(str(target))
        saved.append(str(target))
        driver.set_window_size(1440, 1800)
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": sup.PLATFORM_ADMIN})
    return saved


def measure_callbacks(
    app: dash.Dash, reps: int, dept: str, gpu: str, baseline: Callable[[], Any]
) -> dict[str, Any]:
    """p50/p95 of each callback over ``reps`` calls, each call followed by one of
    ``baseline`` (its p95 over the same moments is the callback's own baseline)."""
    client = app.server.test_client()
    busiest_first = [{"column_id": "memory_used_gib", "direction": "desc"}]
    calls = {
        "overview/platform-admin": (
            sup.callback_body(OVERVIEW, [("range", "value", "1h"), ("tick", "n_intervals", 0)]),
            sup.PLATFORM_ADMIN,
        ),
        "overview/dept-admin": (
            sup.callback_body(OVERVIEW, [("range", "value", "1h"), ("tick", "n_intervals", 0)]),
            sup.dept_admin(dept),
        ),
        "department/platform-admin": (
            sup.callback_body(
                DEPARTMENT,
                [
                    ("dept-select", "value", dept),
                    ("range", "value", "1h"),
                    ("tick", "n_intervals", 0),
                ],
            ),
            sup.PLATFORM_ADMIN,
        ),
        "gpus/platform-admin": (
            sup.callback_body(
                GPUS_PAGE,
                [
                    ("gpu-department", "value", "*"),
                    ("tick", "n_intervals", 0),
                ],
            ),
            sup.PLATFORM_ADMIN,
        ),
        "gpu-table/platform-admin": (
            sup.callback_body(GPU_TABLE, table_inputs()),
            sup.PLATFORM_ADMIN,
        ),
        "gpu-table-sorted/platform-admin": (
            sup.callback_body(GPU_TABLE, table_inputs(busiest_first)),
            sup.PLATFORM_ADMIN,
        ),
        "gpu-slices/platform-admin": (
            sup.callback_body(
                GPU_SLICES,
                [
                    ("gpu-selected", "data", gpu),
                    ("gpu-department", "value", "*"),
                    ("tick", "n_intervals", 0),
                ],
            ),
            sup.PLATFORM_ADMIN,
        ),
        "gpus/dept-admin": (
            sup.callback_body(
                GPUS_PAGE,
                [
                    ("gpu-department", "value", "*"),
                    ("tick", "n_intervals", 0),
                ],
            ),
            sup.dept_admin(dept),
        ),
        "gpu-table/dept-admin": (
            sup.callback_body(GPU_TABLE, table_inputs()),
            sup.dept_admin(dept),
        ),
    }
    out: dict[str, Any] = {}
    for name, (payload, headers) in calls.items():
        last: dict[str, Any] = {}

        def call(
            p: dict[str, Any] = payload, h: dict[str, str] = headers, last: dict[str, Any] = last
        ) -> None:
            reply = client.post("/_dash-update-component", json=p, headers=h)
            assert reply.status_code == 200, reply.status_code
            last["json"] = reply.get_json()

        samples, base = time_calls(call, baseline, reps)
        size, webgl = figure_stats(last["json"])
        p95 = stats.percentile(samples, 0.95)
        base_p95 = stats.percentile(base, 0.95)
        out[name] = {
            "p50_ms": round(stats.percentile(samples, 0.5), 1),
            "p95_ms": round(p95, 1),
            "baseline_p95_ms": round(base_p95, 2),
            "ratio_p95": round(p95 / base_p95, 1),
            "samples": len(samples),
            "figure_bytes": size,
            "webgl_traces": webgl,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tenth of the fleet, fewer repetitions; ends within 30 s",
    )
    parser.add_argument(
        "--screenshots", type=Path, help="save page screenshots (Prometheus source) here"
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium render")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    mode = "quick" if args.quick else "full"
    reps = CALLBACK_REPS[mode]
    warm_renders = WARM_RENDERS[mode]
    scale = QUICK_SCALE if args.quick else 1
    t_start = time.perf_counter()
    browser_ok = not args.no_browser and sup.have_chromium()
    prom_missing = sup.prometheus_missing()

    t0 = time.perf_counter()
    org = sup.make_org(DEPARTMENTS // scale, GPUS // scale)
    fleet = sup.make_fleet(org)
    tmp = Path(tempfile.mkdtemp(prefix="gpupool-bench-dashboard-"))
    store = Store(f"sqlite:///{tmp / 'gpupool.db'}")
    allocations = sup.seed_ledger(store, org, fleet, bulk=True, denials_per_department=1)
    dept = sorted(org.departments)[0]
    gpu = fleet.slices[0].uuid  # a GPU with a slice, for the slices callback
    setup_s = time.perf_counter() - t0

    baseline = baseline_app()
    bclient = baseline.server.test_client()
    bpayload = sup.callback_body([("out", "children")], [("in", "children", "x")])

    def baseline_call() -> None:
        assert bclient.post("/_dash-update-component", json=bpayload).status_code == 200

    def load_prometheus() -> tuple[str, Any, float]:
        # As in production, the console reads the series of recording-rules.yaml; they
        # are backfilled with the raw series (computed as the rules compute them; the
        # integration tests check that rules and computation agree), since rules only
        # record from Prometheus's start.
        t0 = time.perf_counter()
        text = sup.openmetrics(
            fleet,
            sup.instants(datetime.now(UTC), HISTORY_POINTS, HISTORY_STEP_S),
            recorded=True,
        )
        url, process = sup.start_prometheus(tmp / "prometheus", text, timeout_s=120)
        return url, process, time.perf_counter() - t0

    # --quick backfills Prometheus while the direct source is measured (to end within
    # 30 s; it costs the direct figures some CPU, and their baseline the same); the
    # full run loads it afterwards.
    loader = ThreadPoolExecutor(max_workers=1)
    prom_future = loader.submit(load_prometheus) if prom_missing is None and args.quick else None
    results: dict[str, Any] = {}
    driver = chromium() if browser_ok else None
    if driver is not None:  # the browser's own first page, paid by nobody measured
        with serving(baseline_app()) as url:
            first_render(driver, url)

    def measure(entry: dict[str, Any], app: dash.Dash) -> None:
        entry["callbacks"] = measure_callbacks(app, reps, dept, gpu, baseline_call)
        if driver is None:
            return
        # A new baseline server for each source: a new origin, so its first visit is
        # cold again, as the console's is.
        with serving(app) as url, serving(baseline_app()) as base_url:
            ours, base = renders(driver, url, base_url, warm_renders)
        entry["first_render_cold_s"] = round(ours.cold_s, 3)
        entry["first_render_s"] = round(ours.warm_median_s, 3)
        entry["baseline_first_render_cold_s"] = round(base.cold_s, 3)
        entry["baseline_first_render_s"] = round(base.warm_median_s, 3)
        entry["warm_renders"] = len(ours.warm_s)

    try:
        with exporters(fleet, EXPORTERS) as urls:
            # One scrape up front; measured requests read it (in production the
            # background scraper refreshes it; its cost is reported as scrape_s).
            source = DirectSource(urls, scrape_interval_s=3600)
            t0 = time.perf_counter()
            source.refresh()
            scrape_s = time.perf_counter() - t0
            console = sup.make_console(store, org, source)
            app = create_app(console)
            console.warm_up()  # as `gpupool dashboard` does before serving
            entry: dict[str, Any] = {"scrape_s": round(scrape_s, 3)}
            measure(entry, app)
            results["direct"] = entry
            source.stop()

        if prom_future is None and prom_missing is None:
            prom_future = loader.submit(load_prometheus)
        if prom_future is not None:
            prom_url, process, load_s = prom_future.result()
            try:
                prom = PrometheusSource(prom_url, scrape_interval_s=30, recording_rules=True)
                console = sup.make_console(store, org, prom)
                app = create_app(console)
                console.warm_up()  # as `gpupool dashboard` does before serving
                entry = {"backfill_s": round(load_s, 3)}
                measure(entry, app)
                if driver is not None and args.screenshots:
                    with serving(app) as url:
                        entry["screenshots"] = screenshots(
                            driver, url, args.screenshots, sup.PLATFORM_ADMIN
                        )
                results["prometheus"] = entry
                prom.close()
            finally:
                sup.stop_prometheus(process)
    finally:
        if driver is not None:
            driver.quit()
        store.close()

    print(
        f"organisation: {len(org.departments)} departments, {len(fleet.gpus)} GPUs, "
        f"{len(fleet.slices)} slices, {allocations} allocations (setup {setup_s:.1f} s); "
        f"history {HISTORY_POINTS} points {HISTORY_STEP_S:g} s apart; {reps} calls of each "
        f"callback, each followed by a call of the baseline (a trivial Dash callback)"
    )
    print(
        f"{'source':<11} {'callback':<32} {'p50 ms':>8} {'p95 ms':>8} {'base p95':>9} "
        f"{'x base':>7} {'fig KB':>7} {'webgl':>5}"
    )
    worst_p95 = 0.0
    worst_ratio = 0.0
    worst_fig = 0
    worst_webgl = 0
    base_p95s: list[float] = []
    for name, entry in results.items():
        for cb, m in entry["callbacks"].items():
            worst_p95 = max(worst_p95, m["p95_ms"])
            worst_ratio = max(worst_ratio, m["ratio_p95"])
            worst_fig = max(worst_fig, m["figure_bytes"])
            worst_webgl = max(worst_webgl, m["webgl_traces"])
            base_p95s.append(m["baseline_p95_ms"])
            print(
                f"{name:<11} {cb:<32} {m['p50_ms']:>8.1f} {m['p95_ms']:>8.1f} "
                f"{m['baseline_p95_ms']:>9.2f} {m['ratio_p95']:>7.1f} "
                f"{m['figure_bytes'] / 1024:>7.0f} {m['webgl_traces']:>5}"
            )
        if "first_render_s" in entry:
            print(
                f"{name:<11} first render (Chromium), median of {entry['warm_renders']} warm: "
                f"{entry['first_render_s']:.3f} s (baseline {entry['baseline_first_render_s']:.3f}"
                f" s); cold {entry['first_render_cold_s']:.3f} s (baseline "
                f"{entry['baseline_first_render_cold_s']:.3f} s)"
            )
    rendered = {k: e for k, e in results.items() if "first_render_s" in e}

    def worst(key: str) -> tuple[float | None, float | None]:
        """The slowest source's figure and its ratio to the baseline beside it."""
        if not rendered:
            return None, None
        slowest = max(rendered.values(), key=lambda e: e[key])
        return slowest[key], round(slowest[key] / slowest[f"baseline_{key}"], 1)

    first_render_s, first_render_ratio = worst("first_render_s")
    cold_s, cold_ratio = worst("first_render_cold_s")
    summary = {
        "bench": "dashboard",
        "quick": args.quick,
        "departments": len(org.departments),
        "gpus": len(fleet.gpus),
        "slices": len(fleet.slices),
        "history_points": HISTORY_POINTS,
        "first_render_s": first_render_s,
        "first_render_s_by_source": {k: e["first_render_s"] for k, e in rendered.items()},
        "first_render_ratio": first_render_ratio,
        "first_render_cold_s": cold_s,
        "first_render_cold_ratio": cold_ratio,
        "callback_p95_ms": worst_p95,
        "baseline_callback_p95_ms": round(max(base_p95s), 2) if base_p95s else None,
        "callback_p95_ratio": worst_ratio,
        "figure_bytes_max_per_page": worst_fig,
        "webgl_figures_max_per_page": worst_webgl,
        "direct_scrape_s": results.get("direct", {}).get("scrape_s"),
        "prometheus_backfill_s": results.get("prometheus", {}).get("backfill_s"),
        "samples": {
            "callback_p95_ms": reps,
            "baseline_callback_p95_ms": reps,
            "first_render_s": warm_renders if rendered else 0,
            "first_render_cold_s": 1 if rendered else 0,
        },
        "skipped": [
            s
            for s, missing in (
                ("browser", not browser_ok),
                ("prometheus", prom_missing is not None),
            )
            if missing
        ],
        "targets": {
            "first_render_s": 1.5,
            "callback_p95_ms": 300,
            "figure_bytes": 1_000_000,
            "webgl": 4,
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
        "detail": results,
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
