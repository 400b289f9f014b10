"""gpupool's own workload format: CSV or JSON lines, one pod per row.

Columns (JSON keys), all per pod; only ``gpus`` is required:

=================  =========================================================  =========
column             meaning                                                    default
=================  =========================================================  =========
name               the pod's name                                             pod-<row>
arrival_s          when it is created, seconds from any origin                none
duration_s         how long it runs once started, seconds; empty: to the end  to the end
department, queue  who asks (the replay's admission sees them)                empty
sku                the SKU it asks for (with ``--config``)                    smallest
                                                                              that fits
subject            who creates it (with ``--config``, RBAC is checked):       anyone
                   ``user:NAME``, ``group:NAME``, a service account           allowed
gpus               how many GPUs                                              required
gpu_fraction       share of each GPU, above 0 and at most 1                   1
gpu_memory_mib     GPU memory per GPU instead of a fraction (needs gpu_model) -
gpu_model          GPU models it may run on, ``A100|H100``; empty: any        any
cpu_milli          CPU, thousandths of a core                                 0
memory_mib         host memory                                                0
=================  =========================================================  =========

A GPU memory request becomes a fraction of the smallest card among the allowed
models (so the pod fits wherever it is allowed), rounded up to a thousandth; the card
sizes come from :data:`MODEL_MEMORY_MIB` or from the caller. A file whose name ends in
``.jsonl`` or ``.json`` is JSON lines; anything else is CSV.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from governance.errors import ConfigError
from simulator.trace import MILLI_PER_GPU, Pod, parse_models, validate_pod

MODEL_MEMORY_MIB: Mapping[str, int] = {
    "T4": 15 * 1024,
    "P100": 16 * 1024,
    "V100M16": 16 * 1024,
    "V100M32": 32 * 1024,
    "A10": 24 * 1024,
    "L4": 24 * 1024,
    "A100-40GB": 40 * 1024,
    "A100": 80 * 1024,
    "A100-80GB": 80 * 1024,
    "H100": 80 * 1024,
    "H200": 141 * 1024,
}
"""GPU memory per card, MiB, of models whose memory is public (the trace's G2 and G3
are not: give their sizes to :func:`parse_workload`)."""

COLUMNS = (
    "name",
    "arrival_s",
    "duration_s",
    "department",
    "queue",
    "sku",
    "subject",
    "gpus",
    "gpu_fraction",
    "gpu_memory_mib",
    "gpu_model",
    "cpu_milli",
    "memory_mib",
)


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _number(row: Mapping[str, Any], column: str, *, source: str, where: str) -> float | None:
    raw = _text(row, column)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{column} is {raw!r}; it must be a number", source=source, path=where
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{column} is {raw}; it must be a finite number, 0 or more", source=source, path=where
        )
    return value


def _whole(row: Mapping[str, Any], column: str, *, source: str, where: str) -> int | None:
    value = _number(row, column, source=source, where=where)
    if value is not None and not value.is_integer():
        raise ConfigError(
            f"{column} is {value}; it must be a whole number", source=source, path=where
        )
    return None if value is None else int(value)


def parse_workload(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str = "workload",
    model_memory_mib: Mapping[str, int] = MODEL_MEMORY_MIB,
) -> list[Pod]:
    """Pods from rows of gpupool's format (dicts of column -> value), validated."""
    pods: list[Pod] = []
    for number, row in enumerate(rows, start=1):
        where = f"row {number}"
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise ConfigError(
                f"unknown column(s) {', '.join(unknown)}; the format has {', '.join(COLUMNS)}",
                source=source,
                path=where,
            )
        gpus = _whole(row, "gpus", source=source, where=where)
        if gpus is None:
            raise ConfigError("gpus is required (0 for a CPU-only pod)", source=source, path=where)
        models = parse_models(_text(row, "gpu_model"))
        fraction = _number(row, "gpu_fraction", source=source, where=where)
        memory = _number(row, "gpu_memory_mib", source=source, where=where)
        if fraction is not None and memory is not None:
            raise ConfigError(
                "give gpu_fraction or gpu_memory_mib, not both", source=source, path=where
            )
        if memory is not None:
            fraction = _fraction_of_memory(memory, models, model_memory_mib, source, where)
        if fraction is not None and not 0 < fraction <= 1:
            raise ConfigError(
                f"gpu_fraction is {fraction}; it must be above 0 and at most 1",
                source=source,
                path=where,
            )
        milli = math.ceil(round((1.0 if fraction is None else fraction) * MILLI_PER_GPU, 6))
        pod = Pod(
            name=_text(row, "name") or f"pod-{number}",
            cpu_milli=_whole(row, "cpu_milli", source=source, where=where) or 0,
            memory_mib=_whole(row, "memory_mib", source=source, where=where) or 0,
            num_gpu=gpus,
            gpu_milli=milli if gpus else 0,
            gpu_models=models,
            arrival_s=_number(row, "arrival_s", source=source, where=where),
            duration_s=_number(row, "duration_s", source=source, where=where),
            department=_text(row, "department"),
            queue=_text(row, "queue"),
            sku=_text(row, "sku"),
            subject=_text(row, "subject"),
        )
        pods.append(validate_pod(pod, source=source, where=where))
    if not pods:
        raise ConfigError("the workload has no pods", source=source)
    return pods


def _fraction_of_memory(
    memory_mib: float,
    models: tuple[str, ...],
    model_memory_mib: Mapping[str, int],
    source: str,
    where: str,
) -> float:
    if not models:
        raise ConfigError(
            "gpu_memory_mib needs gpu_model: the same memory is a different share of "
            "different cards",
            source=source,
            path=where,
        )
    unknown = [m for m in models if m not in model_memory_mib]
    if unknown:
        raise ConfigError(
            f"the memory of GPU model(s) {', '.join(unknown)} is not known; known: "
            f"{', '.join(sorted(model_memory_mib))}",
            source=source,
            path=where,
        )
    smallest = min(model_memory_mib[m] for m in models)
    if memory_mib > smallest:
        raise ConfigError(
            f"gpu_memory_mib {memory_mib:g} is more than the {smallest} MiB of the smallest "
            "allowed card",
            source=source,
            path=where,
        )
    return memory_mib / smallest


def read_workload(
    path: Path, *, model_memory_mib: Mapping[str, int] = MODEL_MEMORY_MIB
) -> list[Pod]:
    """Read gpupool's format from ``path`` (JSON lines for .jsonl/.json, else CSV)."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=source) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a text file: {exc}", source=source) from exc
    rows: list[Mapping[str, Any]]
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"not JSON: {exc.msg}", source=source, path=f"line {number}"
                ) from exc
            if not isinstance(value, dict):
                raise ConfigError(
                    "each line must be a JSON object", source=source, path=f"line {number}"
                )
            rows.append(value)
    else:
        rows = list(csv.DictReader(text.splitlines()))
    return parse_workload(rows, source=source, model_memory_mib=model_memory_mib)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def to_rows(pods: Iterable[Pod]) -> list[dict[str, str]]:
    """Pods as rows of gpupool's format (what :func:`read_workload` reads back)."""
    rows = []
    for pod in pods:
        rows.append(
            {
                "name": pod.name,
                "arrival_s": _seconds(pod.arrival_s),
                "duration_s": _seconds(pod.duration_s),
                "department": pod.department,
                "queue": pod.queue,
                "sku": pod.sku,
                "subject": pod.subject,
                "gpus": str(pod.num_gpu),
                "gpu_fraction": repr(pod.gpu_milli / MILLI_PER_GPU) if pod.num_gpu else "",
                "gpu_memory_mib": "",
                "gpu_model": "|".join(pod.gpu_models),
                "cpu_milli": str(pod.cpu_milli),
                "memory_mib": str(pod.memory_mib),
            }
        )
    return rows


def write_workload(pods: Iterable[Pod], path: Path) -> None:
    """Write gpupool's CSV format."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(to_rows(pods))
