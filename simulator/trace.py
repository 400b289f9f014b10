"""The Alibaba GPU trace (cluster-trace-gpu-v2023, "openb"): its pod list and node list.

Read natively, as published: a pod list needs only ``name, cpu_milli, memory_mib,
num_gpu, gpu_milli`` (the trace's variants drop the other columns); ``gpu_spec`` (the
GPU models a pod may run on, ``V100M16|V100M32``, empty for any), ``creation_time`` and
``deletion_time`` (seconds) are used when present. A node list needs ``sn, cpu_milli,
memory_mib, gpu, model``.

``gpu_milli`` is the share of *one* GPU, in thousandths, that each of the pod's
``num_gpu`` GPUs gives it: a GPU-sharing pod asks for one GPU and less than 1000; a
multi-GPU pod asks for whole cards (1000 each). Reading a file (:func:`read_pods`,
:func:`read_nodes`) is separate from parsing rows (:func:`parse_pods`,
:func:`parse_nodes`) so tests and generators build pods without files.

Errors: a row that breaks these rules raises :class:`governance.errors.ConfigError`
naming the file, the line and the column, and saying what is allowed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from governance.errors import ConfigError

MILLI_PER_GPU = 1000
"""A whole GPU, in the trace's thousandths."""

POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")


@dataclass(frozen=True, kw_only=True)
class Pod:
    """One pod's request, and when it lives (for the replay; None when unknown).

    ``gpu_milli`` is per GPU: ``num_gpu`` GPUs of ``gpu_milli`` thousandths each.
    ``gpu_models`` empty means any model. ``department``, ``queue``, ``sku`` and
    ``subject`` (who asks, a role-binding subject) come from gpupool's own format or
    from :mod:`simulator.governed`'s mapping; the Alibaba trace has none of them.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int = 0
    gpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()
    arrival_s: float | None = None
    duration_s: float | None = None
    department: str = ""
    queue: str = ""
    sku: str = ""
    subject: str = ""

    @property
    def gpu_milli_total(self) -> int:
        """What the pod takes from the fleet's GPU capacity, in thousandths of a GPU."""
        return self.num_gpu * self.gpu_milli

    @property
    def shares_gpu(self) -> bool:
        return self.num_gpu == 1 and self.gpu_milli < MILLI_PER_GPU

    def as_whole_cards(self) -> Pod:
        """The same pod under whole-card allocation: every GPU it touches is all its own."""
        if self.num_gpu == 0 or self.gpu_milli == MILLI_PER_GPU:
            return self
        return replace(self, gpu_milli=MILLI_PER_GPU)


@dataclass(frozen=True, kw_only=True)
class Node:
    """One node of the fleet: its CPU, memory and GPUs (all of one model)."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


def validate_pod(pod: Pod, *, source: str, where: str) -> Pod:
    """Check the rules every pod list shares (the trace's and gpupool's own)."""

    def bad(message: str) -> ConfigError:
        return ConfigError(message, source=source, path=where)

    if pod.cpu_milli < 0 or pod.memory_mib < 0:
        raise bad("cpu_milli and memory_mib cannot be negative")
    if not 0 <= pod.num_gpu <= 64:
        raise bad(f"num_gpu is {pod.num_gpu}; it must be between 0 and 64")
    if pod.num_gpu == 0 and pod.gpu_milli != 0:
        raise bad(f"a pod with num_gpu 0 asks for gpu_milli {pod.gpu_milli}; write 0")
    if pod.num_gpu > 0 and not 0 < pod.gpu_milli <= MILLI_PER_GPU:
        raise bad(
            f"gpu_milli is {pod.gpu_milli}; a GPU pod asks for 1 to 1000 thousandths of "
            "each of its GPUs"
        )
    if pod.num_gpu > 1 and pod.gpu_milli != MILLI_PER_GPU:
        raise bad(
            f"a pod with {pod.num_gpu} GPUs asks for gpu_milli {pod.gpu_milli}; only "
            "one-GPU pods share a GPU, so multi-GPU pods take 1000 of each"
        )
    if pod.duration_s is not None and pod.duration_s < 0:
        raise bad("the pod ends before it starts (deletion before creation)")
    return pod


def _int(row: Mapping[str, str | None], column: str, *, source: str, where: str) -> int:
    raw = (row.get(column) or "").strip()
    try:
        return int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if value.is_integer():
            return int(value)
        raise ConfigError(
            f"{column} is {raw!r}; it must be a whole number", source=source, path=where
        ) from None


def _optional_float(
    row: Mapping[str, str | None], column: str, *, source: str, where: str
) -> float | None:
    raw = (row.get(column) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(
            f"{column} is {raw!r}; it must be a number of seconds", source=source, path=where
        ) from None


def _require_columns(header: Sequence[str] | None, required: Sequence[str], *, source: str) -> None:
    missing = [c for c in required if c not in (header or ())]
    if missing:
        raise ConfigError(
            f"missing column(s) {', '.join(missing)}; the file has "
            f"{', '.join(header or ()) or 'no header'} and needs at least "
            f"{', '.join(required)}",
            source=source,
        )


def parse_models(raw: str | None) -> tuple[str, ...]:
    """``V100M16|V100M32`` -> ("V100M16", "V100M32"); empty -> () meaning any model."""
    return tuple(part.strip() for part in (raw or "").split("|") if part.strip())


def parse_pods(
    rows: Iterable[Mapping[str, str | None]],
    *,
    source: str = "pods",
    header: Sequence[str] | None = None,
) -> list[Pod]:
    """Pods from the trace's rows (dicts of column -> text), validated, in file order."""
    if header is not None:
        _require_columns(header, POD_COLUMNS, source=source)
    pods: list[Pod] = []
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        name = (row.get("name") or "").strip()
        if not name:
            raise ConfigError("the pod has no name", source=source, path=where)
        created = _optional_float(row, "creation_time", source=source, where=where)
        deleted = _optional_float(row, "deletion_time", source=source, where=where)
        duration = deleted - created if created is not None and deleted is not None else None
        pod = Pod(
            name=name,
            cpu_milli=_int(row, "cpu_milli", source=source, where=where),
            memory_mib=_int(row, "memory_mib", source=source, where=where),
            num_gpu=_int(row, "num_gpu", source=source, where=where),
            gpu_milli=_int(row, "gpu_milli", source=source, where=where),
            gpu_models=parse_models(row.get("gpu_spec")),
            arrival_s=created,
            duration_s=duration,
        )
        pods.append(validate_pod(pod, source=source, where=where))
    if not pods:
        raise ConfigError("the pod list has no pods", source=source)
    return pods


def parse_nodes(
    rows: Iterable[Mapping[str, str | None]],
    *,
    source: str = "nodes",
    header: Sequence[str] | None = None,
) -> list[Node]:
    """Nodes from the trace's node-list rows. Nodes without GPUs are kept (CPU pods
    may run there); a GPU node must name its model."""
    if header is not None:
        _require_columns(header, NODE_COLUMNS, source=source)
    nodes: list[Node] = []
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        name = (row.get("sn") or "").strip()
        if not name:
            raise ConfigError("the node has no name (column sn)", source=source, path=where)
        node = Node(
            name=name,
            cpu_milli=_int(row, "cpu_milli", source=source, where=where),
            memory_mib=_int(row, "memory_mib", source=source, where=where),
            gpus=_int(row, "gpu", source=source, where=where),
            model=(row.get("model") or "").strip(),
        )
        if node.cpu_milli < 0 or node.memory_mib < 0 or not 0 <= node.gpus <= 64:
            raise ConfigError(
                "cpu_milli and memory_mib cannot be negative, and gpu is 0 to 64",
                source=source,
                path=where,
            )
        if node.gpus and node.model in ("", "nan"):
            raise ConfigError(
                f"node {name} has {node.gpus} GPUs but no model", source=source, path=where
            )
        nodes.append(node)
    if not any(n.gpus for n in nodes):
        raise ConfigError("the node list has no GPU node", source=source)
    return nodes


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str | None]]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or ()), rows
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a CSV file: {exc}", source=str(path)) from exc


def read_pods(path: Path) -> list[Pod]:
    """The pod list of the trace's format (any of its published variants)."""
    header, rows = _read_csv(path)
    return parse_pods(rows, source=str(path), header=header)


def read_nodes(path: Path) -> list[Node]:
    header, rows = _read_csv(path)
    return parse_nodes(rows, source=str(path), header=header)


def shared_trace_dir(repository_root: Path) -> Path:
    """Where the project keeps the trace (never a copy inside the repository):
    ``../shared/data/alibaba-gpu-2023`` next to the repository, or the nearest such
    folder further up (a worktree in a subfolder shares its checkout's data)."""
    relative = Path("shared") / "data" / "alibaba-gpu-2023"
    for folder in repository_root.resolve().parents:
        if (folder / relative).is_dir():
            return folder / relative
    return repository_root.resolve().parent / relative


DEFAULT_POD_LIST = "openb_pod_list_default.csv"
DEFAULT_NODE_LIST = "openb_node_list_gpu_node.csv"
