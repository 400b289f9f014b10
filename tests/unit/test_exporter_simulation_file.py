"""The simulated node follows its file (``gpupool demo`` rewrites it as pods come and go)
and, under ``--kubernetes``, attributes its processes to pods the API server describes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.backends import simulated
from exporter.cli import exporter as exporter_command
from exporter.collector import SnapshotCollector
from exporter.pods import PodIndex
from exporter.sampler import Sampler
from governance import contract
from tests.support.exporter import grant, make_pod_json

pytestmark = pytest.mark.unit

UID = "0b6f5c1e-8d1a-4c5e-9a51-7f3e2d1c0b9a"
CONTAINER_ID = "c" * 64


def _pod(name: str, *, gpus: list[int], uid: str = "", container_id: str = "") -> dict[str, object]:
    container: dict[str, object] = {
        "name": "main",
        "gpus": gpus,
        "memory_mib": 20480,
        "compute_pct": 25,
        "load": 0.5,
    }
    if container_id:
        container["id"] = container_id
    pod: dict[str, object] = {
        "namespace": "ml",
        "name": name,
        "department": "ml",
        "queue": "finetune",
        "sku": "a100-quarter",
        "containers": [container],
    }
    if uid:
        pod["uid"] = uid
    return pod


def _write(path: Path, pods: list[dict[str, object]], *, count: int = 2) -> None:
    """Write the file as the demo does: a new file renamed over the old one."""
    document = {"hostname": "sim-a100-hami-1", "gpus": {"count": count}, "pods": pods}
    staged = path.with_suffix(".tmp")
    staged.write_text(yaml.safe_dump(document))
    os.replace(staged, path)


def _samples(sampler: Sampler) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: sampler.snapshot))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_a_rewritten_file_is_read_at_the_next_sample_and_processes_keep_their_pids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node.yaml"
    _write(path, [_pod("first", gpus=[0])])
    node = simulated.SimulatedNode(simulated.load_simulation(path), source=path)
    before = node.read()
    first_pids = {p.pid for p in before.processes}
    assert len(first_pids) == 1

    _write(path, [_pod("first", gpus=[0]), _pod("second", gpus=[1])])
    after = node.read()
    assert node.reloads == 1
    assert first_pids < {p.pid for p in after.processes}
    assert {name for (_ns, name, _c) in node.gpu_assignments()} == {"first", "second"}
    energy = after.gpus[0].values[contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION]

    _write(path, [_pod("second", gpus=[1])])
    last = node.read()
    assert not first_pids & {p.pid for p in last.processes}
    assert [pod.name for pod in node.pods()] == ["second"]
    assert last.gpus[0].values[contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION] >= energy


def test_a_broken_file_keeps_the_last_good_simulation(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    _write(path, [_pod("first", gpus=[0])])
    node = simulated.SimulatedNode(simulated.load_simulation(path), source=path)
    node.read()
    path.write_text("pods: [{namespace: ml}]\n")
    assert [pod.name for pod in node.pods()] == ["first"]
    node.read()
    assert node.reloads == 0 and [pod.name for pod in node.pods()] == ["first"]
    _write(path, [_pod("first", gpus=[0]), _pod("late", gpus=[7])], count=8)
    node.read()  # a pod on a GPU the node does not have: not read
    assert node.reloads == 0 and node.simulation.gpu_count == 2


def test_processes_belong_to_the_uid_and_container_id_the_file_names(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    _write(path, [_pod("web", gpus=[1], uid=UID, container_id=CONTAINER_ID)])
    node = simulated.SimulatedNode(simulated.load_simulation(path), source=path)
    pids = [p.pid for p in node.read().processes]
    refs = [node.resolve(pid) for pid in pids]
    assert [(r.pod_uid, r.container_id) for r in refs if not isinstance(r, str)] == [
        (UID, CONTAINER_ID)
    ]


def test_pods_watched_from_the_api_server_label_the_slices_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    # the file says only where the processes run; its department/queue/sku are ignored
    _write(path, [_pod("web", gpus=[1], uid=UID, container_id=CONTAINER_ID)])
    node = simulated.SimulatedNode(simulated.load_simulation(path), source=path)
    index = PodIndex()
    index.apply(
        "ADDED",
        make_pod_json(
            name="web",
            namespace="ml",
            uid=UID,
            containers={"main": CONTAINER_ID},
            grants={"main": grant(40960, 50, sku="a100-half")},
            department="ml",
            queue="finetune",
            sku="a100-half",
        ),
    )
    sampler = Sampler(
        backend=node,
        hostname="sim-a100-hami-1",
        resolve=node.resolve,
        pods=index,
        podresources=node,
    )
    sampler.tick()
    limits = _samples(sampler)[contract.METRIC_SLICE_MEMORY_LIMIT_BYTES]
    assert [(labels["pod"], labels["sku"], labels["UUID"], value) for labels, value in limits] == [
        ("web", "a100-half", node.gpu_uuids[1], 40960 * 1024 * 1024)
    ]


def test_kubernetes_on_the_simulated_backend_needs_a_node_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        exporter_command, ["--backend", "simulated", "--kubernetes", "--port", "0"]
    )
    assert result.exit_code == 2
    assert "--kubernetes needs --node-name" in result.output
