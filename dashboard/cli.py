"""``gpupool dashboard``: start the console.

::

    gpupool dashboard --store URL (--prometheus URL | --exporter URL ...)
                      [--port 8050] (--trust-proxy-headers | --dev-user NAME [--dev-group G])

The console refuses to start without an explicit trust setting: either it sits behind
an authenticating proxy whose identity headers it trusts, or it is a local trial where
every request is one named user.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import click

from dashboard.access import (
    DEFAULT_GROUPS_HEADER,
    DEFAULT_USER_HEADER,
    DevUser,
    ProxyHeaders,
    Trust,
)
from dashboard.sources import Source
from governance import config, contract, rbac
from governance.model import Org
from governance.store import Store

log = logging.getLogger(__name__)


class Governance:
    """The organisation and the authorizer in force, re-read when a new configuration
    revision is applied (``gpupool apply``) without restarting the console."""

    def __init__(self, store: Store, *, refresh_s: float = 5.0) -> None:
        self.store = store
        self._orgs = config.OrgSource(store, refresh_s=refresh_s)
        self._lock = threading.Lock()
        self._authorizer = rbac.Authorizer.from_store(store)
        self._revision = -1

    def org(self) -> Org | None:
        if self.store.latest_revision() == 0:
            return None
        org = self._orgs.get()
        with self._lock:
            if self._orgs.revision != self._revision:
                self._authorizer.reload()
                self._revision = self._orgs.revision
        return org

    def authorizer(self) -> rbac.Authorizer:
        return self._authorizer


def build_trust(
    trust_proxy_headers: bool,
    dev_user: str | None,
    dev_groups: tuple[str, ...],
    user_header: str,
    groups_header: str,
) -> Trust:
    if trust_proxy_headers and dev_user:
        raise click.UsageError("choose one of --trust-proxy-headers and --dev-user, not both")
    if trust_proxy_headers:
        return ProxyHeaders(user_header=user_header, groups_header=groups_header)
    if dev_user:
        return DevUser(user=dev_user, groups=dev_groups)
    if dev_groups:
        raise click.UsageError("--dev-group needs --dev-user")
    raise click.UsageError(
        "say whom the console trusts: --trust-proxy-headers (behind oauth2-proxy or "
        f"another authenticating proxy that sets {user_header} and {groups_header}; "
        "nothing else may reach the console) or --dev-user NAME (a local trial where "
        "every request is NAME)"
    )


def build_source(
    prometheus: str | None,
    exporters: tuple[str, ...],
    scrape_interval: float,
    recording_rules: bool,
) -> Source:
    if prometheus and exporters:
        raise click.UsageError("choose one source: --prometheus URL or --exporter URL ...")
    if prometheus:
        from dashboard.prometheus import PrometheusSource

        return PrometheusSource(
            prometheus, scrape_interval_s=scrape_interval, recording_rules=recording_rules
        )
    if exporters:
        from dashboard.direct import DirectSource

        source = DirectSource(list(exporters), scrape_interval_s=scrape_interval)
        source.start()
        return source
    raise click.UsageError(
        "name a metrics source: --prometheus URL (production) or --exporter URL, once per "
        f"exporter (e.g. http://node-1:{contract.DEFAULT_EXPORTER_PORT})"
    )


@click.command("dashboard")
@click.option(
    "--store",
    "store_url",
    envvar="GPUPOOL_STORE",
    metavar="URL",
    help="Governance store URL (or GPUPOOL_STORE).",
)
@click.option(
    "--prometheus", metavar="URL", help="Prometheus base URL, e.g. http://prometheus:9090."
)
@click.option(
    "--exporter",
    "exporters",
    multiple=True,
    metavar="URL",
    help="Exporter URL to scrape directly (repeat).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=contract.DEFAULT_DASHBOARD_PORT, show_default=True, type=int)
@click.option(
    "--scrape-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Seconds between scrapes; auto-refresh is never faster.",
)
@click.option(
    "--recording-rules/--no-recording-rules",
    default=True,
    show_default=True,
    help="Query the series recorded by dashboard/recording-rules.yaml.",
)
@click.option(
    "--trust-proxy-headers", is_flag=True, help="Take the viewer from the proxy's headers."
)
@click.option(
    "--user-header", default=DEFAULT_USER_HEADER, show_default=True, help="The proxy's user header."
)
@click.option(
    "--groups-header",
    default=DEFAULT_GROUPS_HEADER,
    show_default=True,
    help="The proxy's groups header (comma-separated groups).",
)
@click.option("--dev-user", metavar="NAME", help="Local trial: every request is this user.")
@click.option(
    "--dev-group",
    "dev_groups",
    multiple=True,
    metavar="GROUP",
    help="Groups of --dev-user (repeat).",
)
def dashboard(
    store_url: str | None,
    prometheus: str | None,
    exporters: tuple[str, ...],
    host: str,
    port: int,
    scrape_interval: float,
    recording_rules: bool,
    trust_proxy_headers: bool,
    user_header: str,
    groups_header: str,
    dev_user: str | None,
    dev_groups: tuple[str, ...],
) -> None:
    """Serve the console: utilisation, quota and waste per department, scoped by RBAC."""
    trust = build_trust(trust_proxy_headers, dev_user, dev_groups, user_header, groups_header)
    source = build_source(prometheus, exporters, scrape_interval, recording_rules)
    from dashboard.app import create_app
    from dashboard.pages import Console

    store = Store(store_url)
    gov = Governance(store)
    console = Console(
        source=source, store=store, org=gov.org, authorizer=gov.authorizer, trust=trust
    )
    app = create_app(console)
    console.warm_up()
    mode = (
        f"trusting {trust.user_header}/{trust.groups_header} from the proxy"
        if isinstance(trust, ProxyHeaders)
        else f"dev user {trust.user}"
    )
    click.echo(
        f"gpupool console on http://{host}:{port}/ ({source.describe()}; store "
        f"{store.safe_url}; {mode})"
    )
    serve(app.server, host, port)


def serve(wsgi: Any, host: str, port: int) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, port, wsgi, threaded=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
