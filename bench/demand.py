"""Reading a pod's GPU demand: the request-form registry against the old if-chain.

Issue 15 moved the request forms out of ``admission/demand.py``'s ``_container_request``
into one module each (``governance/forms/``). This times ``demand.pod_demand`` (the
registry) against ``tests/property/reference_demand.pod_demand`` (the old chain, kept
verbatim as the property test's reference) in one process, on the same parsed pods:
one pod per form as users write it, with a CPU-only sidecar, plus a four-container pod
and a pod refused for a broken quantity. Rounds alternate old and new, so both see the
same machine; the ratio new/old of the median round is the figure (1.0 = no change).
Prints a table, then one JSON object as the last line. ``--quick`` ends within 30 s.

    python bench/demand.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admission import demand
from admission.review import Pod, parse_pod
from governance import backends
from tests.property import reference_demand

NAMES = demand.GpuNames.of(backends.all_gpu_resources())
SIDECAR = {"name": "log", "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}


def _pod(limits: dict[str, Any], labels: dict[str, str] | None = None, n: int = 1) -> Pod:
    containers = [{"name": f"main-{i}", "resources": {"limits": limits}} for i in range(n)]
    body = {"metadata": {"labels": labels or {}}, "spec": {"containers": [*containers, SIDECAR]}}
    return parse_pod(body, namespace="ml")


PODS: dict[str, Pod] = {
    "sku-label": _pod({"nvidia.com/gpu": "2", "cpu": "4"}, {"gpupool.io/sku": "small"}),
    "sku-resource": _pod({"gpupool.io/small": "1", "cpu": "4"}),
    "hami": _pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8k", "nvidia.com/gpucores": "30"}),
    "plain": _pod({"nvidia.com/gpu": "1", "cpu": "4"}),
    "4-containers": _pod({"nvidia.com/gpu": "1"}, {"gpupool.io/sku": "small"}, n=4),
    "refused": _pod({"nvidia.com/gpu": "1500m"}),
}


def _round_us(read: Callable[[Pod, demand.GpuNames], object], pod: Pod, calls: int) -> float:
    """Microseconds per call; the loop adds as little as it can to what it times."""
    names = NAMES
    start = time.perf_counter()
    for _ in range(calls):
        try:  # noqa: SIM105 - free when nothing is raised; suppress() would be timed
            read(pod, names)
        except demand.InvalidDemand:
            pass
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds: ends within 30 s")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (15 if args.quick else 60)
    calls = 2_000

    results: dict[str, dict[str, float]] = {}
    print(f"{rounds} rounds of {calls} calls per pod, old and new alternating")
    print(f"{'pod':14} {'old us':>8} {'new us':>8} {'new/old':>8}")
    for name, pod in PODS.items():
        _round_us(demand.pod_demand, pod, 100)  # warm both paths
        _round_us(reference_demand.pod_demand, pod, 100)
        old: list[float] = []
        new: list[float] = []
        for i in range(rounds):
            pair = [(old, reference_demand.pod_demand), (new, demand.pod_demand)]
            for sink, read in pair if i % 2 == 0 else reversed(pair):
                sink.append(_round_us(read, pod, calls))
        old_us, new_us = statistics.median(old), statistics.median(new)
        results[name] = {"old_us": old_us, "new_us": new_us, "ratio": new_us / old_us}
        print(f"{name:14} {old_us:8.2f} {new_us:8.2f} {new_us / old_us:8.3f}")
    ratio = statistics.geometric_mean(r["ratio"] for r in results.values())
    print(f"{'geometric mean':14} {'':8} {'':8} {ratio:8.3f}")
    print(json.dumps({"bench": "demand", "rounds": rounds, "ratio": ratio, "pods": results}))


if __name__ == "__main__":
    main()
