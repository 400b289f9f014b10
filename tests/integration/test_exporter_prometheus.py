"""The running exporter (simulated node) scraped by a real Prometheus, checked by promtool."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from governance import contract
from tests.support.exporter import (
    PROMETHEUS,
    PROMTOOL,
    free_port,
    running_prometheus,
    start_exporter_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "tests" / "data" / "exporter_dashboard_12239.json"

# promtool lints names that dcgm-exporter itself chose (camelCase labels such as
# modelName, a counter named ..._COUNTER); they are kept on purpose for compatibility.
ALLOWED_LINT = (
    re.compile(r"label names should be written in 'snake_case' not 'camelCase'$"),
    re.compile(r"^DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'$"),
)


@pytest.fixture(scope="module")
def exporter_url() -> Iterator[str]:
    port = free_port()
    process = start_exporter_process(port, "simulated")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if b"gpupool_exporter_up 1.0" in response.read():
                        break
            except OSError:
                pass
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"exporter exited with {process.returncode}: {stderr}")
            if time.monotonic() > deadline:
                pytest.fail("exporter did not publish a snapshot within 15 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="module")
def prometheus(exporter_url: str) -> Iterator[object]:
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"prometheus is not installed ({PROMETHEUS}); CI installs Debian's package")
    target = exporter_url.removeprefix("http://").removesuffix("/metrics")
    with running_prometheus(target) as prom:
        yield prom


def test_promtool_accepts_the_exposition(exporter_url: str) -> None:
    if not Path(PROMTOOL).exists():
        pytest.skip(f"promtool is not installed ({PROMTOOL})")
    with urllib.request.urlopen(exporter_url, timeout=5) as response:
        body = response.read()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode in (0, 3), output  # 3: lint findings only, no parse error
    findings = [line for line in output.splitlines() if line.strip()]
    unexpected = [f for f in findings if not any(rule.search(f) for rule in ALLOWED_LINT)]
    assert unexpected == [], unexpected


def test_prometheus_stores_per_slice_series_with_contract_labels(prometheus: object) -> None:
    result = prometheus.wait_for(  # type: ignore[attr-defined]
        f'{contract.METRIC_SLICE_MEMORY_LIMIT_BYTES}{{pod="embedder-7c9f"}}'
    )
    assert len(result) == 1
    labels = result[0]["metric"]
    assert {k: labels[k] for k in contract.SLICE_LABELS} == {
        "namespace": "search",
        "pod": "embedder-7c9f",
        "container": "server",
        "department": "product",
        "queue": "batch",
        "sku": "a100-quarter",
        "UUID": labels["UUID"],
        "Hostname": "sim-gpu-node-1",
    }
    assert labels["UUID"].startswith("GPU-")
    assert float(result[0]["value"][1]) == 20480 * 1024 * 1024
    used = prometheus.wait_for(  # type: ignore[attr-defined]
        f"sum by (department) ({contract.METRIC_SLICE_MEMORY_USED_BYTES})"
    )
    assert {r["metric"]["department"] for r in used} == {"ml", "product"}
    held = prometheus.wait_for(  # type: ignore[attr-defined]
        'DCGM_FI_DEV_GPU_UTIL{pod!=""}'
    )
    # dcgm-exporter's Kubernetes mapping: GPUs 0, 1 (one trainer) and 3 (one idle worker)
    assert sorted((r["metric"]["gpu"], r["metric"]["pod"]) for r in held) == [
        ("0", "llm-train-0"),
        ("1", "llm-train-0"),
        ("3", "idle-reservation"),
    ]
    waste = prometheus.wait_for(  # type: ignore[attr-defined]
        f"{contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO} - on(UUID) (DCGM_FI_DEV_GPU_UTIL / 100)"
    )
    assert len(waste) == 4


def test_every_query_of_dashboard_12239_returns_data(prometheus: object) -> None:
    spec = json.loads(DASHBOARD.read_text())
    for title, expr in spec["panels"].items():
        query = expr.replace("$instance", ".+").replace("$gpu", ".+")
        result = prometheus.wait_for(query)  # type: ignore[attr-defined]
        assert result, f"panel {title!r}: {query} returned no data"
    for variable in spec["variables"]:
        metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable).groups()  # type: ignore[union-attr]
        result = prometheus.wait_for(f"count by ({label}) ({metric})")  # type: ignore[attr-defined]
        assert result and all(r["metric"].get(label) for r in result), variable
