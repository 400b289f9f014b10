"""The demo's scheduler and kubelets: an admitted pod is bound, started and written into
its node's simulation file under the uid and container id the API reports; a pod that
fits nowhere waits, Pending, until capacity frees; a Job's pod ends Succeeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from demo import models
from demo.apiserver import ApiServer
from demo.apistore import EVENTS, PODS
from demo.cluster import Cluster
from demo.fleet import Node
from exporter.backends import simulated
from governance import contract

pytestmark = pytest.mark.unit

NODE = Node(
    name="sim-a100-hami-1",
    pool="a100-hami",
    model="NVIDIA A100-SXM4-80GB",
    gpus=2,
    memory_mib=81920,
    memory_capacity_mib=81920,
    compute_capacity_pct=150,
)


def admitted(
    api: ApiServer, name: str, *, memory_mib: int, compute_pct: int, count: int = 1
) -> dict[str, Any]:
    """A pod as the webhook leaves it (labels, slices, allocation id), stored."""
    grant = contract.SliceGrant(
        count=count,
        memory_mib=memory_mib,
        compute_pct=compute_pct,
        backend="hami",
        pool="a100-hami",
        sku="a100-half",
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml-pipelines",
            "uid": f"uid-{name}",
            "labels": {
                contract.LABEL_DEPARTMENT: "ml",
                contract.LABEL_QUEUE: "finetune",
                contract.LABEL_SKU: "a100-half",
            },
            "annotations": {
                contract.ANNOTATION_SLICES: contract.dump_slices({"main": grant}),
                contract.ANNOTATION_ALLOCATION_ID: f"alloc-{name}",
            },
        },
        "spec": {
            "containers": [{"name": "main", "image": "x"}],
            "nodeSelector": {"gpupool.io/pool": "a100-hami"},
        },
        "status": {"phase": "Pending"},
    }
    return api.store.create(PODS, pod)


def reasons(api: ApiServer) -> list[str]:
    return [e["reason"] for e in api.store.list(EVENTS)[0]]


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(ApiServer(admission=None), [NODE], tmp_path / "nodes", seed=3)


def test_an_admitted_pod_runs_on_its_gpus_and_its_exporter_sees_it_as_the_api_does(
    cluster: Cluster,
) -> None:
    api = cluster.api
    work = cluster.admit(
        admitted(api, "tune-1", memory_mib=40960, compute_pct=50), load=0.6, processes=1
    )
    pod = api.pod("ml-pipelines", "tune-1")
    assert pod["spec"]["nodeName"] == NODE.name and pod["status"]["phase"] == "Running"
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"] == models.CONTAINER_RUNTIME + work.container_ids["main"]
    assert reasons(api) == ["Scheduled"]
    assert api.store.list("nodes")[0][0]["metadata"]["labels"]["gpupool.io/pool"] == "a100-hami"

    simulation = simulated.load_simulation(cluster.simulation_file(NODE.name))
    (sim_pod,) = simulation.pods
    assert (sim_pod.name, sim_pod.uid) == ("tune-1", "uid-tune-1")
    (container,) = sim_pod.containers
    assert container.id == work.container_ids["main"]
    assert (container.gpus, container.memory_mib, container.compute_pct, container.load) == (
        (0,),
        40960,
        50,
        0.6,
    )
    assert simulation.gpu_count == 2 and simulation.hostname == NODE.name


def test_a_pod_that_fits_nowhere_waits_pending_until_capacity_frees(cluster: Cluster) -> None:
    api = cluster.api
    whole = dict(memory_mib=81920, compute_pct=100)
    first = cluster.admit(admitted(api, "big-1", count=2, **whole), load=0.9, processes=1)
    waiting = cluster.admit(admitted(api, "big-2", **whole), load=0.9, processes=1)
    assert first.placement is not None and waiting.placement is None
    pending = api.pod("ml-pipelines", "big-2")
    assert pending["status"]["phase"] == "Pending" and "nodeName" not in pending["spec"]
    assert pending["status"]["conditions"][0]["reason"] == "Unschedulable"
    assert reasons(api) == ["Scheduled", "FailedScheduling"]
    assert list(cluster.pending) == ["uid-big-2"]

    cluster.finish(first.uid, succeeded=False)
    started = cluster.retry_pending()
    assert [w.name for w in started] == ["big-2"] and not cluster.pending
    assert api.pod("ml-pipelines", "big-2")["spec"]["nodeName"] == NODE.name
    files = yaml.safe_load(cluster.simulation_file(NODE.name).read_text())
    assert [p["name"] for p in files["pods"]] == ["big-2"]


def test_a_jobs_pod_ends_succeeded_then_goes_and_leaves_the_node_file(cluster: Cluster) -> None:
    api = cluster.api
    since = api.store.version
    work = cluster.admit(
        admitted(api, "job-1", memory_mib=20480, compute_pct=25), load=0.5, processes=1
    )
    cluster.finish(work.uid, succeeded=True)
    seen = [
        (e["type"], e["object"]["status"]["phase"])
        for e in api.store.watch(PODS, since=since, timeout_s=0.05)
    ]
    assert seen[-3:] == [
        ("MODIFIED", "Succeeded"),
        ("MODIFIED", "Succeeded"),
        ("DELETED", "Succeeded"),
    ]
    assert yaml.safe_load(cluster.simulation_file(NODE.name).read_text())["pods"] == []
    assert cluster.scheduler.allocated(NODE.name) == [(0, 0), (0, 0)]
