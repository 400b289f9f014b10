"""simulator.governed: a tiny configuration and a tiny workload worked out by hand, which
pods each quota denies and the usage at each step; the mapping of trace pods onto a
configuration's queues and SKUs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from governance import config, scopes
from governance.resources import Resources
from governance.scopes import Scope
from governance.snapshot import Snapshot
from simulator import governed, replay, workload
from simulator.trace import Pod
from tests.support.sim import make_pod

pytestmark = pytest.mark.unit

REPOSITORY = Path(__file__).resolve().parents[2]

ORG: dict[str, Any] = {
    "apiVersion": "gpupool.io/v1",
    "kind": "Organisation",
    "pools": [
        {
            "name": "a100",
            "vendor": "nvidia",
            "model": "A100-80GB",
            "backend": "hami",
            "gpus": 4,
            "memory_per_gpu": "80Gi",
        }
    ],
    "skus": [
        {"name": "quarter", "memory": "20Gi", "compute": "25%", "pools": ["a100"]},
        {"name": "half", "memory": "40Gi", "compute": "50%", "pools": ["a100"]},
        {"name": "whole", "compute": "100%", "pools": ["a100"]},
    ],
    "departments": [
        {
            "name": "ml",
            "namespaces": ["ml-*"],
            "default_queue": "train",
            "quota": {"compute": "200%", "slices": 10},
            "queues": [
                {
                    "name": "train",
                    "pool": "a100",
                    "default_sku": "whole",
                    "quota": {"compute": "100%"},
                    "borrowing_limit": {"compute": "50%"},
                },
                {
                    "name": "notebooks",
                    "pool": "a100",
                    "skus": ["quarter", "half"],
                    "default_sku": "quarter",
                    "quota": {"slices": 2, "compute": "50%"},
                    "borrowing_limit": {"slices": 0},
                },
            ],
        },
        {
            "name": "web",
            "namespaces": ["web"],
            "default_queue": "serve",
            "quota": {"compute": "50%", "per_sku": {"half": {"slices": 1}}},
            "queues": [{"name": "serve", "pool": "a100", "default_sku": "half"}],
        },
    ],
    "role_bindings": [{"role": "member", "department": "ml", "subjects": ["group:ml"]}],
}

# name, arrival, duration, department, queue, gpus, fraction (sku, subject: see below)
WORKLOAD = [
    ("a", 0, 10, "ml", "train", 1, 1.0),  # whole: train 100% of its nominal 100%
    ("b", 1, 10, "ml", "notebooks", 1, 0.2),  # quarter: 1 slice, 25%
    ("c", 2, 10, "ml", "notebooks", 1, 0.4),  # half: 2 slices, 75%: borrows 25% of ml's
    ("d", 3, 10, "ml", "notebooks", 1, 0.1),  # a 3rd slice; borrowing limit 0: denied
    ("e", 4, 10, "ml", "train", 1, 1.0),  # train to 200% > 100% + 50%: denied
    ("f", 5, 10, "web", "serve", 1, 0.5),  # half: web 50% of 50%
    ("g", 6, 10, "web", "serve", 1, 0.5),  # a 2nd half: web's cap of 1 half slice
    ("h", 7, 10, "web", "serve", 1, 0.2),  # quarter: web 75% > 50%
    ("i", 12, 10, "ml", "train", 1, 1.0),  # a ended at 10: fits again
    ("cpu", 0, 30, "", "", 0, 0.0),  # not a GPU pod: gpupool never sees it
]
DENIED = {
    "d": "QueueQuotaExceeded",
    "e": "BorrowingLimitExceeded",
    "g": "SkuQuotaExceeded",
    "h": "DepartmentQuotaExceeded",
}


def snapshot() -> Snapshot:
    return Snapshot.build(config.build_org(ORG))


def pods(**columns: Mapping[str, str]) -> list[Pod]:
    """The workload, read as gpupool's format; ``columns`` adds cells per pod name."""
    rows = [
        {
            "name": name,
            "arrival_s": str(at),
            "duration_s": str(duration),
            "department": department,
            "queue": queue,
            "gpus": str(gpus),
            "gpu_fraction": str(fraction) if gpus else "",
            "cpu_milli": "1000",
            **columns.get(name, {}),
        }
        for name, at, duration, department, queue, gpus, fraction in WORKLOAD
    ]
    return workload.parse_workload(rows)


def key_usage(usage: Mapping[Scope, Resources]) -> dict[str, dict[str, int]]:
    return {
        str(scope): {k: v for k, v in amount.as_dict().items() if v}
        for scope, amount in usage.items()
        if scope.kind in (scopes.Kind.DEPARTMENT, scopes.Kind.QUEUE)
    }


def test_tiny_trace_by_hand_denials_usage_and_departments() -> None:
    snap = snapshot()
    decided: dict[str, str] = {}
    admit = governed.admission(snap)

    def recording(pod: Pod, usage: replay.Usage) -> replay.Decision:
        decision = admit(pod, usage)
        decided[pod.name] = decision.reason
        return decision

    steps: list[tuple[float, dict[str, dict[str, int]]]] = []
    assigned = governed.assign(pods(), snap.org, on_config_fleet=True)
    result = replay.run(
        assigned,
        governed.fleet(snap.org),
        "best-fit",
        admission=recording,
        observe=lambda now, usage: steps.append((now, key_usage(usage))),
    )
    assert {n: r for n, r in decided.items() if r != "Admitted" and n != "cpu"} == DENIED
    assert decided["cpu"] == "NotGPU"
    assert result.denied == {reason: 1 for reason in DENIED.values()}
    # the SKUs chosen: the smallest that holds each share
    assert {p.name: p.sku for p in assigned if p.num_gpu} == {
        "a": "whole", "b": "quarter", "c": "half", "d": "quarter", "e": "whole",
        "f": "half", "g": "half", "h": "quarter", "i": "whole",
    }  # fmt: skip
    usage_at = dict(steps)  # the last event of each instant
    ml_full = {
        "department/ml": {"compute_pct": 175, "memory_mib": 143360, "slices": 3},
        "queue/ml/train": {"compute_pct": 100, "memory_mib": 81920, "slices": 1},
        "queue/ml/notebooks": {"compute_pct": 75, "memory_mib": 61440, "slices": 2},
    }
    assert usage_at[2] == ml_full
    assert usage_at[4] == ml_full  # d and e denied: nothing added
    web = {"department/web": {"compute_pct": 50, "memory_mib": 40960, "slices": 1}}
    web |= {"queue/web/serve": web["department/web"]}
    assert usage_at[7] == ml_full | web
    assert (
        usage_at[10]
        == {  # a ended
            "department/ml": {"compute_pct": 75, "memory_mib": 61440, "slices": 2},
            "queue/ml/notebooks": {"compute_pct": 75, "memory_mib": 61440, "slices": 2},
        }
        | web
    )
    assert (
        usage_at[12]
        == {  # b and c ended, i started
            "department/ml": {"compute_pct": 100, "memory_mib": 81920, "slices": 1},
            "queue/ml/train": {"compute_pct": 100, "memory_mib": 81920, "slices": 1},
        }
        | web
    )
    assert steps[-1] == (30, {})  # every pod ended: nothing held
    # per department: counts, and compute over the 30 s between the first arrival and
    # the last event: ml 100x1 + 125x1 + 175x8 + 75x1 + 50x1 + 100x10 = 2750
    data = governed.departments(result, snap.org)
    assert {n: (d["pods"], d["admitted"], d["denied"]) for n, d in data.items()} == {
        "ml": (6, 4, {"BorrowingLimitExceeded": 1, "QueueQuotaExceeded": 1}),
        "web": (3, 1, {"DepartmentQuotaExceeded": 1, "SkuQuotaExceeded": 1}),
    }
    assert data["ml"]["quota"]["compute_pct"] == {
        "limit": 200, "mean": round(2750 / 30, 3), "peak": 175, "peak_pct": 87.5,
    }  # fmt: skip
    assert data["web"]["quota"]["compute_pct"]["mean"] == round(500 / 30, 3)
    notebooks = data["ml"]["queues"]["notebooks"]
    assert notebooks["nominal"]["compute_pct"]["peak_pct"] == 150.0  # borrowed
    assert notebooks["ceiling"] == {"slices": 2}
    assert data["ml"]["queued"] == 0 and data["ml"]["started_on_arrival"] == 4


def test_a_pod_naming_a_subject_is_checked_against_the_policy() -> None:
    snap = snapshot()
    named = pods(
        a={"subject": "group:ml"}, b={"subject": "user:mallory"}, f={"subject": "group:ml"}
    )
    assigned = governed.assign(named, snap.org)
    result = replay.run(
        assigned, governed.fleet(snap.org), "fgd", admission=governed.admission(snap)
    )
    # b (a user no binding names) and f (ml's group in web's queue) are Forbidden.
    # Without b, d is notebooks' second slice and fits; e still breaks train's borrowing
    # limit; without f, g is web's first half slice and fits, and h (a quarter more)
    # takes web past its 50% of compute
    assert result.denied == {
        "Forbidden": 2,
        "BorrowingLimitExceeded": 1,
        "DepartmentQuotaExceeded": 1,
    }


def test_a_pod_asks_for_the_sku_it_names_or_is_told_why_not() -> None:
    snap = snapshot()
    decide = governed.decide
    usage: dict[Scope, Resources] = {}
    pod = make_pod("x", milli=200, department="ml", queue="notebooks", sku="whole")
    decision = decide(snap, pod, usage)
    assert (decision.allowed, decision.reason) == (False, "SKUNotOffered")
    assert "not offered in queue ml/notebooks" in decision.message
    too_big = governed.assign([make_pod("y", department="ml", queue="notebooks")], snap.org)[0]
    decision = decide(snap, too_big, usage)
    assert (decision.allowed, decision.reason) == (False, "SKUNotOffered")
    assert "no SKU of queue ml/notebooks holds 1 GPU(s) of 1000/1000" in decision.message
    fits = decide(snap, make_pod("z", department="ml", queue="train", sku="whole"), usage)
    assert fits.allowed and fits.amount == Resources(slices=1, memory_mib=81920, compute_pct=100)
    assert set(fits.scopes) == set(scopes.path("ml", "train", "whole", "a100").locked)


@pytest.mark.parametrize(
    ("department", "queue", "message"),
    [
        pytest.param("ops", "", "department 'ops'", id="unknown-department"),
        pytest.param("ml", "serve", "queue 'serve' of department ml", id="unknown-queue"),
    ],
)
def test_a_pod_naming_what_the_configuration_lacks_is_bad_input(
    department: str, queue: str, message: str
) -> None:
    from governance.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        governed.assign([make_pod(department=department, queue=queue)], snapshot().org)


def test_trace_pods_spread_over_the_queues_of_their_kind_seeded() -> None:
    org = governed.load(REPOSITORY / "examples" / "org.yaml").org
    trace_pods = [make_pod(f"w{i}", gpus=1 + i % 2) for i in range(40)]
    trace_pods += [make_pod(f"s{i}", milli=(100, 240, 470, 810)[i % 4]) for i in range(40)]
    first = governed.assign(trace_pods, org, seed=3)
    assert first == governed.assign(trace_pods, org, seed=3)
    assert first != governed.assign(trace_pods, org, seed=4)
    whole_queues = {(p.queue, p.sku) for p in first if p.name.startswith("w")}
    assert {q for q, _ in whole_queues} <= {"pretrain", "train", "npu-train"}
    assert {s for _, s in whole_queues} <= {"h100-whole", "a100-whole", "ascend-910b-whole"}
    for pod in first:
        if pod.name.startswith("s"):  # the smallest SKU of its queue that holds it
            queue = org.queues[(pod.department, pod.queue)]
            assert governed.choose_sku(org, queue, pod) == org.skus[pod.sku]
            assert governed.holds_milli(org.skus[pod.sku], org.pools[queue.pool]) >= pod.gpu_milli
    # 810/1000 of a GPU: only serving offers a slice SKU that holds it (a whole L40S)
    assert {p.queue for p in first if p.gpu_milli == 810} == {"serving"}
    # on the configuration's fleet, pods are bound to their pool and take their SKU's share
    bound = governed.assign(trace_pods, org, seed=3, on_config_fleet=True)
    assert all(p.gpu_models == (org.queues[(p.department, p.queue)].pool,) for p in bound)
    assert {p.gpu_milli for p in bound if p.sku == "h100-1g.10gb"} <= {140}


def test_an_eight_gpu_pod_takes_the_eight_gpu_sku() -> None:
    org = governed.load(REPOSITORY / "examples" / "org.yaml").org
    queue = org.queues[("research", "pretrain")]
    assert governed.choose_sku(org, queue, make_pod(gpus=8)) == org.skus["h100-8x"]
    assert governed.choose_sku(org, queue, make_pod(gpus=4)) == org.skus["h100-whole"]


@pytest.mark.parametrize(
    ("sku", "pool", "holds", "occupies"),
    [
        pytest.param("h100-1g.10gb", "h100-mig", 125, 140, id="mig-1g"),
        pytest.param("h100-3g.40gb", "h100-mig", 420, 500, id="mig-3g"),
        pytest.param("a100-quarter", "a100-hami", 250, 250, id="hami-compute-oversubscribed"),
        pytest.param("l40s-half", "l40s-hami", 500, 500, id="memory-as-a-share"),
        pytest.param("a100-whole", "a100-hami", 1000, 1000, id="whole"),
    ],
)
def test_what_a_slice_holds_and_takes_of_its_card(
    sku: str, pool: str, holds: int, occupies: int
) -> None:
    org = governed.load(REPOSITORY / "examples" / "org.yaml").org
    assert governed.holds_milli(org.skus[sku], org.pools[pool]) == holds
    assert governed.occupies_milli(org.skus[sku], org.pools[pool]) == occupies


def test_the_fleet_of_a_configuration_is_its_pools_in_nodes_of_eight() -> None:
    org = governed.load(REPOSITORY / "examples" / "org.yaml").org
    nodes = governed.fleet(org)
    by_pool = {name: sum(n.gpus for n in nodes if n.model == name) for name in org.pools}
    assert by_pool == {name: pool.gpus for name, pool in org.pools.items()}
    assert {(n.gpus, n.cpu_milli, n.memory_mib) for n in nodes} == {(8, 128_000, 1024 * 1024)}
