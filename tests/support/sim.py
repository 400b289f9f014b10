"""Builders for the simulator's values: pods, nodes, and where the trace lives.

Small realistic defaults, so a test names only what it is about.
"""

from __future__ import annotations

from pathlib import Path

from simulator.trace import DEFAULT_NODE_LIST, DEFAULT_POD_LIST, Node, Pod, shared_trace_dir

REPOSITORY = Path(__file__).resolve().parents[2]
TRACE_DIR = shared_trace_dir(REPOSITORY)
TRACE_PODS = TRACE_DIR / DEFAULT_POD_LIST
TRACE_NODES = TRACE_DIR / DEFAULT_NODE_LIST


def trace_missing() -> str | None:
    """Why the Alibaba trace cannot be read here, or None when it can."""
    for path in (TRACE_PODS, TRACE_NODES):
        if not path.is_file():
            return f"the Alibaba trace is not at {path} (../shared/data next to the repository)"
    return None


def make_pod(
    name: str = "p",
    *,
    cpu: int = 1000,
    memory: int = 1024,
    gpus: int = 1,
    milli: int | None = None,
    models: tuple[str, ...] = (),
    arrival: float | None = None,
    duration: float | None = None,
    department: str = "",
    queue: str = "",
    sku: str = "",
    subject: str = "",
) -> Pod:
    """A pod of ``gpus`` GPUs, ``milli`` thousandths each (default: whole cards)."""
    return Pod(
        name=name,
        cpu_milli=cpu,
        memory_mib=memory,
        num_gpu=gpus,
        gpu_milli=(1000 if milli is None else milli) if gpus else 0,
        gpu_models=models,
        arrival_s=arrival,
        duration_s=duration,
        department=department,
        queue=queue,
        sku=sku,
        subject=subject,
    )


def make_node(
    name: str = "n",
    *,
    gpus: int = 2,
    cpu: int = 32_000,
    memory: int = 128 * 1024,
    model: str = "T4",
) -> Node:
    return Node(name=name, cpu_milli=cpu, memory_mib=memory, gpus=gpus, model=model)
