"""nvidia-mig: SKUs to MIG profiles, by shape or explicitly, and the errors when none fits."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from governance.backends import nvidia_mig
from governance.errors import ConfigError, PlacementError
from tests.support.backends import H100_80GB_MIB, make_grant, make_pool, make_sku, whole_grant

pytestmark = pytest.mark.unit


def mig_pool(model: str = "A100-SXM4-80GB", memory_mib: int = 81920, **options: Any) -> Any:
    return make_pool(
        "nvidia-mig", model=model, memory_mib_per_gpu=memory_mib, backend_options=options
    )


@pytest.mark.parametrize(
    ("model", "memory_mib", "table"),
    [
        pytest.param("A100-SXM4-40GB", 40960, "A100-40GB", id="a100-40"),
        pytest.param("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB", id="a100-80"),
        pytest.param("NVIDIA A100 80GB PCIe", 81920, "A100-80GB", id="a100-80-pcie"),
        pytest.param("NVIDIA H100 80GB HBM3", H100_80GB_MIB, "H100-80GB", id="h100-reported"),
        pytest.param("H100 NVL", 95830, "H100-94GB", id="h100-nvl"),
        pytest.param("NVIDIA GH200 480GB", 97871, "GH200-96GB", id="gh200-not-h200"),
        pytest.param("NVIDIA H200", 143771, "H200-141GB", id="h200"),
        pytest.param("A30", 24576, "A30-24GB", id="a30"),
        pytest.param("B200", 183359, "B200-180GB", id="b200"),
    ],
)
def test_profile_table_is_found_from_model_and_memory(
    model: str, memory_mib: int, table: str
) -> None:
    found = nvidia_mig.table_for(mig_pool(model, memory_mib))
    assert found is not None
    assert found[0] == table


@pytest.mark.parametrize(
    ("model", "memory_mib"),
    [
        pytest.param("L40S", 46068, id="no-mig"),
        pytest.param("A100", 24576, id="no-such-memory-size"),
    ],
)
def test_no_profile_table(model: str, memory_mib: int) -> None:
    assert nvidia_mig.table_for(mig_pool(model, memory_mib)) is None


def test_profile_tables_follow_nvidias_geometry() -> None:
    a100 = {p.name: p for p in nvidia_mig.PROFILE_TABLES["A100-80GB"]}
    assert a100["1g.10gb"].compute == Fraction(1, 7)
    assert a100["3g.40gb"].compute == Fraction(3, 7)
    assert a100["7g.80gb"].compute == 1
    a30 = {p.name: p for p in nvidia_mig.PROFILE_TABLES["A30-24GB"]}
    assert a30["2g.12gb"].compute == Fraction(1, 2)
    for key, table in nvidia_mig.PROFILE_TABLES.items():
        assert table[-1].compute == 1, key
        assert table[-1].memory_gb == int(key.split("-")[1][:-2]), key
        assert list(table) == sorted(table, key=lambda p: (p.compute, p.memory_gb)), key


@pytest.mark.parametrize(
    ("model", "memory_mib", "sku", "profile"),
    [
        pytest.param("A100-SXM4-80GB", 81920, (10240, 14), "1g.10gb", id="exact-1g"),
        pytest.param("A100-SXM4-80GB", 81920, (9728, 10), "1g.10gb", id="smaller-than-1g"),
        pytest.param("A100-SXM4-80GB", 81920, (10240, 15), "2g.20gb", id="compute-over-1-7"),
        pytest.param("A100-SXM4-80GB", 81920, (12288, 14), "1g.20gb", id="memory-over-10gb"),
        pytest.param("A100-SXM4-80GB", 81920, (40960, 42), "3g.40gb", id="3g"),
        pytest.param("A100-SXM4-80GB", 81920, (40960, 43), "4g.40gb", id="4g"),
        pytest.param("A100-SXM4-80GB", 81920, (81920, 100), "7g.80gb", id="whole"),
        pytest.param("A100-SXM4-40GB", 40960, (5120, 14), "1g.5gb", id="a100-40-1g"),
        pytest.param("H100 80GB HBM3", H100_80GB_MIB, (H100_80GB_MIB, 100), "7g.80gb", id="h100"),
        pytest.param("H200", 143771, (18432, 14), "1g.18gb", id="h200-1g"),
        pytest.param("H200", 143771, (35000, 28), "2g.35gb", id="h200-2g"),
        pytest.param("A30", 24576, (6144, 25), "1g.6gb", id="a30-quarter"),
    ],
)
def test_sku_maps_to_the_smallest_covering_profile(
    model: str, memory_mib: int, sku: tuple[int, int], profile: str
) -> None:
    pool = mig_pool(model, memory_mib)
    s = make_sku("s", memory_mib=sku[0], compute_pct=sku[1])
    nvidia_mig.BACKEND.validate(pool, [s])
    grant = make_grant(pool, sku="s", memory_mib=sku[0], compute_pct=sku[1], count=2)
    changes = nvidia_mig.BACKEND.container(grant, pool)
    assert dict(changes.resources) == {f"nvidia.com/mig-{profile}": "2"}


def test_explicit_profile_wins_over_the_shape() -> None:
    pool = mig_pool(profiles={"s": "2g.20gb"})
    s = make_sku("s", memory_mib=10240, compute_pct=10)
    nvidia_mig.BACKEND.validate(pool, [s])
    grant = make_grant(pool, sku="s", memory_mib=10240, compute_pct=10, gpus_per_slice=2)
    assert dict(nvidia_mig.BACKEND.container(grant, pool).resources) == {
        "nvidia.com/mig-2g.20gb": "2"
    }


def test_explicit_profile_on_an_unknown_model() -> None:
    pool = mig_pool("RTX PRO 6000", 98304, profiles={"s": "1g.24gb"})
    nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=24576, compute_pct=25)])
    grant = make_grant(pool, sku="s")
    assert dict(nvidia_mig.BACKEND.container(grant, pool).resources) == {
        "nvidia.com/mig-1g.24gb": "1"
    }
    with pytest.raises(ConfigError, match="which is smaller"):
        nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=30000, compute_pct=25)])


def test_a_sku_larger_than_any_profile_is_a_config_error() -> None:
    pool = mig_pool()
    with pytest.raises(ConfigError) as caught:
        nvidia_mig.BACKEND.validate(pool, [make_sku("huge", memory_mib=90000, compute_pct=50)])
    message = str(caught.value)
    assert "SKU 'huge'" in message
    assert "pool 'pool-a'" in message
    assert "matches no MIG profile" in message
    assert "1g.10gb (10240 MiB, 14%)" in message
    assert "7g.80gb (81920 MiB, 100%)" in message
    assert caught.value.path == "skus.huge"


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        pytest.param(
            {"s": "1g.5gb"}, "profile '1g.5gb', which this GPU model does not have", id="other-gpu"
        ),
        pytest.param({"s": "banana"}, "profile 'banana', which", id="not-a-profile"),
        pytest.param({"s": "1g.10gb"}, "profile 1g.10gb .* which is smaller", id="too-small"),
    ],
)
def test_explicit_profile_errors(profiles: dict[str, str], message: str) -> None:
    pool = mig_pool(profiles=profiles)
    with pytest.raises(ConfigError, match=message) as caught:
        nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=20480, compute_pct=25)])
    assert "SKU 's'" in str(caught.value)
    assert "Valid profiles: 1g.10gb (10240 MiB, 14%), 1g.20gb" in str(caught.value)


def test_profiles_for_skus_not_on_the_pool_are_an_error() -> None:
    pool = mig_pool(profiles={"gone": "1g.10gb"})
    with pytest.raises(ConfigError, match=r"SKU\(s\) gone, which are not offered"):
        nvidia_mig.BACKEND.validate(pool, [make_sku("s")])


def test_unknown_model_without_mapping_says_how_to_fix_it() -> None:
    pool = mig_pool("L40S", 46068)
    with pytest.raises(
        ConfigError,
        match=r"no MIG profile table for GPU model .L40S.*Set backend_options\.mig_model",
    ):
        nvidia_mig.BACKEND.validate(pool, [make_sku("s")])


def test_mig_model_option_picks_the_table() -> None:
    pool = mig_pool("custom-board", 40960, mig_model="A100-40GB")
    nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=5000, compute_pct=10)])
    grant = make_grant(pool, sku="s", memory_mib=5000, compute_pct=10)
    assert dict(nvidia_mig.BACKEND.container(grant, pool).resources) == {
        "nvidia.com/mig-1g.5gb": "1"
    }
    with pytest.raises(ConfigError, match="unknown MIG model 'A100'"):
        nvidia_mig.BACKEND.validate(mig_pool(mig_model="A100"), [])


def test_single_strategy_asks_for_nvidia_gpu() -> None:
    pool = mig_pool(strategy="single", profile="3g.40gb")
    nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=40960, compute_pct=40)])
    grant = make_grant(pool, sku="s", memory_mib=40960, compute_pct=40, count=3)
    assert dict(nvidia_mig.BACKEND.container(grant, pool).resources) == {"nvidia.com/gpu": "3"}


def test_single_strategy_errors() -> None:
    with pytest.raises(ConfigError, match="needs the one profile"):
        nvidia_mig.BACKEND.validate(mig_pool(strategy="single"), [make_sku("s")])
    pool = mig_pool(strategy="single", profile="1g.10gb")
    with pytest.raises(ConfigError, match=r"single-strategy profile.*smaller"):
        nvidia_mig.BACKEND.validate(pool, [make_sku("s", memory_mib=20480, compute_pct=25)])
    with pytest.raises(ConfigError, match="expected one of mixed, single"):
        nvidia_mig.BACKEND.validate(mig_pool(strategy="both"), [])


def test_hami_form_request_is_mapped_by_shape_or_refused() -> None:
    pool = mig_pool()
    grant = make_grant(pool, sku="custom", memory_mib=30000, compute_pct=30)
    assert dict(nvidia_mig.BACKEND.container(grant, pool).resources) == {
        "nvidia.com/mig-3g.40gb": "1"
    }
    unknown = mig_pool("L40S", 46068)
    with pytest.raises(PlacementError, match="no MIG profile table") as caught:
        nvidia_mig.BACKEND.container(make_grant(unknown, sku="custom"), unknown)
    assert caught.value.code.value == "InvalidRequest"


def test_mig_strips_every_profile_resource() -> None:
    resources = set(nvidia_mig.BACKEND.gpu_resources)
    assert {"nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-7g.141gb"} <= resources


def test_whole_card_on_mig_is_the_7g_profile() -> None:
    pool = mig_pool("H100 80GB HBM3", H100_80GB_MIB)
    changes = nvidia_mig.BACKEND.container(whole_grant(pool), pool)
    assert dict(changes.resources) == {"nvidia.com/mig-7g.80gb": "1"}
