"""The Dash application: the console's frame, routing and HTTP edge.

The pages themselves are :mod:`dashboard.pages`, one module each, registered in one
table (:data:`dashboard.pages.PAGES`) that the navbar, the router, the paths served
and the CSV downloads read here. Each page callback reads the viewer from the request
headers (:meth:`dashboard.shared.Console.scope`) and computes its page for that viewer
only. Authorisation happens on the server for every callback: the department dropdown
only offers visible departments, but a forged request to ``/_dash-update-component``
naming another department gets "Not permitted" and no data. Requests without a
trusted identity get HTTP 401 before Dash sees them: proxy headers count only from a
trusted proxy's address (:mod:`dashboard.access`).

Every answer carries X-Frame-Options, X-Content-Type-Options and a
Content-Security-Policy (:func:`security_headers`) that Dash works under: scripts only
from the console and the hashes of Dash's own inline scripts, no framing. A path that
is no page of the console (``/metrics``, ``/wp-admin``) is 404, not the page's HTML.

Every asset is served by the console itself (``serve_locally``; Bootstrap's CSS is
vendored in ``assets/``): clusters often have no internet egress. So is plotly.js's
*cartesian* bundle (npm ``plotly.js-cartesian-dist-min``, the version that the
installed plotly package bundles; bar, pie, scatter and heatmap are all the console
draws): it defines ``window.Plotly``, so ``dcc.Graph`` never loads Dash's full bundle,
three times its size and most of a first render's script time.

A page arrives filled: the layout served to ``/_dash-layout`` holds the page of the
request's Referer already drawn for the viewer, so the first render costs no callback
round trip; page callbacks fire only when an input changes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dash
import dash_bootstrap_components as dbc
import flask
from dash import ALL, Input, Output, State, dcc, html

from dashboard import callbacks, components, pages
from dashboard.access import AccessError
from dashboard.shared import DEFAULT_RANGE, RANGES, Console, refresh_ms, refresh_options
from dashboard.sources import SourceError
from governance.errors import StoreError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("assets")
TITLE = "gpupool console"


def navbar(console: Console, who: Any = "") -> Any:
    refresh = refresh_options(console.source.scrape_interval_s)
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand(
                    [
                        html.Span("gpupool", className="fw-bold"),
                        html.Span(" console", className="fw-light"),
                    ],
                    href="/",
                ),
                dbc.Nav(
                    [
                        dbc.NavItem(dbc.NavLink(p.title, href=p.path, active="exact"))
                        for p in pages.PAGES
                    ],
                    navbar=True,
                    className="me-auto",
                ),
                html.Div(
                    [
                        dbc.Select(
                            id="range",
                            options=[
                                {"label": label, "value": key} for key, (label, _) in RANGES.items()
                            ],
                            value=DEFAULT_RANGE,
                            size="sm",
                            className="me-2",
                            style={"width": "10rem"},
                        ),
                        dbc.Select(
                            id="refresh",
                            options=refresh,
                            value=default_refresh(console),
                            size="sm",
                            className="me-3",
                            style={"width": "10rem"},
                        ),
                        html.Span(who, id="who", className="text-light small"),
                    ],
                    className="d-flex align-items-center",
                ),
            ],
            fluid=True,
        ),
        color="dark",
        dark=True,
        className="mb-3 shadow-sm",
    )


def default_refresh(console: Console) -> str:
    refresh = refresh_options(console.source.scrape_interval_s)
    return next((o["value"] for o in refresh if o["value"] != "0"), "0")


def page_path(referrer: str | None) -> str | None:
    """The page a ``/_dash-layout`` request is for: the path of the page that asks
    (its Referer), if it is one of ours; None when unknown (then the router draws the
    page after load, one round trip later)."""
    if not referrer:
        return None
    path = urlsplit(referrer).path or "/"
    return path if path in pages.PATHS else None


DASH_PREFIXES = ("/_dash-", "/_reload-hash", "/_favicon.ico", "/assets/")
"""Paths Dash serves itself (its callbacks, component bundles, assets)."""
MAX_BODY_BYTES = 2 * 1024 * 1024
"""A callback's request carries inputs and state, never table data: a few KiB."""


def serves(path: str) -> bool:
    """Whether ``path`` is a page of the console, Dash's or the health check."""
    return path in pages.PATHS or path == "/healthz" or path.startswith(DASH_PREFIXES)


_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S)


def inline_script_hashes(page: str) -> list[str]:
    """CSP hashes of a page's inline scripts, as the page was rendered: Dash's
    renderer start-up, its browser check and the clientside callbacks
    (``Dash.csp_hashes`` misses the browser check)."""
    return sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in _INLINE_SCRIPT.findall(page)
            if body.strip()
        }
    )


def security_headers(script_hashes: list[str]) -> dict[str, str]:
    """The headers every answer carries. Scripts: the console's own files and Dash's
    inline scripts by hash (its renderer start-up and the clientside router), nothing
    inline otherwise. Styles: Plotly and DataTable write ``<style>`` elements at run
    time, hence 'unsafe-inline' for styles only. Images: Plotly's and Bootstrap's
    ``data:`` icons. Checked in headless Chromium (tests/integration)."""
    policy = "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *script_hashes]),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


ROUTE_IF_NOT_RENDERED = """
function (pathname, rendered) {
    // The layout arrived with this page drawn: nothing to fetch.
    return pathname === rendered ? window.dash_clientside.no_update : pathname;
}
"""


def render(console: Console, pathname: str | None, range_key: str | None) -> tuple[Any, Any]:
    """(the page at ``pathname``, filled for the viewer; the viewer's name)."""
    try:
        scope = callbacks.viewer(console)
    except StoreError as exc:
        return components.problem_alerts([console.store_problem(exc)]), ""
    who = [
        html.Span(scope.identity.user, className="fw-semibold"),
        html.Span(f" · {scope.describe()}", className="text-white-50"),
    ]
    found = pages.at(pathname)
    if found is None:
        return dbc.Alert(f"No page at {pathname}.", color="secondary"), who
    return found.module.page(console, scope, range_key), who


def guard(server: flask.Flask, console: Console) -> None:
    """What every HTTP answer passes: 404 for what is no page, 401 without a trusted
    identity (but for the health check), the security headers on everything."""
    server.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @server.before_request
    def require_identity() -> Any:
        path = flask.request.path
        if not serves(path):
            return flask.Response(
                f"404 Not Found: {path} is no page of the gpupool console (it exports no "
                "metrics: the exporters and the webhook do)\n",
                status=404,
                mimetype="text/plain",
            )
        if path == "/healthz":
            return None
        try:
            console.trust.identify(dict(flask.request.headers), peer=flask.request.remote_addr)
        except AccessError as exc:
            return flask.Response(f"401 Unauthorized: {exc}\n", status=401, mimetype="text/plain")
        return None

    @server.after_request
    def secure(response: flask.Response) -> flask.Response:
        hashes: list[str] = []
        if response.mimetype == "text/html" and not response.direct_passthrough:
            hashes = inline_script_hashes(response.get_data(as_text=True))
        response.headers.update(security_headers(hashes))
        return response

    @server.route("/healthz")
    def healthz() -> Any:
        return flask.Response("ok\n", mimetype="text/plain")


def register_downloads(app: dash.Dash, console: Console, page: pages.Page) -> None:
    """The page's CSV download: a click on one of its buttons sends that table,
    recomputed on the server for the viewer from the page's inputs."""
    prefix, downloads = page.module.PREFIX, page.module.DOWNLOADS
    names = list(downloads.params)

    @app.callback(
        Output(components.download_id(prefix), "data"),
        Input({"type": components.csv_button_type(prefix), "table": ALL}, "n_clicks"),
        *downloads.params.values(),
        prevent_initial_call=True,
    )
    def send_table(_clicks: list[int | None], *state: Any) -> Any:
        trigger = dash.ctx.triggered_id
        if not isinstance(trigger, dict) or not dash.ctx.triggered:
            return dash.no_update
        if not dash.ctx.triggered[0].get("value"):
            return dash.no_update  # a button appeared (n_clicks 0), nobody clicked
        params = dict(zip(names, state, strict=True))
        try:
            found = pages.csv(
                console, callbacks.viewer(console), str(trigger.get("table", "")), params
            )
        except (SourceError, StoreError) as exc:
            log.warning("CSV download of %s failed: %s", trigger, exc)
            return dash.no_update
        if found is None:
            return dash.no_update
        filename, text = found
        return {"content": text, "filename": filename, "type": "text/csv", "base64": False}


def create_app(console: Console, *, debug: bool = False) -> dash.Dash:
    """The console as a Dash app (``app.server`` is the Flask WSGI app)."""
    app = dash.Dash(
        __name__,
        title=TITLE,
        assets_folder=str(ASSETS),
        serve_locally=True,
        external_stylesheets=[],
        external_scripts=[],
        suppress_callback_exceptions=True,
        update_title="",
    )
    guard(app.server, console)

    def layout() -> Any:
        # Dash also calls this outside a layout request (to validate it): only a
        # /_dash-layout request, with its viewer, gets a page drawn.
        path = None
        page: Any = []
        who: Any = ""
        if flask.has_request_context() and flask.request.path.endswith("/_dash-layout"):
            path = page_path(flask.request.referrer)
            if path is not None:
                page, who = render(console, path, DEFAULT_RANGE)
        ms = refresh_ms(default_refresh(console), console.source.scrape_interval_s)
        return html.Div(
            [
                dcc.Location(id="url"),
                dcc.Store(id="rendered", data=path),
                dcc.Store(id="route"),
                dcc.Interval(id="tick", interval=ms or 60_000, disabled=ms == 0),
                navbar(console, who),
                dbc.Container(page, id="page", fluid=True, className="pb-4"),
            ]
        )

    app.layout = layout

    app.clientside_callback(  # type: ignore[no-untyped-call]
        ROUTE_IF_NOT_RENDERED,
        Output("route", "data"),
        Input("url", "pathname"),
        State("rendered", "data"),
    )

    @app.callback(
        Output("page", "children"),
        Output("who", "children"),
        Output("rendered", "data"),
        Input("route", "data"),
        State("range", "value"),
        prevent_initial_call=True,
    )
    def route(pathname: str | None, range_key: str | None) -> tuple[Any, Any, Any]:
        page, who = render(console, pathname, range_key)
        return page, who, pathname

    @app.callback(
        Output("tick", "interval"),
        Output("tick", "disabled"),
        Input("refresh", "value"),
        prevent_initial_call=True,  # the layout starts with the default period
    )
    def set_refresh(choice: str | None) -> tuple[int, bool]:
        ms = refresh_ms(choice, console.source.scrape_interval_s)
        return (ms or 60_000), ms == 0

    for page in pages.PAGES:
        page.module.register(app, console)
        register_downloads(app, console, page)

    if debug:
        app.enable_dev_tools(debug=True)
    return app
