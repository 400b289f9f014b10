"""The ``gpupool`` command: kubectl-like access to the governance store.

The root knows no component: ``webhook``, ``reconciler``, ``exporter`` and
``dashboard`` come from the ``gpupool.commands`` entry-point group and are imported only
when called, so a GPU node that installed only the exporter still has a working CLI.
Library code raises; only this module turns errors into messages and exit codes
(0 ok, 1 denied by ``check``, 2 bad input or configuration, 3 store unavailable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from functools import wraps
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from governance.contract import ENTRY_POINT_GROUP
from governance.errors import ConfigError, GpupoolError, PlacementError, StoreUnavailable
from governance.resources import RESOURCE_NAMES, ResourceName

if TYPE_CHECKING:
    from governance.model import Org
    from governance.store import Store

F = TypeVar("F", bound=Callable[..., Any])

EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_STORE = 3


class ComponentGroup(click.Group):
    """A click group whose component subcommands load from entry points on demand."""

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
            return _unavailable(cmd_name, ep.value, exc)
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"entry point {ep.value} is not a click command")
        return loaded


def _unavailable(name: str, target: str, exc: ImportError) -> click.Command:
    extra = {"webhook": "webhook", "reconciler": "webhook"}.get(name, name)

    @click.command(
        name, help=f"(unavailable here: {exc})", context_settings={"ignore_unknown_options": True}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"`gpupool {name}` needs packages that are not installed ({exc}). "
            f"Install them with: pip install 'gpupool[{extra}]'"
        )

    return stub


def handle_errors(func: F) -> F:
    """Turn gpupool errors into one clear line on stderr and an exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StoreUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_STORE)
        except (ConfigError, PlacementError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except GpupoolError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


class Settings:
    def __init__(self, store_url: str | None, output: str) -> None:
        self.store_url = store_url
        self.output = output
        self._store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            from governance.store import Store

            self._store = Store(self.store_url)
        return self._store

    def org(self) -> Org:
        from governance import config

        org = config.current_org(self.store())
        if org is None:
            raise ConfigError(
                "no configuration has been applied to this store yet: run "
                "`gpupool apply -f examples/org.yaml` (or your own file) first",
                source=self.store().safe_url,
            )
        return org


pass_settings = click.make_pass_decorator(Settings)


@click.group(cls=ComponentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_url",
    envvar="GPUPOOL_STORE",
    default=None,
    metavar="URL",
    help="Governance store: sqlite:///path.db (default ./gpupool.db) or "
    "postgresql://user@host/db. Also GPUPOOL_STORE.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
)
@click.version_option(package_name="gpupool", prog_name="gpupool")
@click.pass_context
def cli(ctx: click.Context, store_url: str | None, output: str) -> None:
    """gpupool: governed fractional GPU slices on Kubernetes."""
    ctx.obj = Settings(store_url, output)


# -- output ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
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
) -> None:
    """Print ``rows`` as a table, or ``data`` (default: rows) as JSON/YAML."""
    if settings.output == "json":
        click.echo(json.dumps(_plain(data if data is not None else rows), indent=2))
        return
    if settings.output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(_plain(data if data is not None else rows), sort_keys=False))
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


def fmt_amount(resource: ResourceName, value: int | None) -> str:
    """``80Gi``, ``250%``, ``4``, or ``unlimited``: the units the YAML is written in."""
    from governance.config import format_amount

    return format_amount(resource, value)


# -- apply -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "-f", "--filename", "path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--dry-run", is_flag=True, help="Show what would change; record nothing.")
@pass_settings
@handle_errors
def apply(settings: Settings, path: Path, dry_run: bool) -> None:
    """Apply a declarative organisation (pools, SKUs, departments, queues, quotas,
    role bindings) from a YAML file. Idempotent."""
    from governance import config

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from exc
    document = config.load_document(text, source=str(path))
    result = config.apply(settings.store(), document, source=str(path), dry_run=dry_run)
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
    """Show SKUs, pools, departments, queues or quotas."""


@get.command("skus")
@pass_settings
@handle_errors
def get_skus(settings: Settings) -> None:
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
    emit(settings, rows, columns=list(rows[0]) if rows else ["name"], title="SKUs")


@get.command("pools")
@pass_settings
@handle_errors
def get_pools(settings: Settings) -> None:
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
                "memory_physical": fmt_amount("memory_mib", p.physical.memory_mib),
                "memory_sellable": fmt_amount("memory_mib", p.sellable.memory_mib),
                "compute_physical": fmt_amount("compute_pct", p.physical.compute_pct),
                "compute_sellable": fmt_amount("compute_pct", p.sellable.compute_pct),
            }
        )
    emit(settings, rows, columns=list(rows[0]) if rows else ["name"], title="Pools")


@get.command("departments")
@pass_settings
@handle_errors
def get_departments(settings: Settings) -> None:
    org = settings.org()
    rows = [
        {
            "name": d.name,
            "namespaces": list(d.namespaces),
            "default_queue": d.default_queue,
            "queues": sorted(q.name for q in org.queues_of(d.name)),
            "slices": fmt_amount("slices", d.quota.total.slices.value),
            "memory": fmt_amount("memory_mib", d.quota.total.memory_mib.value),
            "compute": fmt_amount("compute_pct", d.quota.total.compute_pct.value),
        }
        for d in sorted(org.departments.values(), key=lambda d: d.name)
    ]
    emit(settings, rows, columns=list(rows[0]) if rows else ["name"], title="Departments")


@get.command("queues")
@click.option("-d", "--department", default=None)
@pass_settings
@handle_errors
def get_queues(settings: Settings, department: str | None) -> None:
    org = settings.org()
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
                "slices": fmt_amount("slices", q.nominal.total.slices.value),
                "memory": fmt_amount("memory_mib", q.nominal.total.memory_mib.value),
                "compute": fmt_amount("compute_pct", q.nominal.total.compute_pct.value),
                "borrowing_limit": ", ".join(
                    f"{n}={fmt_amount(n, q.borrowing_limit.get(n).value)}"
                    for n in RESOURCE_NAMES
                    if q.borrowing_limit.get(n).value is not None
                )
                or "unlimited",
            }
        )
    emit(settings, rows, columns=list(rows[0]) if rows else ["name"], title="Queues")


@get.command("quotas")
@click.option("-d", "--department", default=None)
@pass_settings
@handle_errors
def get_quotas(settings: Settings, department: str | None) -> None:
    """Used / limit / borrowed per department and queue and resource."""
    from governance import ledger

    org = settings.org()
    if department is not None and department not in org.departments:
        raise ConfigError(
            f"unknown department {department!r}; known: {', '.join(sorted(org.departments))}"
        )
    lines = ledger.quota_report(
        settings.store(), org, departments=[department] if department else None
    )
    rows = [
        {
            "department": line.department,
            "queue": line.queue or "(department)",
            "resource": line.resource,
            "used": fmt_amount(line.resource, line.used),
            "limit": fmt_amount(line.resource, line.limit),
            "borrowed": fmt_amount(line.resource, line.borrowed) if line.queue else "-",
            "ceiling": fmt_amount(line.resource, line.ceiling) if line.queue else "-",
        }
        for line in lines
    ]
    emit(
        settings,
        rows,
        columns=["department", "queue", "resource", "used", "limit", "borrowed", "ceiling"],
        title="Quotas (used / limit; a queue's ceiling is nominal + borrowing limit)",
        data=lines,
    )


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
    from governance import decide

    decision = decide.check(
        settings.store(),
        settings.org(),
        namespace=namespace,
        queue=queue,
        sku=sku,
        count=count,
        user=as_user,
        groups=as_groups,
    )
    data = {
        "allowed": decision.allowed,
        "reason": decision.reason.value,
        "message": decision.message,
        "department": decision.department,
        "queue": decision.queue,
        "sku": decision.sku,
        "requested": decision.requested.as_dict() if decision.requested else None,
    }
    if settings.output != "table":
        emit(settings, [], columns=[], data=data)
    else:
        verdict = "ADMIT" if decision.allowed else "DENY"
        click.echo(f"{verdict} ({decision.reason.value}): {decision.message}")
    sys.exit(0 if decision.allowed else EXIT_DENIED)


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
    from governance import ledger

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
            "memory": fmt_amount("memory_mib", a.amount.memory_mib),
            "compute": fmt_amount("compute_pct", a.amount.compute_pct),
            "created": a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for a in allocations
    ]
    emit(
        settings,
        rows,
        columns=list(rows[0]) if rows else ["id"],
        title="Allocations",
        data=allocations,
    )


def main(argv: Iterable[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="gpupool")


if __name__ == "__main__":  # pragma: no cover
    main()
