"""What the NVIDIA backends write for a grant: hami, nvidia-whole, nvidia-mps,
nvidia-timeslice and kai (nvidia-mig has its own file)."""

from __future__ import annotations

from typing import Any

import pytest

from governance.backends import hami, kai, nvidia_mps, nvidia_timeslice, nvidia_whole
from governance.errors import ConfigError, PlacementError
from tests.support.backends import A100_80GB_MIB, make_grant, make_pool, make_sku, whole_grant

pytestmark = pytest.mark.unit

# --------------------------------------------------------------------------------------
# hami
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "expected"),
    [
        pytest.param(
            {"memory_mib": 20480, "compute_pct": 25},
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "20480", "nvidia.com/gpucores": "25"},
            id="quarter-card",
        ),
        pytest.param(
            {"count": 3, "gpus_per_slice": 2, "memory_mib": 8192, "compute_pct": 10},
            {"nvidia.com/gpu": "6", "nvidia.com/gpumem": "8192", "nvidia.com/gpucores": "10"},
            id="count-times-gpus-per-slice",
        ),
        pytest.param(
            {"memory_mib": A100_80GB_MIB, "compute_pct": 100},
            {
                "nvidia.com/gpu": "1",
                "nvidia.com/gpumem-percentage": "100",
                "nvidia.com/gpucores": "100",
            },
            id="whole-card-memory-as-percentage",
        ),
        pytest.param(
            {"memory_mib": A100_80GB_MIB, "compute_pct": 30},
            {
                "nvidia.com/gpu": "1",
                "nvidia.com/gpumem-percentage": "100",
                "nvidia.com/gpucores": "30",
            },
            id="all-memory-some-compute",
        ),
    ],
)
def test_hami_container(grant: dict[str, Any], expected: dict[str, str]) -> None:
    pool = make_pool("hami")
    changes = hami.BACKEND.container(make_grant(pool, **grant), pool)
    assert dict(changes.resources) == expected
    assert dict(changes.env) == {}


@pytest.mark.parametrize(
    ("options", "scheduler", "annotations"),
    [
        pytest.param(
            {},
            "hami-scheduler",
            {"nvidia.com/use-gputype": "A100-SXM4-80GB"},
            id="defaults-pin-the-model",
        ),
        pytest.param(
            {"scheduler_name": "vgpu-scheduler", "gpu_type": "A100"},
            "vgpu-scheduler",
            {"nvidia.com/use-gputype": "A100"},
            id="configured",
        ),
        pytest.param({"scheduler_name": "", "gpu_type": ""}, None, {}, id="both-disabled"),
    ],
)
def test_hami_pod(
    options: dict[str, str], scheduler: str | None, annotations: dict[str, str]
) -> None:
    pool = make_pool("hami", backend_options=options)
    hami.BACKEND.validate(pool, [make_sku()])
    changes = hami.BACKEND.pod({"main": make_grant(pool)}, pool, "research")
    assert changes.scheduler_name == scheduler
    assert dict(changes.annotations) == annotations
    assert dict(changes.labels) == {}


def test_hami_strips_every_hami_form_resource() -> None:
    assert set(hami.BACKEND.gpu_resources) >= {
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
        "nvidia.com/gpumem-percentage",
        "nvidia.com/gpucores",
    }


def test_hami_option_of_wrong_type_names_the_option() -> None:
    pool = make_pool("hami", backend_options={"scheduler_name": 3})
    with pytest.raises(ConfigError, match="expected a string, got 3") as caught:
        hami.BACKEND.validate(pool, [])
    assert caught.value.path == "pools.pool-a.backend_options.scheduler_name"


# --------------------------------------------------------------------------------------
# nvidia-whole
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "grant", "expected"),
    [
        pytest.param({}, {"count": 1}, {"nvidia.com/gpu": "1"}, id="one"),
        pytest.param({}, {"count": 2, "gpus_per_slice": 4}, {"nvidia.com/gpu": "8"}, id="eight"),
        pytest.param(
            {"resource": "example.com/gpu"}, {"count": 1}, {"example.com/gpu": "1"}, id="renamed"
        ),
    ],
)
def test_whole_container(
    options: dict[str, str], grant: dict[str, int], expected: dict[str, str]
) -> None:
    pool = make_pool("nvidia-whole", backend_options=options)
    assert dict(nvidia_whole.BACKEND.container(whole_grant(pool, **grant), pool).resources) == (
        expected
    )


@pytest.mark.parametrize(
    "sku",
    [
        pytest.param({"memory_mib": 40960, "compute_pct": 100}, id="half-the-memory"),
        pytest.param({"memory_mib": A100_80GB_MIB, "compute_pct": 50}, id="half-the-compute"),
        pytest.param({"memory_mib": None, "memory_pct": 50, "compute_pct": 100}, id="memory-pct"),
    ],
)
def test_whole_refuses_a_fractional_sku(sku: dict[str, Any]) -> None:
    pool = make_pool("nvidia-whole")
    with pytest.raises(ConfigError, match="SKU 'half' cannot be offered on pool 'pool-a'") as e:
        nvidia_whole.BACKEND.validate(pool, [make_sku("half", **sku)])
    assert "whole cards (81920 MiB, 100%)" in str(e.value)
    assert e.value.path == "skus.half"


def test_whole_accepts_whole_card_skus_by_mib_or_percent() -> None:
    pool = make_pool("nvidia-whole")
    nvidia_whole.BACKEND.validate(
        pool,
        [
            make_sku("a", memory_mib=A100_80GB_MIB, compute_pct=100),
            make_sku("b", memory_mib=None, memory_pct=100, compute_pct=100, gpus_per_slice=8),
        ],
    )


def test_whole_refuses_a_fractional_hami_form_request() -> None:
    pool = make_pool("nvidia-whole")
    with pytest.raises(PlacementError, match="whole GPUs only") as caught:
        nvidia_whole.BACKEND.container(make_grant(pool, sku="custom"), pool)
    assert caught.value.code.value == "InvalidRequest"


# --------------------------------------------------------------------------------------
# nvidia-mps
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "grant", "resources", "env"),
    [
        pytest.param(
            {},
            {"memory_mib": 8192, "compute_pct": 25},
            {"nvidia.com/gpu": "1"},
            {
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=8192M",
            },
            id="one-gpu",
        ),
        pytest.param(
            {"resource": "nvidia.com/gpu.shared"},
            {"memory_mib": 10240, "compute_pct": 50, "gpus_per_slice": 2},
            {"nvidia.com/gpu.shared": "2"},
            {
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=10240M,1=10240M",
            },
            id="two-gpus-renamed",
        ),
        pytest.param(
            {"replicas": 4},
            {"memory_mib": 20480, "compute_pct": 25},
            {"nvidia.com/gpu": "1"},
            {
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=20480M",
            },
            id="exactly-one-replica",
        ),
    ],
)
def test_mps_container(
    options: dict[str, Any], grant: dict[str, int], resources: dict[str, str], env: dict[str, str]
) -> None:
    pool = make_pool("nvidia-mps", backend_options=options)
    changes = nvidia_mps.BACKEND.container(make_grant(pool, **grant), pool)
    assert dict(changes.resources) == resources
    assert dict(changes.env) == env


def test_mps_refuses_a_sku_larger_than_one_replica() -> None:
    pool = make_pool("nvidia-mps", backend_options={"replicas": 4})
    with pytest.raises(ConfigError, match=r"more than one MPS replica \(20480 MiB, 25%"):
        nvidia_mps.BACKEND.validate(pool, [make_sku("big", memory_mib=20480, compute_pct=30)])
    with pytest.raises(PlacementError, match="at most 20480 MiB and 25%"):
        nvidia_mps.BACKEND.container(make_grant(pool, memory_mib=30000), pool)


def test_mps_without_replicas_accepts_any_sku() -> None:
    pool = make_pool("nvidia-mps")
    nvidia_mps.BACKEND.validate(pool, [make_sku("big", memory_mib=70000, compute_pct=90)])


def test_mps_pinned_mem_limit_format() -> None:
    assert nvidia_mps.pinned_mem_limit(4096, 3) == "0=4096M,1=4096M,2=4096M"


def test_mps_resource_option_must_be_a_resource_name() -> None:
    pool = make_pool("nvidia-mps", backend_options={"resource": "gpu shared"})
    with pytest.raises(ConfigError, match="not a Kubernetes extended resource name"):
        nvidia_mps.BACKEND.validate(pool, [])


# --------------------------------------------------------------------------------------
# nvidia-timeslice
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "grant", "expected"),
    [
        pytest.param(4, {"memory_mib": 20480, "compute_pct": 25}, "1", id="quarter-of-4"),
        pytest.param(4, {"memory_mib": 20481, "compute_pct": 25}, "2", id="memory-rounds-up"),
        pytest.param(4, {"memory_mib": 8192, "compute_pct": 60}, "3", id="compute-rounds-up"),
        pytest.param(4, {"memory_mib": 1, "compute_pct": 1}, "1", id="at-least-one"),
        pytest.param(8, {"memory_mib": 20480, "compute_pct": 25, "count": 2}, "4", id="count-two"),
        pytest.param(
            4,
            {"memory_mib": A100_80GB_MIB, "compute_pct": 100, "gpus_per_slice": 2},
            "8",
            id="two-whole-cards",
        ),
    ],
)
def test_timeslice_replicas(replicas: int, grant: dict[str, int], expected: str) -> None:
    pool = make_pool("nvidia-timeslice", backend_options={"replicas": replicas})
    changes = nvidia_timeslice.BACKEND.container(make_grant(pool, **grant), pool)
    assert dict(changes.resources) == {"nvidia.com/gpu.shared": expected}


def test_timeslice_resource_is_configurable() -> None:
    pool = make_pool(
        "nvidia-timeslice", backend_options={"replicas": 2, "resource": "nvidia.com/gpu"}
    )
    changes = nvidia_timeslice.BACKEND.container(make_grant(pool), pool)
    assert dict(changes.resources) == {"nvidia.com/gpu": "1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "needs the device plugin's replicas per GPU", id="missing"),
        pytest.param({"replicas": 0}, "expected an integer >= 1, got 0", id="zero"),
        pytest.param({"replicas": True}, "expected an integer >= 1, got True", id="bool"),
        pytest.param({"replicas": "4"}, "expected an integer >= 1, got '4'", id="string"),
    ],
)
def test_timeslice_replicas_option_errors(options: dict[str, Any], message: str) -> None:
    pool = make_pool("nvidia-timeslice", backend_options=options)
    with pytest.raises(ConfigError, match=message) as caught:
        nvidia_timeslice.BACKEND.validate(pool, [])
    assert caught.value.path == "pools.pool-a.backend_options.replicas"


def test_timeslice_fail_requests_greater_than_one() -> None:
    pool = make_pool(
        "nvidia-timeslice",
        backend_options={"replicas": 4, "fail_requests_greater_than_one": True},
    )
    nvidia_timeslice.BACKEND.validate(pool, [make_sku("quarter")])
    with pytest.raises(ConfigError, match=r"SKU 'half'.*takes 2 replicas"):
        nvidia_timeslice.BACKEND.validate(pool, [make_sku("half", compute_pct=50)])
    with pytest.raises(PlacementError, match="needs 2 time-sliced replicas"):
        nvidia_timeslice.BACKEND.container(make_grant(pool, count=2), pool)


# --------------------------------------------------------------------------------------
# kai
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "grant", "resources", "annotations"),
    [
        pytest.param(
            {},
            {"memory_mib": 20480, "compute_pct": 25},
            {},
            {"gpu-memory": "20480", "gpu-fraction-container-name": "main"},
            id="memory",
        ),
        pytest.param(
            {"fraction_by": "fraction"},
            {"memory_mib": 40960, "compute_pct": 50},
            {},
            {"gpu-fraction": "0.5", "gpu-fraction-container-name": "main"},
            id="fraction",
        ),
        pytest.param(
            {"fraction_by": "fraction"},
            {"memory_mib": 10000, "compute_pct": 12, "gpus_per_slice": 2},
            {},
            {
                "gpu-fraction": "0.122",
                "gpu-fraction-num-devices": "2",
                "gpu-fraction-container-name": "main",
            },
            id="fraction-on-two-gpus",
        ),
        pytest.param(
            {},
            {"memory_mib": A100_80GB_MIB, "compute_pct": 100, "count": 2},
            {"nvidia.com/gpu": "2"},
            {},
            id="whole-gpus",
        ),
    ],
)
def test_kai(
    options: dict[str, str],
    grant: dict[str, int],
    resources: dict[str, str],
    annotations: dict[str, str],
) -> None:
    pool = make_pool("kai", backend_options=options)
    kai.BACKEND.validate(pool, [])
    g = make_grant(pool, **grant)
    assert dict(kai.BACKEND.container(g, pool).resources) == resources
    changes = kai.BACKEND.pod({"main": g}, pool, "research")
    assert dict(changes.annotations) == annotations
    assert dict(changes.labels) == {"kai.scheduler/queue": "research"}
    assert changes.scheduler_name == "kai-scheduler"


def test_kai_queue_label_and_name_are_configurable() -> None:
    pool = make_pool(
        "kai",
        backend_options={
            "queue_label": "runai/queue",
            "queues": {"research": "team-a"},
            "scheduler_name": "kai-shard-1",
        },
    )
    kai.BACKEND.validate(pool, [])
    changes = kai.BACKEND.pod({"main": make_grant(pool)}, pool, "research")
    assert dict(changes.labels) == {"runai/queue": "team-a"}
    assert changes.scheduler_name == "kai-shard-1"


@pytest.mark.parametrize(
    "grants",
    [
        pytest.param({"a": {}, "b": {}}, id="two-fractions"),
        pytest.param(
            {"a": {}, "b": {"memory_mib": A100_80GB_MIB, "compute_pct": 100}},
            id="fraction-and-whole",
        ),
    ],
)
def test_kai_refuses_what_it_cannot_schedule(grants: dict[str, dict[str, int]]) -> None:
    pool = make_pool("kai")
    built = {name: make_grant(pool, **g) for name, g in grants.items()}
    with pytest.raises(PlacementError, match=r"one container per pod.*containers a, b"):
        kai.BACKEND.pod(built, pool, "research")


def test_kai_several_whole_gpu_containers_are_fine() -> None:
    pool = make_pool("kai")
    grants = {"a": whole_grant(pool), "b": whole_grant(pool, count=3)}
    assert dict(kai.BACKEND.pod(grants, pool, "q").annotations) == {}


@pytest.mark.parametrize(
    ("memory_mib", "expected"),
    [
        pytest.param(1, "0.001", id="never-zero"),
        pytest.param(A100_80GB_MIB - 1, "0.999", id="never-one"),
        pytest.param(A100_80GB_MIB // 4, "0.25", id="quarter"),
    ],
)
def test_kai_fraction_stays_inside_zero_and_one(memory_mib: int, expected: str) -> None:
    assert kai.gpu_fraction(memory_mib, make_pool("kai")) == expected


def test_kai_fraction_by_must_be_known() -> None:
    pool = make_pool("kai", backend_options={"fraction_by": "cores"})
    with pytest.raises(ConfigError, match="expected one of memory, fraction, got 'cores'"):
        kai.BACKEND.validate(pool, [])
