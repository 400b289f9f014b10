"""``gpupool simulate``: the fill experiment, the replay, and the synthetic generator.

Reads the inputs, runs the pure experiments, prints a table (or JSON/YAML with
``-o``), and writes an HTML report with ``--html``. Errors in the inputs exit 2 with
the file, the line and what is wrong (governance's CLI conventions).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from governance.cli import handle_errors
from governance.errors import ConfigError
from simulator import fill, governed, policies, replay, report, synthetic, trace, workload
from simulator.trace import Pod

OUTPUTS = ("table", "json", "yaml")


def read_pod_list(path: Path) -> list[Pod]:
    """A pod list in the trace's format or in gpupool's, told apart by the columns
    (``num_gpu``: the trace's; ``gpus``: gpupool's; JSON lines: gpupool's)."""
    if path.suffix in (".jsonl", ".json"):
        return workload.read_workload(path)
    try:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a text file: {exc}", source=str(path)) from exc
    if "num_gpu" in header:
        return trace.read_pods(path)
    if "gpus" in header:
        return workload.read_workload(path)
    raise ConfigError(
        "neither the trace's pod list (needs "
        f"{', '.join(trace.POD_COLUMNS)}) nor gpupool's format (needs gpus); the header "
        f"is {', '.join(header) or 'empty'}",
        source=str(path),
    )


def _output(ctx: click.Context, output: str | None) -> str:
    """``-o`` after the subcommand, else the one given to ``gpupool`` itself."""
    if output:
        return output
    root = ctx.find_root().obj
    return str(getattr(root, "output", "table") or "table")


def _emit(output: str, data: Any, table: Any) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False))
    else:
        Console(width=200).print(table)


def _policies(names: Sequence[str]) -> list[str]:
    chosen: list[str] = []
    for name in names:
        for one in policies.REGISTRY if name == "all" else [name]:
            policies.check(one)
            if one not in chosen:
                chosen.append(one)
    return chosen


@contextmanager
def _progress(enabled: bool, total: float, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (when asked, or when stderr is a terminal)."""
    if not enabled:
        yield lambda _: None
        return
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda advance: bar.advance(task, advance)


def _show_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


pods_option = click.option(
    "--pods",
    "pods_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pod list: the trace's CSV (name, cpu_milli, memory_mib, num_gpu, gpu_milli, ...) "
    "or gpupool's CSV / JSON lines (see docs/simulate.md).",
)
nodes_option = click.option(
    "--nodes",
    "nodes_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node list in the trace's format (sn, cpu_milli, memory_mib, gpu, model).",
)
policy_option = click.option(
    "--policy",
    "policy_names",
    multiple=True,
    required=True,
    help=f"Placement policy, repeatable, or 'all': {', '.join(policies.REGISTRY)}.",
)
output_option = click.option(
    "-o", "--output", type=click.Choice(OUTPUTS), default=None, help="table, json or yaml."
)
progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stderr is a terminal).",
)
html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an HTML report with Plotly charts to this file.",
)


@click.group("simulate")
def simulate() -> None:
    """Capacity planning on GPU cluster traces: placement policies, fill and replay."""


@simulate.command("fill")
@pods_option
@nodes_option
@policy_option
@click.option("--seeds", type=int, default=1, show_default=True, help="Runs, one per seed.")
@click.option("--seed", type=int, default=fill.DEFAULT_SEED, show_default=True, help="First seed.")
@click.option(
    "--ratio",
    type=float,
    default=fill.DEFAULT_RATIO,
    show_default=True,
    help="Extend the trace until it asks for this many times the fleet's GPUs.",
)
@click.option(
    "--order",
    type=click.Choice(["shuffled", "trace"]),
    default="shuffled",
    show_default=True,
    help="Arrival order: shuffled by seed (the paper's experiments) or the file's.",
)
@click.option(
    "--whole-cards",
    is_flag=True,
    help="Give every GPU pod whole cards (a sharing pod takes a card of its own).",
)
@html_option
@progress_option
@output_option
@click.pass_context
@handle_errors
def fill_command(
    ctx: click.Context,
    pods_path: Path,
    nodes_path: Path,
    policy_names: tuple[str, ...],
    seeds: int,
    seed: int,
    ratio: float,
    order: fill.Order,
    whole_cards: bool,
    html_path: Path | None,
    progress: bool | None,
    output: str | None,
) -> None:
    """The FGD paper's fill experiment: pods arrive and stay until the trace asks for
    --ratio times the fleet's GPUs; the curve is the share of GPU capacity allocated
    against the share requested. JSON: policy, total_gpus, seeds,
    allocation_by_arrived ("0".."130" -> %)."""
    output = _output(ctx, output)
    names = _policies(policy_names)
    pods = read_pod_list(pods_path)
    if whole_cards:
        pods = [p.as_whole_cards() for p in pods]
    nodes = trace.read_nodes(nodes_path)
    estimate = len(names) * seeds * fill.estimated_length(pods, nodes, ratio)
    results = []
    with _progress(_show_progress(progress), estimate, "fill") as advance:
        for name in names:
            results.append(
                fill.run(
                    pods,
                    nodes,
                    name,
                    seeds=seeds,
                    seed=seed,
                    ratio=ratio,
                    order=order,
                    progress=advance,
                )
            )
    if html_path is not None:
        report.write_html(html_path, fills=results, title=f"Fill: {pods_path.name}")
    data: Any = (
        report.fill_data(results[0])
        if len(results) == 1
        else [report.fill_data(r) for r in results]
    )
    _emit(output, data, report.fill_table(results))
    if html_path is not None and output == "table":
        click.echo(f"report: {html_path}")


@simulate.command("replay")
@pods_option
@click.option(
    "--nodes",
    "nodes_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node list in the trace's format (sn, cpu_milli, memory_mib, gpu, model); "
    "without it, the pools of --config are the fleet.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A gpupool configuration (examples/org.yaml): its departments, queues, SKUs and "
    "quotas decide every GPU pod, through gpupool's governance decision.",
)
@click.option(
    "--fleet-from-config",
    is_flag=True,
    help="The fleet is --config's pools (nodes of 8 GPUs, 16 cores and 128 GiB per GPU); "
    "the default when --nodes is not given.",
)
@click.option(
    "--load",
    type=float,
    default=1.0,
    show_default=True,
    help="Pods arrive this many times as fast (each runs as long): the workload grown.",
)
@policy_option
@click.option("--seed", type=int, default=42, show_default=True, help="Seed for random ties.")
@click.option(
    "--acceptance",
    type=float,
    default=0.99,
    show_default=True,
    help="Share of pods that must start on arrival, for GPUs needed.",
)
@click.option(
    "--needed/--no-needed",
    default=True,
    show_default=True,
    help="Also search the GPUs needed, sliced and with whole cards (several replays).",
)
@html_option
@progress_option
@output_option
@click.pass_context
@handle_errors
def replay_command(
    ctx: click.Context,
    pods_path: Path,
    nodes_path: Path | None,
    config_path: Path | None,
    fleet_from_config: bool,
    load: float,
    policy_names: tuple[str, ...],
    seed: int,
    acceptance: float,
    needed: bool,
    html_path: Path | None,
    progress: bool | None,
    output: str | None,
) -> None:
    """Replay the trace over time (arrivals and departures) on the fleet: allocation,
    queueing delay, denials, and the GPUs needed at --acceptance, sliced and whole-card.
    With --config, each GPU pod asks through a queue of the configuration and gpupool's
    governance decision admits or denies it against the quotas (docs/simulate.md)."""
    output = _output(ctx, output)
    names = _policies(policy_names)
    if fleet_from_config and (config_path is None or nodes_path is not None):
        raise ConfigError("--fleet-from-config needs --config, and replaces --nodes")
    if nodes_path is None and config_path is None:
        raise ConfigError(
            "give --nodes (the trace's node list) or --config (a gpupool configuration, "
            "whose pools are then the fleet)"
        )
    snapshot = governed.load(config_path) if config_path is not None else None
    pods = replay.accelerated(read_pod_list(pods_path), load)
    admission: replay.Admission = replay.admit_all
    if nodes_path is not None:
        nodes = trace.read_nodes(nodes_path)
    elif snapshot is not None:
        nodes = governed.fleet(snapshot.org)
    if snapshot is not None:
        pods = governed.assign(pods, snapshot.org, seed=seed, on_config_fleet=nodes_path is None)
        admission = governed.admission(snapshot)
    results: list[replay.ReplayResult] = []
    savings: list[replay.Saving | None] = []
    with _progress(_show_progress(progress), len(names), "replay") as advance:
        for name in names:
            results.append(replay.run(pods, nodes, name, admission=admission, seed=seed))
            savings.append(
                replay.saving(
                    pods, nodes, name, acceptance=acceptance, admission=admission, seed=seed
                )
                if needed
                else None
            )
            advance(1)
    departments = (
        [governed.departments(r, snapshot.org) for r in results] if snapshot is not None else []
    )
    if html_path is not None:
        report.write_html(
            html_path,
            savings=[(n, s) for n, s in zip(names, savings, strict=True) if s is not None],
            departments=departments[0] if departments else None,
            title=f"Replay: {pods_path.name}"
            + (f" with {config_path.name}" if config_path is not None else ""),
        )
    data = []
    for index, (result, saving) in enumerate(zip(results, savings, strict=True)):
        row = {**report.replay_data(result), "load": load}
        if saving is not None:
            row["needed"] = report.saving_data(saving)
        if snapshot is not None:
            row["governance"] = {
                "config": str(config_path),
                "fleet": "nodes" if nodes_path is not None else "config",
                "departments": departments[index],
            }
        data.append(row)
    caption = report.NO_GOVERNANCE
    if config_path is not None:
        caption = f"admission: gpupool's governance decision over {config_path}"
    tables: list[Any] = [report.replay_table(results, savings, caption=caption)]
    tables += [
        report.departments_table(name, d) for name, d in zip(names, departments, strict=False)
    ]
    _emit(output, data[0] if len(data) == 1 else data, Group(*tables))
    if html_path is not None and output == "table":
        click.echo(f"report: {html_path}")


@simulate.command("generate")
@click.option("--count", type=int, required=True, help="How many pods.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--arrivals-per-hour",
    type=float,
    default=synthetic.Mix().arrivals_per_hour,
    show_default=True,
)
@click.option("--departments", type=int, default=synthetic.Mix().departments, show_default=True)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write gpupool's CSV format.",
)
@handle_errors
def generate_command(
    count: int, seed: int, arrivals_per_hour: float, departments: int, out_path: Path
) -> None:
    """Write a synthetic workload in gpupool's CSV format, shaped like the Alibaba trace
    by default (distributions in docs/simulate.md)."""
    if arrivals_per_hour <= 0 or departments < 1:
        raise ConfigError("--arrivals-per-hour must be above 0 and --departments at least 1")
    mix = synthetic.Mix(arrivals_per_hour=arrivals_per_hour, departments=departments)
    pods = synthetic.generate(count, seed=seed, mix=mix)
    try:
        workload.write_workload(pods, out_path)
    except OSError as exc:
        raise ConfigError(f"cannot write the file: {exc.strerror}", source=str(out_path)) from exc
    click.echo(f"{out_path}: {len(pods)} pods")
