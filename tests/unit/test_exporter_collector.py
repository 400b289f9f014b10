"""The collector renders the sampler's snapshot: DCGM names and labels, slices, self-metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pynvml
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import cgroups, collector, fields
from exporter.backends import simulated
from exporter.backends.nvml import NvmlBackend
from exporter.cli import exporter as exporter_command
from exporter.model import BackendReading
from exporter.pods import PodIndex, pod_from_json
from exporter.sampler import Sampler
from governance import contract
from tests.support.exporter import FakeGpu, FakeNvml, grant, make_pod_json

pytestmark = pytest.mark.unit


def _render(sampler: Sampler) -> str:
    registry = CollectorRegistry()
    registry.register(collector.SnapshotCollector(lambda: sampler.snapshot))
    return generate_latest(registry).decode()


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


@pytest.fixture
def sim_sampler() -> Sampler:
    node = simulated.SimulatedNode(
        simulated.load_simulation(simulated.DEFAULT_SIMULATION), clock=lambda: 1_000.0
    )
    sampler = Sampler(
        backend=node,
        hostname="sim-gpu-node-1",
        interval_s=1.0,
        resolve=node.resolve,
        pods=node,
        podresources=node,
    )
    sampler.tick()
    return sampler


def test_dcgm_fields_keep_exact_names_types_and_labels(sim_sampler: Sampler) -> None:
    text = _render(sim_sampler)
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION untyped" in text
    assert "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text
    assert "_total{" not in text.split("gpupool_exporter")[0].replace("VOL_TOTAL{", "")
    samples = _families(text)
    for field in fields.FIELDS:
        assert field.name in samples, field.name
        labels, _ = samples[field.name][0]
        assert set(contract.DCGM_LABELS) <= set(labels)
        assert labels[contract.DCGM_LABEL_HOSTNAME] == "sim-gpu-node-1"
    gpus = {labels["gpu"] for labels, _ in samples[contract.DCGM_FI_DEV_GPU_UTIL]}
    assert gpus == {"0", "1", "2", "3"}


def test_slices_carry_contract_labels_and_limits(sim_sampler: Sampler) -> None:
    samples = _families(_render(sim_sampler))
    limits = samples[contract.METRIC_SLICE_MEMORY_LIMIT_BYTES]
    assert all(set(labels) == set(contract.SLICE_LABELS) for labels, _ in limits)
    idle = [
        (labels, value)
        for labels, value in samples[contract.METRIC_SLICE_MEMORY_USED_BYTES]
        if labels["pod"] == "idle-reservation"
    ]
    assert idle == [(idle[0][0], 0.0)]
    assert idle[0][0]["department"] == "ml" and idle[0][0]["sku"] == "a100-half"
    allocated = {
        labels["gpu"]: value
        for labels, value in samples[contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO]
    }
    assert allocated == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 0.5}
    stray = samples[contract.METRIC_UNATTRIBUTED_PROCESSES]
    assert [(labels["reason"], value) for labels, value in stray] == [("not_a_pod", 2.0)]


def test_unattributed_processes_are_summed_per_gpu_and_reason_never_per_pid(
    sim_sampler: Sampler,
) -> None:
    samples = _families(_render(sim_sampler))
    memory = samples[contract.METRIC_UNATTRIBUTED_MEMORY_USED_BYTES]
    # the simulation runs two host processes on GPU 3: 1536 + 512 MiB, one series
    assert len(memory) == 1
    labels, value = memory[0]
    assert set(labels) == {"UUID", "Hostname", "reason"}
    processes = sim_sampler.snapshot.attribution.unattributed  # type: ignore[union-attr]
    assert len(processes) == 2 and len({p.pid for p in processes}) == 2
    assert labels["reason"] == "not_a_pod"
    assert value == sum(p.memory_used_bytes for p in processes)


def test_dcgm_series_of_a_gpu_one_container_holds_name_its_pod(sim_sampler: Sampler) -> None:
    samples = _families(_render(sim_sampler))
    by_gpu = {labels["gpu"]: labels for labels, _ in samples[contract.DCGM_FI_DEV_GPU_UTIL]}
    held = {
        gpu: (labels.get("namespace"), labels.get("pod"), labels.get("container"))
        for gpu, labels in by_gpu.items()
    }
    assert held == {
        "0": ("ml", "llm-train-0", "trainer"),  # one container on two whole GPUs
        "1": ("ml", "llm-train-0", "trainer"),
        "2": (None, None, None),  # three pods share GPU 2: their answer is gpupool_slice_*
        "3": ("ml", "idle-reservation", "worker"),  # granted, idle: still held
    }
    for field in fields.FIELDS:  # every DCGM field of a held GPU, not only utilisation
        gpu0 = [labels for labels, _ in samples[field.name] if labels["gpu"] == "0"]
        assert gpu0 and all(labels.get("pod") == "llm-train-0" for labels in gpu0), field.name
    health = samples[collector.GPU_HEALTHY]
    assert all("pod" not in labels for labels, _ in health)


def test_collect_before_first_sample_reports_down_and_touches_nothing() -> None:
    class Exploding:
        name = "exploding"

        def read(self) -> BackendReading:
            raise AssertionError("a scrape must not read the backend")

        def close(self) -> None:
            pass

    sampler = Sampler(backend=Exploding(), hostname="h")
    registry = CollectorRegistry()
    registry.register(collector.SnapshotCollector(lambda: sampler.snapshot))  # calls describe()
    assert _families(generate_latest(registry).decode())[collector.UP] == [({}, 0.0)]


def test_scrape_never_waits_on_a_hung_sampler() -> None:
    release = threading.Event()
    node = simulated.SimulatedNode(simulated.Simulation.uniform(gpus=1, slices_per_gpu=1))

    class Hanging:
        name = "hanging"
        calls = 0

        def read(self) -> BackendReading:
            Hanging.calls += 1
            if Hanging.calls > 1:
                release.wait(10)
            return node.read()

        def close(self) -> None:
            release.set()

    sampler = Sampler(backend=Hanging(), hostname="h", interval_s=1.0)
    sampler.tick()
    sampler.start()
    time.sleep(0.05)
    started = time.perf_counter()
    text = _render(sampler)
    assert time.perf_counter() - started < 0.5
    assert "DCGM_FI_DEV_GPU_UTIL" in text
    sampler.stop(timeout_s=0.1)


def test_nvml_errors_render_as_health_and_error_counters() -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-a", errors={"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_GPU_IS_LOST}
            ),
            FakeGpu(uuid="GPU-b", minor=1, processes=[(4242, 512 * 1024 * 1024, None)]),
        ]
    )
    sampler = Sampler(
        backend=NvmlBackend(fake), hostname="node-1", resolve=lambda pid: cgroups.MISS_NOT_A_POD
    )
    sampler.tick()
    sampler.tick()
    samples = _families(_render(sampler))
    health = {labels["UUID"]: value for labels, value in samples[collector.GPU_HEALTHY]}
    assert health == {"GPU-a": 0.0, "GPU-b": 1.0}
    errors = samples[collector.BACKEND_ERRORS + "_total"]
    assert ({"call": "nvmlDeviceGetPowerUsage", "code": "NVML_ERROR_GPU_IS_LOST"}, 2.0) in errors
    assert contract.DCGM_FI_DEV_POWER_USAGE in samples
    assert [labels["UUID"] for labels, _ in samples[contract.DCGM_FI_DEV_POWER_USAGE]] == ["GPU-b"]
    stray = samples[contract.METRIC_UNATTRIBUTED_MEMORY_USED_BYTES]
    assert stray == [
        ({"UUID": "GPU-b", "Hostname": "node-1", "reason": "not_a_pod"}, 512 * 1024 * 1024)
    ]
    assert samples[collector.ATTRIBUTION_MISSES + "_total"] == [({"reason": "not_a_pod"}, 2.0)]


def test_a_slice_that_ends_disappears_from_the_next_scrape() -> None:
    index = PodIndex()
    obj = make_pod_json(name="short", uid="u-1", grants={"main": grant(1024, 10)})
    index.apply("ADDED", obj)
    node = simulated.SimulatedNode(simulated.Simulation.uniform(gpus=1, slices_per_gpu=1))
    sampler = Sampler(backend=node, hostname="h", pods=index)
    sampler.tick()
    assert 'pod="short"' in _render(sampler)
    index.apply("DELETED", obj)
    sampler.tick()
    assert 'pod="short"' not in _render(sampler)
    assert pod_from_json(obj).uid == "u-1"


def test_sampler_refuses_an_interval_below_the_floor() -> None:
    node = simulated.SimulatedNode(simulated.Simulation.uniform(gpus=1, slices_per_gpu=1))
    with pytest.raises(ValueError, match="1 s floor"):
        Sampler(backend=node, hostname="h", interval_s=0.2)


def test_cli_rejects_interval_below_floor_and_bad_simulation(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(exporter_command, ["--backend", "simulated", "--interval", "0.5"])
    assert result.exit_code == 2 and "floor" in result.output
    bad = tmp_path / "node.yaml"
    bad.write_text(
        "gpus: {count: 2}\npods:\n  - namespace: a\n    name: b\n    containers:\n"
        "      - {name: c, gpus: [5], memory_mib: 1, compute_pct: 1}\n"
    )
    result = runner.invoke(exporter_command, ["--backend", "simulated", "--simulate", str(bad)])
    assert result.exit_code == 2
    assert "gpu 5 is not an index below gpus.count=2" in result.output
    result = runner.invoke(exporter_command, ["--backend", "nvml", "--simulate", str(bad)])
    assert result.exit_code == 2 and "--simulate needs --backend simulated" in result.output


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        pytest.param("[]", "expected a mapping", id="not-a-mapping"),
        pytest.param("gpus: {count: 0}", "at least 1", id="no-gpus"),
        pytest.param("pods: [{namespace: a, name: b}]", "missing 'containers'", id="no-containers"),
        pytest.param(
            "pods: [{namespace: a, name: b, containers: [{name: c, gpus: [0], "
            "memory_mib: big, compute_pct: 1}]}]",
            "'memory_mib' must be int",
            id="bad-type",
        ),
    ],
)
def test_simulation_yaml_errors_name_the_bad_key(yaml_text: str, message: str) -> None:
    import yaml

    with pytest.raises(simulated.SimulationError, match=message):
        simulated.parse_simulation(yaml.safe_load(yaml_text))


def test_simulated_load_varies_over_time_and_energy_only_grows() -> None:
    now = [0.0]
    node = simulated.SimulatedNode(
        simulated.Simulation.uniform(gpus=1, slices_per_gpu=4), clock=lambda: now[0]
    )
    seen = []
    energy = []
    for step in range(6):
        now[0] = step * 50.0
        gpu = node.read().gpus[0]
        seen.append(gpu.values[contract.DCGM_FI_DEV_GPU_UTIL])
        energy.append(gpu.values[contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION])
    assert len(set(seen)) > 1
    assert energy == sorted(energy) and energy[-1] > 0


def test_mig_instances_render_with_gpu_i_profile_and_id() -> None:
    from tests.support.exporter import FakeMig

    fake = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-p",
                mig=[
                    FakeMig(uuid="MIG-1", instance_id=3, name="NVIDIA H100 80GB HBM3 MIG 1g.10gb")
                ],
            )
        ]
    )
    sampler = Sampler(backend=NvmlBackend(fake), hostname="n")
    sampler.tick()
    used = _families(_render(sampler))[contract.DCGM_FI_DEV_FB_USED]
    mig = [labels for labels, _ in used if contract.DCGM_LABEL_GPU_I_ID in labels]
    whole = [labels for labels, _ in used if contract.DCGM_LABEL_GPU_I_ID not in labels]
    assert len(mig) == 1 and len(whole) == 1
    assert mig[0][contract.DCGM_LABEL_GPU_I_PROFILE] == "1g.10gb"
    assert mig[0][contract.DCGM_LABEL_GPU_I_ID] == "3"
    assert mig[0][contract.DCGM_LABEL_UUID] == "GPU-p"


def test_podresources_failure_is_counted_and_placement_falls_back() -> None:
    from exporter.podresources import PodResourcesError

    class Broken:
        def gpu_assignments(self) -> dict[tuple[str, str, str], tuple[str, ...]]:
            raise PodResourcesError("PodResources List failed: unavailable")

    node = simulated.SimulatedNode(simulated.Simulation.uniform(gpus=1, slices_per_gpu=2))
    sampler = Sampler(
        backend=node, hostname="h", resolve=node.resolve, pods=node, podresources=Broken()
    )
    sampler.tick()
    samples = _families(_render(sampler))
    assert ({"call": "PodResources.List", "code": "PodResourcesError"}, 1.0) in samples[
        collector.BACKEND_ERRORS + "_total"
    ]
    placed = {labels["UUID"] for labels, _ in samples[contract.METRIC_SLICE_MEMORY_LIMIT_BYTES]}
    assert placed == {node.gpu_uuids[0]}  # from the processes instead


def test_openmetrics_rendering_keeps_dcgm_names_too(sim_sampler: Sampler) -> None:
    # Prometheus asks for OpenMetrics first; counters must not gain _total there either.
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    registry = CollectorRegistry()
    registry.register(collector.SnapshotCollector(lambda: sim_sampler.snapshot))
    text = om_latest(registry).decode()
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION unknown" in text
    assert "\nDCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{" in text
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in text
    assert text.endswith("# EOF\n")


def test_snapshot_age_comes_from_the_injected_clock(sim_sampler: Sampler) -> None:
    snapshot = sim_sampler.snapshot
    assert snapshot is not None
    registry = CollectorRegistry()
    registry.register(
        collector.SnapshotCollector(lambda: snapshot, clock=lambda: snapshot.taken_at + 7.5)
    )
    samples = _families(generate_latest(registry).decode())
    assert samples[collector.SNAPSHOT_AGE] == [({}, 7.5)]
