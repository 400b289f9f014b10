"""Non-NVIDIA backends, with the resource names HAMi uses: Ascend, Cambricon MLU, Hygon DCU."""

from __future__ import annotations

from typing import Any

import pytest

from governance.backends import ascend, cambricon, hygon
from governance.errors import ConfigError, PlacementError
from governance.model import Pool
from tests.support.backends import make_grant, make_pool, make_sku, whole_grant

pytestmark = pytest.mark.unit

ASCEND_910B3_MIB = 65536
MLU370_MIB = 24576


def ascend_pool(model: str = "Ascend910B3", **options: Any) -> Pool:
    return make_pool(
        "ascend",
        vendor="huawei",
        model=model,
        memory_mib_per_gpu=ASCEND_910B3_MIB,
        backend_options=options,
    )


def mlu_pool(**options: Any) -> Pool:
    return make_pool(
        "cambricon",
        vendor="cambricon",
        model="MLU370-X8",
        memory_mib_per_gpu=MLU370_MIB,
        backend_options=options,
    )


# --------------------------------------------------------------------------------------
# ascend
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "options", "grant", "expected"),
    [
        pytest.param(
            "Ascend910B3",
            {},
            {"memory_mib": 16384, "compute_pct": 25},
            {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"},
            id="910b3-quarter",
        ),
        pytest.param(
            "Ascend910B3",
            {},
            {"memory_mib": ASCEND_910B3_MIB, "compute_pct": 100, "count": 2, "gpus_per_slice": 4},
            {"huawei.com/Ascend910B3": "8"},
            id="eight-whole-npus",
        ),
        pytest.param(
            "Atlas 300I Pro",
            {"chip": "Ascend310P"},
            {"memory_mib": 6144, "compute_pct": 25},
            {"huawei.com/Ascend310P": "1", "huawei.com/Ascend310P-memory": "6144"},
            id="chip-option",
        ),
        pytest.param(
            "Ascend910B4-1",
            {},
            {"memory_mib": 8192, "compute_pct": 25},
            {"huawei.com/Ascend910B4-1": "1", "huawei.com/Ascend910B4-1-memory": "8192"},
            id="dashed-common-word",
        ),
    ],
)
def test_ascend_container(
    model: str, options: dict[str, str], grant: dict[str, int], expected: dict[str, str]
) -> None:
    pool = ascend_pool(model, **options)
    ascend.BACKEND.validate(pool, [])
    assert dict(ascend.BACKEND.container(make_grant(pool, **grant), pool).resources) == expected


def test_ascend_pod_uses_hamis_scheduler() -> None:
    pool = ascend_pool()
    changes = ascend.BACKEND.pod({"main": make_grant(pool)}, pool, "q")
    assert changes.scheduler_name == "hami-scheduler"
    assert dict(changes.node_selector) == {"gpupool.io/pool": "pool-a"}


def test_ascend_refuses_a_fraction_on_several_npus() -> None:
    pool = ascend_pool()
    with pytest.raises(ConfigError, match="fraction of an NPU on 2 NPUs per slice"):
        ascend.BACKEND.validate(pool, [make_sku("pair", memory_mib=16384, gpus_per_slice=2)])
    with pytest.raises(PlacementError, match="only when a container asks for one NPU"):
        ascend.BACKEND.container(make_grant(pool, memory_mib=16384, count=2), pool)


def test_ascend_whole_npus_on_several_cards_are_fine() -> None:
    pool = ascend_pool()
    sku = make_sku("x8", memory_mib=ASCEND_910B3_MIB, compute_pct=100, gpus_per_slice=8)
    ascend.BACKEND.validate(pool, [sku])


@pytest.mark.parametrize("chip", ["910B3", "Ascend 910B", "huawei.com/Ascend910B3", ""])
def test_ascend_chip_must_be_a_hami_common_word(chip: str) -> None:
    pool = ascend_pool(chip=chip) if chip else ascend_pool(model="")
    with pytest.raises(ConfigError, match="not an Ascend chip name") as caught:
        ascend.BACKEND.validate(pool, [])
    assert caught.value.path == "pools.pool-a.backend_options.chip"


def test_ascend_strips_every_known_chip() -> None:
    resources = set(ascend.BACKEND.gpu_resources)
    for chip in ("Ascend910A", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend310P"):
        assert {f"huawei.com/{chip}", f"huawei.com/{chip}-memory"} <= resources


# --------------------------------------------------------------------------------------
# cambricon
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "grant", "expected"),
    [
        pytest.param(
            {},
            {"memory_mib": 6144, "compute_pct": 25},
            {
                "cambricon.com/vmlu": "1",
                "cambricon.com/mlu.smlu.vmemory": "24",
                "cambricon.com/mlu.smlu.vcore": "25",
            },
            id="quarter-in-256-mib-units",
        ),
        pytest.param(
            {},
            {"memory_mib": 1000, "compute_pct": 10, "sku": "custom"},
            {
                "cambricon.com/vmlu": "1",
                "cambricon.com/mlu.smlu.vmemory": "4",
                "cambricon.com/mlu.smlu.vcore": "10",
            },
            id="hami-form-rounds-up",
        ),
        pytest.param(
            {},
            {"memory_mib": MLU370_MIB, "compute_pct": 100, "count": 4},
            {"cambricon.com/vmlu": "4"},
            id="whole-mlus",
        ),
        pytest.param(
            {
                "count_resource": "cambricon.com/vmlu",
                "memory_resource": "cambricon.com/mlu370.smlu.vmemory",
                "cores_resource": "cambricon.com/mlu370.smlu.vcore",
            },
            {"memory_mib": 5120, "compute_pct": 10},
            {
                "cambricon.com/vmlu": "1",
                "cambricon.com/mlu370.smlu.vmemory": "20",
                "cambricon.com/mlu370.smlu.vcore": "10",
            },
            id="per-model-names",
        ),
    ],
)
def test_cambricon_container(
    options: dict[str, str], grant: dict[str, Any], expected: dict[str, str]
) -> None:
    pool = mlu_pool(**options)
    cambricon.BACKEND.validate(pool, [])
    changes = cambricon.BACKEND.container(make_grant(pool, **grant), pool)
    assert dict(changes.resources) == expected


@pytest.mark.parametrize(
    ("options", "scheduler", "annotations"),
    [
        pytest.param(
            {}, "hami-scheduler", {"cambricon.com/use-mlutype": "MLU370-X8"}, id="defaults"
        ),
        pytest.param(
            {"mlu_type": "MLU370", "scheduler_name": "s"},
            "s",
            {"cambricon.com/use-mlutype": "MLU370"},
            id="configured",
        ),
        pytest.param({"mlu_type": ""}, "hami-scheduler", {}, id="unpinned"),
    ],
)
def test_cambricon_pod(
    options: dict[str, str], scheduler: str, annotations: dict[str, str]
) -> None:
    pool = mlu_pool(**options)
    changes = cambricon.BACKEND.pod({"main": make_grant(pool)}, pool, "q")
    assert changes.scheduler_name == scheduler
    assert dict(changes.annotations) == annotations


def test_cambricon_sku_memory_must_be_whole_units() -> None:
    pool = mlu_pool()
    cambricon.BACKEND.validate(pool, [make_sku("ok", memory_mib=6144)])
    with pytest.raises(ConfigError, match="6000 MiB per MLU, is not a whole number") as caught:
        cambricon.BACKEND.validate(pool, [make_sku("odd", memory_mib=6000)])
    assert "for example 5888 or 6144 MiB" in str(caught.value)


def test_cambricon_whole_card_need_not_be_whole_units() -> None:
    pool = make_pool("cambricon", vendor="cambricon", model="MLU590", memory_mib_per_gpu=81000)
    cambricon.BACKEND.validate(pool, [make_sku("whole", memory_mib=81000, compute_pct=100)])
    assert dict(cambricon.BACKEND.container(whole_grant(pool), pool).resources) == {
        "cambricon.com/vmlu": "1"
    }


# --------------------------------------------------------------------------------------
# hygon
# --------------------------------------------------------------------------------------


def dcu_pool(**options: Any) -> Pool:
    return make_pool(
        "hygon", vendor="hygon", model="Z100L", memory_mib_per_gpu=32768, backend_options=options
    )


@pytest.mark.parametrize(
    ("options", "grant", "expected"),
    [
        pytest.param(
            {},
            {"memory_mib": 2000, "compute_pct": 60},
            {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2000", "hygon.com/dcucores": "60"},
            id="fraction-in-mib",
        ),
        pytest.param(
            {"memory_factor": 1024},
            {"memory_mib": 8192, "compute_pct": 25, "count": 2},
            {"hygon.com/dcunum": "2", "hygon.com/dcumem": "8", "hygon.com/dcucores": "25"},
            id="memory-factor",
        ),
        pytest.param(
            {},
            {"memory_mib": 32768, "compute_pct": 100, "gpus_per_slice": 4},
            {"hygon.com/dcunum": "4"},
            id="whole-dcus",
        ),
    ],
)
def test_hygon_container(
    options: dict[str, int], grant: dict[str, int], expected: dict[str, str]
) -> None:
    pool = dcu_pool(**options)
    hygon.BACKEND.validate(pool, [])
    assert dict(hygon.BACKEND.container(make_grant(pool, **grant), pool).resources) == expected


def test_hygon_pod_pins_the_dcu_type() -> None:
    pool = dcu_pool()
    changes = hygon.BACKEND.pod({"main": make_grant(pool)}, pool, "q")
    assert dict(changes.annotations) == {"hygon.com/use-dcutype": "Z100L"}
    assert changes.scheduler_name == "hami-scheduler"


def test_hygon_sku_memory_must_be_whole_memory_factor_units() -> None:
    pool = dcu_pool(memory_factor=1024)
    with pytest.raises(ConfigError, match="2000 MiB per DCU, is not a whole number"):
        hygon.BACKEND.validate(pool, [make_sku("odd", memory_mib=2000)])
