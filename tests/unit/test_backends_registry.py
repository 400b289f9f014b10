"""The backend table: every backend module is registered once, and behaves as a Backend."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import governance.backends as backends
from governance import contract
from governance.backends import _common, base
from governance.errors import ConfigError
from governance.model import Pool
from tests.support.backends import make_pool, make_sku, whole_grant

pytestmark = pytest.mark.unit

VENDOR_OF_POOL = {"huawei": "Ascend910B3", "cambricon": "MLU370-X8"}


def backend_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.iter_modules(backends.__path__)
        if not info.name.startswith("_") and info.name != "base"
    ]


def pool_for(name: str) -> Pool:
    backend = backends.get(name)
    options = {"replicas": 4} if name == "nvidia-timeslice" else {}
    return make_pool(
        name,
        vendor=backend.vendor,
        model=VENDOR_OF_POOL.get(backend.vendor, "A100-SXM4-80GB"),
        backend_options=options,
    )


def test_every_backend_module_is_registered() -> None:
    registered = {type(b).__module__ for b in backends.BACKENDS.values()}
    for module in backend_modules():
        qualified = f"governance.backends.{module}"
        assert hasattr(importlib.import_module(qualified), "BACKEND"), module
        assert qualified in registered, f"{module}.BACKEND is not in the backend table"


def test_backend_names_are_unique_and_match_the_table_keys() -> None:
    names = [b.name for b in backends._REGISTERED]
    assert len(names) == len(set(names))
    assert all(backends.BACKENDS[n].name == n for n in names)


def test_a_name_registered_twice_is_refused() -> None:
    hami = backends.get("hami")
    with pytest.raises(ValueError, match="'hami'"):
        backends._table([hami, hami])


def test_the_required_backends_are_shipped() -> None:
    required = {"hami", "nvidia-mps", "nvidia-timeslice", "nvidia-mig", "nvidia-whole", "kai"}
    assert required <= set(backends.BACKENDS)
    assert len({b.vendor for b in backends.BACKENDS.values()} - {"nvidia"}) >= 2


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: ascend, cambricon, hami"):
        backends.get("volcano")


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_backend_satisfies_the_protocol(name: str) -> None:
    backend: base.Backend = backends.get(name)
    assert isinstance(backend.gpu_resources, tuple)
    assert all(_common.is_resource_name(r) for r in backend.gpu_resources)


def test_kai_strips_the_annotations_that_ask_for_gpus() -> None:
    # A user-written gpu-memory would otherwise take more of a GPU than the ledger granted.
    assert {"gpu-fraction", "gpu-memory", "gpu-fraction-num-devices"} <= set(
        backends.get("kai").gpu_annotations
    )


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_strips_what_users_write(name: str) -> None:
    for resource in (
        contract.RESOURCE_NVIDIA_GPU,
        contract.RESOURCE_HAMI_GPUMEM,
        contract.RESOURCE_HAMI_GPUMEM_PERCENTAGE,
        contract.RESOURCE_HAMI_GPUCORES,
    ):
        assert resource in backends.get(name).gpu_resources


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_sets_the_pools_node_selector(name: str) -> None:
    pool = pool_for(name)
    changes = backends.get(name).pod({"main": whole_grant(pool)}, pool, "research")
    assert dict(changes.node_selector) == {"gpupool.io/pool": "pool-a"}


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_serves_a_whole_card(name: str) -> None:
    pool = pool_for(name)
    backend = backends.get(name)
    backend.validate(pool, [make_sku("whole", memory_mib=pool.memory_mib_per_gpu, compute_pct=100)])
    resources = backend.container(whole_grant(pool, count=2), pool).resources
    assert resources, "a whole card must ask for a resource"
    assert all(v.isdigit() and int(v) > 0 for v in resources.values())


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_refuses_unknown_options(name: str) -> None:
    pool = pool_for(name)
    typo = make_pool(
        name,
        vendor=pool.vendor,
        model=pool.model,
        backend_options={**pool.backend_options, "schedulr_name": "x"},
    )
    with pytest.raises(ConfigError, match=r"unknown option.*schedulr_name") as caught:
        backends.get(name).validate(typo, [])
    assert caught.value.path == "pools.pool-a.backend_options.schedulr_name"


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_refuses_a_pool_of_another_vendor(name: str) -> None:
    backend = backends.get(name)
    other = "amd"
    pool = make_pool(name, vendor=other)
    with pytest.raises(ConfigError, match=rf"vendor .amd.*serves {backend.vendor}"):
        backend.validate(pool, [])


def test_all_gpu_resources_is_the_sorted_union() -> None:
    union = backends.all_gpu_resources()
    assert list(union) == sorted(set(union))
    assert "nvidia.com/mig-1g.10gb" in union
    assert "huawei.com/Ascend910B3-memory" in union
    assert "cambricon.com/mlu.smlu.vmemory" in union


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("nvidia.com/gpu", True, id="plain"),
        pytest.param("nvidia.com/mig-1g.10gb", True, id="mig"),
        pytest.param("huawei.com/Ascend910B4-1-memory", True, id="ascend"),
        pytest.param("gpu", False, id="no-domain"),
        pytest.param("nvidia.com/mig-1g.10gb+me", False, id="plus-sign"),
        pytest.param("Nvidia.com/gpu", False, id="upper-case-domain"),
        pytest.param("nvidia.com/" + "x" * 64, False, id="name-too-long"),
    ],
)
def test_resource_name_syntax(name: str, valid: bool) -> None:
    assert _common.is_resource_name(name) is valid
