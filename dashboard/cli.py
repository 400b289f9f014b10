"""``gpupool dashboard``: start the console.

::

    gpupool dashboard --store URL (--prometheus URL | --exporter URL ...)
                      [--host 127.0.0.1] [--port 8050] [--workers N]
                      (--trust-proxy-headers [--trusted-proxy CIDR ...]
                       | --dev-user NAME [--dev-group G])

The console refuses to start without an explicit trust setting: either it sits behind
an authenticating proxy whose identity headers it trusts (from the proxy's addresses
only: loopback unless --trusted-proxy says otherwise), or it is a local trial where
every request is one named user. It is served by gunicorn (:mod:`dashboard.serving`).
"""

from __future__ import annotations

import logging

import click

from dashboard.access import (
    DEFAULT_GROUPS_HEADER,
    DEFAULT_USER_HEADER,
    LOOPBACK,
    DevUser,
    ProxyHeaders,
    Trust,
    parse_networks,
)
from dashboard.sources import Source
from governance import cli as gcli
from governance import contract
from governance.errors import GpupoolError
from governance.storage.source import SnapshotSource
from governance.storage.store import Store

log = logging.getLogger(__name__)


def build_trust(
    trust_proxy_headers: bool,
    dev_user: str | None,
    dev_groups: tuple[str, ...],
    user_header: str,
    groups_header: str,
    trusted_proxies: tuple[str, ...] = (),
) -> Trust:
    if trust_proxy_headers and dev_user:
        raise click.UsageError("choose one of --trust-proxy-headers and --dev-user, not both")
    if trusted_proxies and not trust_proxy_headers:
        raise click.UsageError("--trusted-proxy needs --trust-proxy-headers")
    if trust_proxy_headers:
        try:
            networks = parse_networks(trusted_proxies) if trusted_proxies else LOOPBACK
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
        return ProxyHeaders(
            user_header=user_header, groups_header=groups_header, trusted_proxies=networks
        )
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
    """The metrics source, not started: a direct one scrapes from a thread, which the
    server starts in each worker after the fork (the command's post-fork hook)."""
    if prometheus and exporters:
        raise click.UsageError("choose one source: --prometheus URL or --exporter URL ...")
    if prometheus:
        from dashboard.prometheus import PrometheusSource

        return PrometheusSource(
            prometheus, scrape_interval_s=scrape_interval, recording_rules=recording_rules
        )
    if exporters:
        from dashboard.direct import DirectSource

        return DirectSource(list(exporters), scrape_interval_s=scrape_interval)
    raise click.UsageError(
        "name a metrics source: --prometheus URL (production) or --exporter URL, once per "
        f"exporter (e.g. http://node-1:{contract.DEFAULT_EXPORTER_PORT})"
    )


@click.command("dashboard")
@gcli.store_option()
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
@gcli.host_option("127.0.0.1")
@gcli.port_option(contract.DEFAULT_DASHBOARD_PORT)
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
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="Address or CIDR block of the proxy whose headers are believed (repeat; default "
    "loopback, 127.0.0.0/8 and ::1). Requests from anywhere else get 401.",
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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="gunicorn worker processes [default: 2 with --prometheus; 1 with --exporter, "
    "whose history is kept in each worker's memory].",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Threads per worker: every thread the console runs for its clients.",
)
@gcli.read_timeout_option(10.0, "a request once it has started it")
@gcli.log_level_option()
def dashboard(
    store_url: str | None,
    prometheus: str | None,
    exporters: tuple[str, ...],
    host: str,
    port: int,
    scrape_interval: float,
    recording_rules: bool,
    trust_proxy_headers: bool,
    trusted_proxies: tuple[str, ...],
    user_header: str,
    groups_header: str,
    dev_user: str | None,
    dev_groups: tuple[str, ...],
    workers: int | None,
    threads: int,
    read_timeout: float,
    log_level: str,
) -> None:
    """Serve the console: utilisation, quota and waste per department, scoped by RBAC."""
    gcli.configure_logging(log_level)
    trust = build_trust(
        trust_proxy_headers, dev_user, dev_groups, user_header, groups_header, trusted_proxies
    )
    source = build_source(prometheus, exporters, scrape_interval, recording_rules)
    from dashboard.app import create_app
    from dashboard.serving import ConsoleServer, Limits
    from dashboard.shared import Console

    sock = gcli.listen(host, port)  # exit 4 before anything else starts
    try:
        store = Store(store_url)
        # the snapshot in force, re-read when a new revision is applied (no restart)
        snapshots = SnapshotSource(store, refresh_s=5.0)
        console = Console(
            source=source,
            store=store,
            org=snapshots.org,
            authorizer=snapshots.policy,
            trust=trust,
        )
        app = create_app(console)
        console.warm_up()  # in the master, before any worker takes traffic
    except GpupoolError as exc:
        sock.close()
        raise gcli.failure(exc) from exc
    mode = (
        f"trusting {trust.user_header}/{trust.groups_header} from "
        + ", ".join(str(n) for n in trust.trusted_proxies)
        if isinstance(trust, ProxyHeaders)
        else f"dev user {trust.user}"
    )
    limits = Limits(
        workers=workers or (1 if exporters else 2), threads=threads, read_timeout_s=read_timeout
    )
    click.echo(
        f"gpupool console on http://{host}:{sock.getsockname()[1]}/ ({source.describe()}; "
        f"store {store.safe_url}; {mode}; gunicorn, {limits.workers} worker(s) x "
        f"{limits.threads} threads)"
    )

    def after_fork() -> None:
        """In each worker: its own store connections, and the direct source's scrape
        thread (a thread does not survive a fork, so none starts in the master)."""
        store.engine.dispose(close=False)  # the master's connections stay the master's
        start = getattr(source, "start", None)
        if callable(start):
            start()

    ConsoleServer(app.server, sock, limits, post_fork=after_fork, log_level=log_level).run()
