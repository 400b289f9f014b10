"""Exporter scrape latency and memory on a simulated node, against a prometheus_client floor.

For a simulated node of 8 GPUs with 1, 8 and 32 slices per GPU, this starts the real
exporter pieces in-process (simulated backend -> sampler thread at 1 s -> collector ->
HTTP server) and times full HTTP scrapes (GET /metrics, body read) while the sampler
keeps publishing new snapshots. In the same run it times the floor: a plain
prometheus_client registry holding the same number of static series (Gauges with the
same label sets) served by the same HTTP server, scraped alternately with the
exporter so that both see the same load on a shared machine. Peak RSS is the process's max RSS
(the exporter is the only thing this process runs besides the floor registries).

Budgets (issue 5): p99 <= 50 ms at 8 x 32, <= 2x the floor, RSS <= 120 MiB, growth from
8 x 1 to 8 x 32 about linear in the number of series.

    python bench/exporter.py [--quick]

Prints a table, then one JSON object as the last line; ``scrapes_per_shape`` says how
many scrapes of each (the exporter's and the floor's alike) its percentiles rest on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Gauge

from bench import stats
from exporter.backends import simulated
from exporter.collector import SnapshotCollector
from exporter.sampler import Sampler
from exporter.server import MetricsServer, timed_metrics_app

GPUS = 8
SHAPES = (1, 8, 32)


def _scrape_times(port: int, count: int) -> tuple[list[float], int, int]:
    """Milliseconds per full scrape over one keep-alive-less connection each time."""
    times = []
    size = 0
    series = 0
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        conn.close()
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return times, size, series


def _floor_registry(text_series: list[tuple[str, dict[str, str], float]]) -> CollectorRegistry:
    """A plain registry with the same series as static Gauges (the cheapest exposition)."""
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for name, labels, value in text_series:
        gauge = gauges.get(name)
        if gauge is None:
            gauge = Gauge(name, "floor", labelnames=sorted(labels), registry=registry)
            gauges[name] = gauge
        (gauge.labels(**labels) if labels else gauge).set(value)
    return registry


def _parse(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for family in registry.collect():
        for sample in family.samples:
            # The floor registry can only hold gauges; name them apart from the families.
            name = sample.name.replace("_total", "_t").replace("_bucket", "_b")
            name = name.replace("_count", "_c").replace("_sum", "_s").replace("_created", "_cr")
            out.append((name, dict(sample.labels), sample.value))
    return out


def run(quick: bool) -> dict[str, Any]:
    scrapes = 150 if quick else 400
    least = stats.min_samples(0.99)  # scrapes a p99 needs, whatever the deadline says
    rows = []
    result: dict[str, Any] = {}
    per_shape: dict[str, int] = {}
    for slices in SHAPES:
        node = simulated.SimulatedNode(
            simulated.Simulation.uniform(gpus=GPUS, slices_per_gpu=slices)
        )
        sampler = Sampler(
            backend=node,
            hostname="bench-node",
            interval_s=1.0,
            resolve=node.resolve,
            pods=node,
            podresources=node,
        )
        sampler.tick()
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(lambda s=sampler: s.snapshot))
        server = MetricsServer(timed_metrics_app(registry), address="127.0.0.1", port=0)
        server.start()
        floor_registry = _floor_registry(_parse(registry))
        floor_server = MetricsServer(timed_metrics_app(floor_registry), address="127.0.0.1", port=0)
        floor_server.start()
        sampler.start()  # new snapshots keep arriving while we scrape
        _scrape_times(server.port, 5)
        _scrape_times(floor_server.port, 5)
        # Alternate exporter and floor scrapes so both see the same (noisy) machine.
        times: list[float] = []
        floor_times: list[float] = []
        deadline = time.perf_counter() + (7.0 if quick else 120.0)
        for _ in range(scrapes):
            if len(times) >= least and time.perf_counter() > deadline:
                break  # --quick must end within 30 s even on a loaded machine
            ours, size, series = _scrape_times(server.port, 1)
            floor, _, floor_series = _scrape_times(floor_server.port, 1)
            times.extend(ours)
            floor_times.extend(floor)
        sampler.stop()
        server.stop()
        floor_server.stop()

        p50, p99 = stats.percentile(times, 0.5), stats.percentile(times, 0.99)
        f50, f99 = stats.percentile(floor_times, 0.5), stats.percentile(floor_times, 0.99)
        rows.append((f"{GPUS}x{slices}", series, size, p50, p99, f50, f99, p50 / f50))
        key = f"{GPUS}x{slices}"
        per_shape[key] = len(times)
        result[f"scrape_p50_ms_{key}"] = round(p50, 3)
        result[f"scrape_p99_ms_{key}"] = round(p99, 3)
        result[f"floor_p50_ms_{key}"] = round(f50, 3)
        result[f"floor_p99_ms_{key}"] = round(f99, 3)
        result[f"floor_ratio_{key}"] = round(p50 / f50, 3)
        result[f"floor_ratio_p99_{key}"] = round(p99 / f99, 3)
        result[f"series_{key}"] = series
        result[f"floor_series_{key}"] = floor_series

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_mib"] = round(rss_mib, 1)
    result["growth_p50_8x1_to_8x32"] = round(
        result["scrape_p50_ms_8x32"] / result["scrape_p50_ms_8x1"], 2
    )
    result["series_growth_8x1_to_8x32"] = round(result["series_8x32"] / result["series_8x1"], 2)
    result["scrapes_per_shape"] = per_shape

    print(
        f"{'node':>6} {'series':>7} {'bytes':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'floor p50':>9} {'floor p99':>9} {'ratio':>6} {'scrapes':>8}"
    )
    for name, series, size, p50, p99, f50, f99, ratio in rows:
        print(
            f"{name:>6} {series:>7} {size:>8} {p50:>8.2f} {p99:>8.2f} {f50:>9.2f} "
            f"{f99:>9.2f} {ratio:>6.2f} {per_shape[name]:>8}"
        )
    print(
        f"peak RSS {rss_mib:.1f} MiB; p50 growth 8x1 -> 8x32: "
        f"{result['growth_p50_8x1_to_8x32']}x for {result['series_growth_8x1_to_8x32']}x series"
    )
    print("budgets: p99 <= 50 ms at 8x32, <= 2x floor, RSS <= 120 MiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scrapes; ends within 30 s")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.quick)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
