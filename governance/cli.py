"""The ``gpupool`` command: kubectl-like access to the governance store.

The root knows no component: ``webhook``, ``reconciler``, ``exporter`` and
``dashboard`` come from the ``gpupool.commands`` entry-point group and are imported only
when called, so a GPU node that installed only the exporter still has a working CLI.

One convention for every command, components included, defined here once:

* ``--store URL`` (env ``GPUPOOL_STORE``) and ``-o/--output table|json|yaml`` are
  accepted before or after any subcommand, as kubectl's global flags are: the group
  (:class:`GpupoolGroup`) adds them to every command it hands out, and a component
  that reads the store declares :func:`store_option`, which falls back to the value
  given before the subcommand;
* servers take :func:`host_option`, :func:`port_option` and :func:`log_level_option`
  and listen with :func:`listen`;
* one table of exit codes (:data:`EXIT_CODES`, printed in README.md): library code
  raises, and only this module (:func:`handle_errors`, :func:`failure` and the
  ``click`` exceptions below) turns errors into messages and exit codes.
"""

from __future__ import annotations

import errno
import getpass
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from functools import wraps
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from governance.contract import ENTRY_POINT_GROUP
from governance.errors import (
    ConfigError,
    Forbidden,
    GpupoolError,
    StoreUnavailable,
)
from governance.resources import (
    RESOURCE_NAMES,
    RESOURCES,
    Limits,
    Resources,
    format_amount,
)

if TYPE_CHECKING:
    from governance import rbac
    from governance.model import Org
    from governance.snapshot import Snapshot
    from governance.storage.store import Store

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_SERVE = 4
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_DENIED: "denied: `gpupool check` says the request would be refused, or the "
    "caller may not make the change (`gpupool set quota`)",
    EXIT_USAGE: "bad input: usage, configuration, an unreadable or invalid file",
    EXIT_STORE: "the governance store is unavailable (nothing was recorded)",
    EXIT_SERVE: "cannot serve: the address is in use, or listening on it was refused",
}
"""Every ``gpupool`` command exits with one of these (README.md, "Exit codes")."""

ENV_STORE = "GPUPOOL_STORE"
OUTPUTS = ("table", "json", "yaml")
LOG_LEVELS = ("debug", "info", "warning", "error")
STORE_HELP = (
    "Governance store: sqlite:///path.db (default ./gpupool.db), a bare path to a SQLite "
    "file, or postgresql://user@host/db. Also GPUPOOL_STORE."
)
NOISY_LOGGERS = ("alembic", "casbin")
"""Libraries that log routine steps at INFO (Alembic's plugin set-up and migration
context, Casbin every policy it loads): shown only at ``--log-level debug``."""


class _Failure(click.ClickException):
    """A clear error with this table's exit code (no traceback): one line, or one line
    per error of a configuration file (:class:`~governance.errors.ConfigError` holds
    them all)."""

    def show(self, file: IO[Any] | None = None) -> None:
        for line in self.format_message().splitlines() or [""]:
            click.echo(f"error: {line}", err=True, file=file)


class BadInput(_Failure):
    exit_code = EXIT_USAGE


class StoreDown(_Failure):
    exit_code = EXIT_STORE


class CannotServe(_Failure):
    exit_code = EXIT_SERVE


class Denied(_Failure):
    exit_code = EXIT_DENIED


def failure(exc: GpupoolError) -> click.ClickException:
    """The click exception, with the right exit code, for a gpupool error."""
    if isinstance(exc, StoreUnavailable):
        return StoreDown(str(exc))
    if isinstance(exc, Forbidden):
        return Denied(str(exc))
    return BadInput(str(exc))


def handle_errors(func: F) -> F:
    """Turn gpupool errors into one clear line on stderr and the table's exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GpupoolError as exc:
            raise failure(exc) from exc

    return wrapper  # type: ignore[return-value]


# -- options every command shares ---------------------------------------------------------


class Settings:
    """What the global options said, shared by the root and its subcommands."""

    def __init__(self, store_url: str | None = None, output: str = "table") -> None:
        self.store_url = store_url
        self.output = output
        self._store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            from governance.storage.store import Store

            self._store = Store(self.store_url)
        return self._store

    def org(self) -> Org:
        return self.snapshot().org

    def snapshot(self) -> Snapshot:
        """The snapshot of the configuration in force (its organisation and policy)."""
        from governance.storage import source

        found = source.load(self.store())
        if found is None:
            raise ConfigError(
                "no configuration has been applied to this store yet: run "
                "`gpupool apply -f examples/org.yaml` (or your own file) first",
                source=self.store().safe_url,
            )
        return found


def settings_of(ctx: click.Context) -> Settings:
    """The Settings of this invocation: the root's, or fresh ones (reading
    GPUPOOL_STORE) when a component command runs on its own (``python -m exporter``)."""
    found = ctx.find_object(Settings)
    if found is None:
        found = Settings(os.environ.get(ENV_STORE) or None)
        ctx.find_root().obj = found
        ctx.obj = found
    return found


def _given(ctx: click.Context, param: click.Parameter) -> bool:
    source = ctx.get_parameter_source(param.name or "")
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _store_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    settings = settings_of(ctx)
    if value is not None and _given(ctx, param):
        settings.store_url = value
    return settings.store_url


def _output_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    settings = settings_of(ctx)
    if value is not None and _given(ctx, param):
        settings.output = value
    return settings.output


# No envvar on the subcommand's --store: the root reads GPUPOOL_STORE (or settings_of
# does), so that a --store given before the subcommand is not overridden by the
# environment.
_STORE_ATTRS: dict[str, Any] = {
    "metavar": "URL",
    "default": None,
    "callback": _store_callback,
    "help": STORE_HELP,
}
_OUTPUT_ATTRS: dict[str, Any] = {
    "type": click.Choice(OUTPUTS),
    "default": None,
    "callback": _output_callback,
    "help": "Output format (table, json or yaml; default table).",
}


def store_option() -> Callable[[F], F]:
    """``--store URL`` for a command that reads the store (passed as ``store_url``):
    the value given after the subcommand, else the one given before it, else
    GPUPOOL_STORE, else None (the store's default, ./gpupool.db)."""
    return click.option("--store", "store_url", **_STORE_ATTRS)


def output_option() -> Callable[[F], F]:
    """``-o/--output`` for a command that prints (passed as ``output``)."""
    return click.option("-o", "--output", **_OUTPUT_ATTRS)


def ensure_global_options(command: click.Command) -> click.Command:
    """Give ``command`` the global options it lacks (``--store``, ``-o``), recording
    their values in the shared Settings: the one mechanism behind "accepted before or
    after any subcommand". Idempotent."""
    names = {p.name for p in command.params}
    if "store_url" not in names:
        command.params.append(
            click.Option(["--store", "store_url"], expose_value=False, **_STORE_ATTRS)
        )
    if "output" not in names:
        command.params.append(click.Option(["-o", "--output"], expose_value=False, **_OUTPUT_ATTRS))
    return command


def log_level_option() -> Callable[[F], F]:
    """``--log-level debug|info|warning|error`` (any case; default info), passed lower
    case as ``log_level``."""
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="info",
        show_default=True,
        help="Log level.",
    )


def host_option(default: str = "0.0.0.0", help: str = "Address to listen on.") -> Callable[[F], F]:
    return click.option("--host", default=default, show_default=True, metavar="ADDRESS", help=help)


def port_option(default: int, help: str = "Port to listen on.") -> Callable[[F], F]:
    return click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=default,
        show_default=True,
        help=help,
    )


def read_timeout_option(default_s: float, what: str) -> Callable[[F], F]:
    """``--read-timeout SECONDS``: how long a client has to send ``what`` (every server
    bounds it, so that a slow client cannot hold a thread)."""
    return click.option(
        "--read-timeout",
        type=click.FloatRange(min=0.1),
        default=default_s,
        show_default=True,
        help=f"Seconds a client has to send {what}.",
    )


def configure_logging(level: str) -> None:
    """Logging for a server command: one format, and the libraries that chat at INFO
    (:data:`NOISY_LOGGERS`) quiet unless asked for debug."""
    numeric = getattr(logging, level.upper())
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))


def cannot_serve(host: str, port: int, exc: OSError) -> CannotServe:
    """The error (exit 4) for a server that could not listen on (host, port), and why."""
    hint = {
        errno.EADDRINUSE: "another process listens there: stop it or choose another port",
        errno.EACCES: "ports below 1024 need privileges: choose a port above 1023",
        errno.EADDRNOTAVAIL: "this host has no such address: check --host",
    }.get(exc.errno or 0, "check --host and the port")
    return CannotServe(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}")


def listen(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on (host, port), or :class:`CannotServe` (exit 4) saying
    why: the address in use, a privileged port, an address this host does not have."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        raise cannot_serve(host, port, exc) from exc


class GpupoolGroup(click.Group):
    """A group whose every command (and nested group) takes the global options."""

    group_class: type[click.Group] | type[type] = type
    """Nested groups (``get``, ``ledger``, ``set``) are GpupoolGroups too."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        return ensure_global_options(command) if command is not None else None


class ComponentGroup(GpupoolGroup):
    """The root: component subcommands load from entry points on demand."""

    group_class = GpupoolGroup

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._entry_points().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except ImportError as exc:
            return ensure_global_options(_unavailable(cmd_name, ep.value, exc))
        if not isinstance(loaded, click.Command):
            raise BadInput(f"entry point {ep.value} is not a click command")
        return ensure_global_options(loaded)


def _unavailable(name: str, target: str, exc: ImportError) -> click.Command:
    extra = {"webhook": "webhook", "reconciler": "webhook"}.get(name, name)

    @click.command(
        name, help=f"(unavailable here: {exc})", context_settings={"ignore_unknown_options": True}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise BadInput(
            f"`gpupool {name}` needs packages that are not installed ({exc}). "
            f"Install them with: pip install 'gpupool[{extra}]'"
        )

    return stub


pass_settings = click.make_pass_decorator(Settings, ensure=True)


@click.group(cls=ComponentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store", "store_url", envvar=ENV_STORE, default=None, metavar="URL", help=STORE_HELP
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUTS),
    default="table",
    show_default=True,
    help="Output format; also accepted after the subcommand.",
)
@click.version_option(package_name="gpupool", prog_name="gpupool")
@click.pass_context
def cli(ctx: click.Context, store_url: str | None, output: str) -> None:
    """gpupool: governed fractional GPU slices on Kubernetes.

    --store and -o/--output are accepted before or after any subcommand.
    Exit codes: 0 ok, 1 denied, 2 bad input, 3 store unavailable, 4 cannot serve."""
    ctx.obj = Settings(store_url, output)


# -- output ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Resources):
        return value.as_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit(
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    *,
    columns: Sequence[str],
    title: str = "",
    data: Any = None,
    empty: str = "",
) -> None:
    """Print ``rows`` as a table, or ``data`` (default: rows) as JSON/YAML. With no
    rows, a table prints ``empty`` (a sentence saying so, and why) instead of headers
    squeezed over nothing."""
    if settings.output == "json":
        click.echo(json.dumps(_plain(data if data is not None else rows), indent=2))
        return
    if settings.output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(_plain(data if data is not None else rows), sort_keys=False))
        return
    if not rows:
        click.echo(empty or f"No {title.split(' (')[0].lower() or 'rows'}.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, box=None, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=200).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


# -- apply -------------------------------------------------------------------------------


def _identity(as_user: str, as_groups: tuple[str, ...] = ()) -> rbac.Identity:
    """The identity ``--as``/``--as-group`` name. A user may be written as the role
    bindings write it (``user:ana``) or bare (``ana``), the same person either way;
    ``--as user:ana`` was read as the user ``user:ana`` (subject ``user:user:ana``) by
    ``set quota`` and ``apply``, and as ``ana`` by ``check``."""
    from governance import rbac

    return rbac.Identity(user=as_user.removeprefix("user:"), groups=as_groups)


def _who(as_user: str | None) -> str:
    """Who runs this: ``--as``, else the login and host of the shell that ran it."""
    if as_user:
        subject: str = _identity(as_user).subjects()[0]
        return subject
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return f"local:{login}@{socket.gethostname()}"


def _dry_run_store(settings: Settings) -> Store:
    """The store a dry run reads: an absent SQLite file is an empty store, checked in
    memory, so that a dry run creates no database file."""
    from governance.storage.store import Store, sqlite_file

    database = sqlite_file(settings.store_url)
    if database is not None and not database.exists():
        return Store("sqlite:///:memory:")
    return settings.store()


@cli.command()
@click.option(
    "-f", "--filename", "path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--dry-run", is_flag=True, help="Show what would change; record nothing.")
@click.option(
    "--prune-all",
    is_flag=True,
    help="Allow a document that declares nothing, removing every pool, SKU, department, "
    "queue and role binding (refused without this flag).",
)
@click.option(
    "--as", "as_user", default=None, metavar="USER", help="Who applies it, for the record."
)
@pass_settings
@handle_errors
def apply(
    settings: Settings, path: Path, dry_run: bool, prune_all: bool, as_user: str | None
) -> None:
    """Apply a declarative organisation (pools, SKUs, departments, queues, quotas,
    role bindings) from a YAML file, as a new configuration revision. Idempotent.

    A document that declares nothing is refused (it would remove everything);
    --prune-all says that is meant. Each revision records who applied it (--as, else
    the local login): see `gpupool get revisions`."""
    from governance import config
    from governance.storage import revisions

    document = config.load_file(path)
    store = _dry_run_store(settings) if dry_run else settings.store()
    result = revisions.apply(
        store,
        document,
        source=str(path),
        dry_run=dry_run,
        applied_by=_who(as_user),
        allow_empty=prune_all,
    )
    if settings.output != "table":
        emit(
            settings,
            [],
            columns=[],
            data={
                "changed": result.changed,
                "revision": result.revision,
                "diff": result.diff,
                "dry_run": dry_run,
            },
        )
        return
    for line in result.diff:
        click.echo(line)
    if not result.changed:
        click.echo(f"{path}: unchanged")
    elif dry_run:
        click.echo(f"{path}: dry run, nothing recorded")
    else:
        click.echo(f"{path}: applied as revision {result.revision}")


# -- get ---------------------------------------------------------------------------------


@cli.group()
def get() -> None:
    """Show SKUs, pools, departments, queues, quotas or configuration revisions."""


@get.command("skus")
@pass_settings
@handle_errors
def get_skus(settings: Settings) -> None:
    """The SKUs on sale: memory and compute per GPU, GPUs per slice, price, pools."""
    org = settings.org()
    rows = [
        {
            "name": s.name,
            "memory": f"{s.memory_mib}Mi" if s.memory_mib is not None else f"{s.memory_pct}%",
            "compute": f"{s.compute_pct}%",
            "gpus_per_slice": s.gpus_per_slice,
            "price_per_hour": s.price_per_hour,
            "pools": list(s.pools),
        }
        for s in sorted(org.skus.values(), key=lambda s: s.name)
    ]
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["name"],
        title="SKUs",
        empty="No SKUs: the configuration in force declares none (add `skus:` and apply).",
    )


@get.command("pools")
@pass_settings
@handle_errors
def get_pools(settings: Settings) -> None:
    """The GPU pools: vendor, model, backend, GPUs, physical and sellable capacity."""
    org = settings.org()
    rows = []
    for p in sorted(org.pools.values(), key=lambda p: p.name):
        rows.append(
            {
                "name": p.name,
                "vendor": p.vendor,
                "model": p.model,
                "backend": p.backend,
                "gpus": p.gpus,
                "memory_physical": format_amount("memory_mib", p.physical.memory_mib),
                "memory_sellable": format_amount("memory_mib", p.sellable.memory_mib),
                "compute_physical": format_amount("compute_pct", p.physical.compute_pct),
                "compute_sellable": format_amount("compute_pct", p.sellable.compute_pct),
            }
        )
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["name"],
        title="Pools",
        empty="No pools: the configuration in force declares none (add `pools:` and apply).",
    )


@get.command("departments")
@pass_settings
@handle_errors
def get_departments(settings: Settings) -> None:
    """The departments: their namespaces, queues and quota."""
    org = settings.org()
    rows = [
        {
            "name": d.name,
            "namespaces": list(d.namespaces),
            "default_queue": d.default_queue,
            "queues": sorted(q.name for q in org.queues_of(d.name)),
            **_limit_columns(d.quota.total),
        }
        for d in sorted(org.departments.values(), key=lambda d: d.name)
    ]
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["name"],
        title="Departments",
        empty="No departments: the configuration in force declares none.",
    )


@get.command("queues")
@click.option("-d", "--department", default=None, help="Only this department's queues.")
@pass_settings
@handle_errors
def get_queues(settings: Settings, department: str | None) -> None:
    """The queues: pool, default SKU, nominal quota and borrowing limit."""
    org = settings.org()
    _known_department(org, department)
    rows = []
    for (dept, _), q in sorted(org.queues.items()):
        if department and dept != department:
            continue
        rows.append(
            {
                "department": dept,
                "name": q.name,
                "pool": q.pool,
                "default_sku": q.default_sku,
                **_limit_columns(q.nominal.total),
                "borrowing_limit": ", ".join(
                    f"{n}={format_amount(n, q.borrowing_limit.get(n).value)}"
                    for n in RESOURCE_NAMES
                    if q.borrowing_limit.get(n).value is not None
                )
                or "unlimited",
            }
        )
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["name"],
        title="Queues",
        empty=f"No queues in department {department}." if department else "No queues.",
    )


def _limit_columns(limits: Limits) -> dict[str, str]:
    """A column per quota resource, named and written as the YAML does."""
    return {r.yaml_key: format_amount(r.name, limits.get(r.name).value) for r in RESOURCES}


def _known_department(org: Org, department: str | None) -> None:
    if department is not None and department not in org.departments:
        raise ConfigError(
            f"unknown department {department!r}; known: {', '.join(sorted(org.departments))}"
        )


@get.command("quotas")
@click.option("-d", "--department", default=None, help="Only this department.")
@pass_settings
@handle_errors
def get_quotas(settings: Settings, department: str | None) -> None:
    """Used / limit / borrowed per department and queue and resource."""
    from governance.storage import ledger

    org = settings.org()
    _known_department(org, department)
    lines = ledger.quota_report(
        settings.store(), org, departments=[department] if department else None
    )
    rows = [
        {
            "department": line.department,
            "queue": line.queue or "(department)",
            "resource": line.resource,
            "used": format_amount(line.resource, line.used),
            "limit": format_amount(line.resource, line.limit),
            "borrowed": format_amount(line.resource, line.borrowed) if line.queue else "-",
            "ceiling": format_amount(line.resource, line.ceiling) if line.queue else "-",
        }
        for line in lines
    ]
    emit(
        settings,
        rows,
        columns=["department", "queue", "resource", "used", "limit", "borrowed", "ceiling"],
        title="Quotas (used / limit; a queue's ceiling is nominal + borrowing limit)",
        data=lines,
        empty="No quotas: the configuration in force declares no department.",
    )


@get.command("revisions")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@pass_settings
@handle_errors
def get_revisions(settings: Settings, limit: int) -> None:
    """Configuration revisions, newest first: when, by whom, from what."""
    revisions = settings.store().config_history(limit=limit)
    rows = [
        {
            "revision": r.revision,
            "applied_at": r.applied_at.strftime("%Y-%m-%d %H:%M:%S"),
            "applied_by": r.applied_by or "-",
            "source": r.source,
        }
        for r in revisions
    ]
    emit(
        settings,
        rows,
        columns=["revision", "applied_at", "applied_by", "source"],
        title="Revisions",
        data=[{**row, "applied_at": r.applied_at} for row, r in zip(rows, revisions, strict=True)],
        empty="No revisions: nothing has been applied to this store yet "
        "(`gpupool apply -f org.yaml`).",
    )


# -- set ---------------------------------------------------------------------------------


@cli.group("set")
def set_group() -> None:
    """Change one setting of the configuration in force, as a new revision."""


def _quota_options(func: F) -> F:
    """One option per quota resource, ``--<yaml key>`` (``--slices``, ``--memory``...)."""
    for r in reversed(RESOURCES):
        func = click.option(
            f"--{r.yaml_key}",
            r.yaml_key,
            default=None,
            metavar="Q",
            help=f"The {r.yaml_key} quota, as the YAML writes it ({r.example}), or unlimited.",
        )(func)
    return func


@set_group.command("quota")
@click.option("-d", "--department", required=True)
@click.option(
    "-q", "--queue", default=None, help="The queue; without it, the department's own quota."
)
@_quota_options
@click.option("--as", "as_user", required=True, metavar="USER", help="Who makes the change.")
@click.option("--as-group", "as_groups", multiple=True, metavar="GROUP")
@click.option("--dry-run", is_flag=True, help="Show the change; record nothing.")
@pass_settings
@handle_errors
def set_quota(
    settings: Settings,
    /,
    department: str,
    queue: str | None,
    as_user: str,
    as_groups: tuple[str, ...],
    dry_run: bool,
    **quota: str | None,
) -> None:
    """Set a queue's nominal quota (a dept-admin of its department, or a
    platform-admin) or a department's quota (a platform-admin). Exit 1 when the
    caller may not make the change.

    The change is checked like any configuration (limits below what is in use are
    refused) and recorded as a new revision naming who made it."""
    from governance.storage import revisions

    values = {key: value for key, value in quota.items() if value is not None}
    if not values:
        keys = [f"--{r.yaml_key}" for r in RESOURCES]
        raise click.UsageError(f"say what to set: {', '.join(keys[:-1])} and/or {keys[-1]}")
    identity = _identity(as_user, as_groups)
    result = revisions.change_quota(
        settings.store(),
        identity=identity,
        department=department,
        queue=queue,
        values=values,
        dry_run=dry_run,
    )
    if settings.output != "table":
        emit(
            settings,
            [],
            columns=[],
            data={"revision": result.revision, "diff": result.diff, "dry_run": dry_run},
        )
        return
    for line in result.diff:
        click.echo(line)
    target = f"queue {department}/{queue}" if queue else f"department {department}"
    if not result.changed:
        click.echo(f"{target}: unchanged")
    elif dry_run:
        click.echo(f"{target}: dry run, nothing recorded")
    else:
        click.echo(f"{target}: quota set by {_who(as_user)} as revision {result.revision}")


# -- check -------------------------------------------------------------------------------


@cli.command()
@click.option("-n", "--namespace", required=True)
@click.option("-q", "--queue", default=None, help="Default: the department's default queue.")
@click.option("--sku", default=None, help="Default: the queue's default SKU.")
@click.option("--count", type=int, default=1, show_default=True)
@click.option("--as", "as_user", default=None, help="Check as this user (or SA).")
@click.option("--as-group", "as_groups", multiple=True)
@pass_settings
@handle_errors
def check(
    settings: Settings,
    namespace: str,
    queue: str | None,
    sku: str | None,
    count: int,
    as_user: str | None,
    as_groups: tuple[str, ...],
) -> None:
    """Would COUNT slices of SKU be admitted in NAMESPACE now? Exit 0 yes, 1 no."""
    verdict = _check(
        settings.store(),
        settings.snapshot(),
        namespace=namespace,
        queue=queue,
        sku=sku,
        count=count,
        user=as_user,
        groups=as_groups,
    )
    if settings.output != "table":
        emit(settings, [], columns=[], data=verdict)
    else:
        word = "ADMIT" if verdict["allowed"] else "DENY"
        click.echo(f"{word} ({verdict['reason']}): {verdict['message']}")
    sys.exit(EXIT_OK if verdict["allowed"] else EXIT_DENIED)


def _check(
    store: Store,
    snapshot: Snapshot,
    *,
    namespace: str,
    queue: str | None,
    sku: str | None,
    count: int,
    user: str | None,
    groups: Sequence[str],
) -> dict[str, Any]:
    """The decision the webhook would take for COUNT slices in NAMESPACE now
    (:func:`governance.decision.decide` over the ledger's usage), as ``check`` shows it."""
    from governance import decision, placement
    from governance.contract import Reason
    from governance.storage import ledger

    who = user or "(anyone: no --as given, RBAC not checked)"
    identity = (
        None
        if user is None
        # Kubernetes user names carry no prefix
        else _identity(user, tuple(groups))
    )
    ask = decision.Ask(
        namespace=namespace,
        queue=queue,
        containers=(
            decision.Container(name="check", request=placement.SliceRequest(count=count, sku=sku)),
        ),
    )
    planned = decision.plan(snapshot, ask, identity)
    result: decision.Admitted | decision.Denial = (
        planned
        if isinstance(planned, decision.Denial)
        else decision.admit(snapshot, planned, ledger.usage(store))
    )
    out: dict[str, Any] = {
        "allowed": isinstance(result, decision.Admitted),
        "reason": Reason.ADMITTED.value,
        "message": "",
        "department": "",
        "queue": "",
        "sku": "",
        "requested": None,
    }
    if isinstance(result, decision.Denial) and result.stage in (
        decision.Stage.LOCATE,
        decision.Stage.PLACE,
    ):
        out.update(reason=result.reason.value, message=f"{who}: {result.message}")
        return out
    plan = result.plan if isinstance(result, decision.Admitted) else None
    amount = result.requested if isinstance(result, decision.Denial) else result.plan.amount
    assert amount is not None
    where = result if isinstance(result, decision.Denial) else result.plan
    out.update(
        department=where.department,
        queue=where.queue,
        sku=where.sku,
        requested=amount.as_dict(),
    )
    what = (
        f"{count} x {where.sku} ({amount.slices} slices, {amount.memory_mib} MiB GPU memory, "
        f"{amount.compute_pct}% GPU compute)"
    )
    if isinstance(result, decision.Denial):
        message = (
            f"{result.message} Requested: {what}."
            if result.stage is decision.Stage.AUTHORISE
            else f"{who} asked for {what}: {result.message}"
        )
        out.update(reason=result.reason.value, message=message)
        return out
    assert plan is not None
    borrowed = result.borrowed
    note = "" if borrowed.is_zero() else f", borrowing {borrowed.as_dict()} above nominal"
    out["message"] = (
        f"{who}: {what} fits in queue {plan.department}/{plan.queue} on pool {plan.pool}{note}."
    )
    return out


# -- ledger ------------------------------------------------------------------------------


@cli.group("ledger")
def ledger_group() -> None:
    """Inspect the allocation ledger."""


@ledger_group.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["reserved", "bound", "released", "expired"]),
)
@click.option("-d", "--department", default=None)
@click.option("--limit", type=int, default=200, show_default=True)
@pass_settings
@handle_errors
def ledger_list(
    settings: Settings, states: tuple[str, ...], department: str | None, limit: int
) -> None:
    """Allocations, newest first."""
    from governance.storage import ledger

    allocations = ledger.list_allocations(
        settings.store(),
        states=[ledger.State(s) for s in states] if states else None,
        department=department,
        limit=limit,
    )
    rows = [
        {
            "id": a.id,
            "state": a.state.value,
            "namespace": a.namespace,
            "pod": a.pod_name or "-",
            "department": a.department,
            "queue": a.queue,
            "sku": a.sku,
            "slices": a.amount.slices,
            "memory": format_amount("memory_mib", a.amount.memory_mib),
            "compute": format_amount("compute_pct", a.amount.compute_pct),
            "created": a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for a in allocations
    ]
    filters = [
        f"--state {','.join(states)}" if states else "",
        f"-d {department}" if department else "",
    ]
    shown = " ".join(f for f in filters if f)
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["id"],
        title="Allocations",
        data=allocations,
        empty=f"No allocations match {shown}."
        if shown
        else "No allocations: the ledger is "
        "empty (the webhook records one for every GPU pod it admits).",
    )


def main(argv: Iterable[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="gpupool")


if __name__ == "__main__":  # pragma: no cover
    main()
