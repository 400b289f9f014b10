"""governance.contract is the wire contract between components: every public name is
pinned to its value here, so that changing one is a deliberate act with a test."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
from typing import Any

import pytest

from governance import contract
from governance.contract import Reason, SliceGrant, SlicesAnnotationError

pytestmark = pytest.mark.unit

CONSTANTS: dict[str, Any] = {
    "PREFIX": "gpupool.io/",
    "LABEL_DEPARTMENT": "gpupool.io/department",
    "LABEL_QUEUE": "gpupool.io/queue",
    "LABEL_SKU": "gpupool.io/sku",
    "ANNOTATION_ALLOCATION_ID": "gpupool.io/allocation-id",
    "ANNOTATION_SLICES": "gpupool.io/slices",
    "SKU_CUSTOM": "custom",
    "RESOURCE_NVIDIA_GPU": "nvidia.com/gpu",
    "RESOURCE_HAMI_GPUMEM": "nvidia.com/gpumem",
    "RESOURCE_HAMI_GPUMEM_PERCENTAGE": "nvidia.com/gpumem-percentage",
    "RESOURCE_HAMI_GPUCORES": "nvidia.com/gpucores",
    "SKU_RESOURCE_PREFIX": "gpupool.io/",
    "DCGM_FI_DEV_SM_CLOCK": "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK": "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_GPU_TEMP": "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP": "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE": "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL": "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL": "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL": "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS": "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE": "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED": "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_RESERVED": "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
    "DCGM_LABEL_GPU": "gpu",
    "DCGM_LABEL_UUID": "UUID",
    "DCGM_LABEL_DEVICE": "device",
    "DCGM_LABEL_MODEL_NAME": "modelName",
    "DCGM_LABEL_HOSTNAME": "Hostname",
    "DCGM_LABEL_GPU_I_PROFILE": "GPU_I_PROFILE",
    "DCGM_LABEL_GPU_I_ID": "GPU_I_ID",
    "DCGM_LABELS": ("gpu", "UUID", "device", "modelName", "Hostname"),
    "METRIC_SLICE_MEMORY_USED_BYTES": "gpupool_slice_memory_used_bytes",
    "METRIC_SLICE_MEMORY_LIMIT_BYTES": "gpupool_slice_memory_limit_bytes",
    "METRIC_SLICE_COMPUTE_UTILIZATION_RATIO": "gpupool_slice_compute_utilization_ratio",
    "METRIC_SLICE_COMPUTE_LIMIT_RATIO": "gpupool_slice_compute_limit_ratio",
    "METRIC_SLICE_PROCESSES": "gpupool_slice_processes",
    "SLICE_LABELS": (
        "namespace",
        "pod",
        "container",
        "department",
        "queue",
        "sku",
        "UUID",
        "Hostname",
    ),
    "METRIC_GPU_ALLOCATED_MEMORY_BYTES": "gpupool_gpu_allocated_memory_bytes",
    "METRIC_GPU_ALLOCATED_COMPUTE_RATIO": "gpupool_gpu_allocated_compute_ratio",
    "METRIC_GPU_ALLOCATED_SLICES": "gpupool_gpu_allocated_slices",
    "METRIC_UNATTRIBUTED_MEMORY_USED_BYTES": "gpupool_unattributed_memory_used_bytes",
    "METRIC_UNATTRIBUTED_PROCESSES": "gpupool_unattributed_processes",
    "METRIC_ADMISSION_REQUESTS_TOTAL": "gpupool_admission_requests_total",
    "METRIC_ADMISSION_DURATION_SECONDS": "gpupool_admission_duration_seconds",
    "METRIC_ADMISSION_LEDGER_COMMITS_TOTAL": "gpupool_admission_ledger_commits_total",
    "METRIC_ADMISSION_LEDGER_WRITES_TOTAL": "gpupool_admission_ledger_writes_total",
    "METRIC_QUOTA_USED": "gpupool_quota_used",
    "METRIC_QUOTA_LIMIT": "gpupool_quota_limit",
    "QUOTA_RESOURCES": ("slices", "memory_mib", "compute_pct"),
    "DEFAULT_WEBHOOK_PORT": 8443,
    "DEFAULT_EXPORTER_PORT": 9400,
    "DEFAULT_DASHBOARD_PORT": 8050,
    "ENTRY_POINT_GROUP": "gpupool.commands",
}

CALLABLES = {"sku_resource", "dump_slices", "load_slices", "SliceGrant", "SlicesAnnotationError"}

REASONS: dict[str, tuple[str, int]] = {
    "ADMITTED": ("Admitted", 200),
    "NOT_GPU": ("NotGPU", 200),
    "FORBIDDEN": ("Forbidden", 403),
    "QUEUE_QUOTA_EXCEEDED": ("QueueQuotaExceeded", 403),
    "BORROWING_LIMIT_EXCEEDED": ("BorrowingLimitExceeded", 403),
    "DEPARTMENT_QUOTA_EXCEEDED": ("DepartmentQuotaExceeded", 403),
    "SKU_QUOTA_EXCEEDED": ("SkuQuotaExceeded", 403),
    "POOL_QUOTA_EXCEEDED": ("PoolQuotaExceeded", 403),
    "POOL_CAPACITY_EXCEEDED": ("PoolCapacityExceeded", 403),
    "NAMESPACE_NOT_OWNED": ("NamespaceNotOwned", 403),
    "INVALID_REQUEST": ("InvalidRequest", 422),
    "UNKNOWN_SKU": ("UnknownSKU", 422),
    "UNKNOWN_QUEUE": ("UnknownQueue", 422),
    "SKU_NOT_OFFERED": ("SKUNotOffered", 422),
    "QUEUE_OF_OTHER_DEPARTMENT": ("QueueOfOtherDepartment", 422),
    "IMMUTABLE_GPU_FIELDS": ("ImmutableGPUFields", 422),
    "STORE_UNAVAILABLE": ("StoreUnavailable", 503),
    "NO_ORGANISATION": ("NoOrganisation", 503),
    "INTERNAL_ERROR": ("InternalError", 500),
    "MALFORMED_REVIEW": ("MalformedAdmissionReview", 400),
    "UNAUTHENTICATED": ("Unauthenticated", 401),
    "REQUEST_TIMEOUT": ("RequestTimeout", 408),
    "OVERLOADED": ("Overloaded", 503),
}


def _public_names() -> set[str]:
    """Names the module defines itself (not imports such as ``json`` or ``Any``)."""
    names = set()
    for name, value in vars(contract).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and (
            value.__module__ != contract.__name__
        ):
            continue
        if name in {"annotations", "Any"}:
            continue
        names.add(name)
    return names


def test_every_public_name_is_pinned_here() -> None:
    """A name added to or removed from the contract must be added or removed here."""
    assert _public_names() == set(CONSTANTS) | CALLABLES | {"Reason"}


@pytest.mark.parametrize(("name", "value"), sorted(CONSTANTS.items()), ids=sorted(CONSTANTS))
def test_contract_constant_keeps_its_value(name: str, value: Any) -> None:
    assert getattr(contract, name) == value
    assert type(getattr(contract, name)) is type(value)


def test_reason_codes_and_http_codes_are_pinned() -> None:
    assert {r.name: (r.value, r.http_code) for r in Reason} == REASONS


def test_reason_is_a_string_usable_as_a_metric_label() -> None:
    assert Reason.ADMITTED == "Admitted"
    assert f"{Reason.SKU_NOT_OFFERED}" == "SKUNotOffered"
    assert json.dumps({"reason": Reason.FORBIDDEN}) == '{"reason": "Forbidden"}'


def test_labels_and_annotations_carry_the_prefix() -> None:
    for name, value in CONSTANTS.items():
        if name.startswith(("LABEL_", "ANNOTATION_")):
            assert value.startswith(contract.PREFIX)


def test_sku_resource_is_the_skus_extended_resource() -> None:
    assert contract.sku_resource("a100-1g") == "gpupool.io/a100-1g"


def test_slice_grant_fields_and_totals() -> None:
    assert [f.name for f in dataclasses.fields(SliceGrant)] == [
        "count",
        "memory_mib",
        "compute_pct",
        "backend",
        "pool",
        "sku",
        "gpus_per_slice",
    ]
    g = SliceGrant(
        count=2,
        memory_mib=8192,
        compute_pct=30,
        backend="hami",
        pool="a100",
        sku="s",
        gpus_per_slice=2,
    )
    assert (g.gpus, g.total_memory_mib, g.total_compute_pct) == (4, 4 * 8192, 120)


# -- the slices annotation -------------------------------------------------------------------

GRANTS = {
    "worker": SliceGrant(
        count=2, memory_mib=8192, compute_pct=30, backend="hami", pool="a100", sku="custom"
    ),
    "main": SliceGrant(
        count=1,
        memory_mib=81920,
        compute_pct=100,
        backend="nvidia-mig",
        pool="h100",
        sku="h100-x2",
        gpus_per_slice=2,
    ),
}


def test_slices_annotation_round_trips() -> None:
    assert contract.load_slices(contract.dump_slices(GRANTS)) == GRANTS
    assert contract.load_slices(contract.dump_slices({})) == {}


def test_slices_annotation_is_compact_and_sorted() -> None:
    text = contract.dump_slices({"b": GRANTS["worker"], "a": GRANTS["worker"]})
    assert " " not in text
    assert text.startswith('{"a":{"backend":"hami","compute_pct":30,"count":2,')
    assert text == contract.dump_slices({"a": GRANTS["worker"], "b": GRANTS["worker"]})


def test_slices_annotation_without_gpus_per_slice_means_one() -> None:
    text = '{"c":{"count":1,"memory_mib":1,"compute_pct":1,"backend":"b","pool":"p","sku":"s"}}'
    assert contract.load_slices(text)["c"].gpus_per_slice == 1


GOOD = {"count": 1, "memory_mib": 1024, "compute_pct": 10, "backend": "b", "pool": "p", "sku": "s"}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("", "not JSON", id="empty"),
        pytest.param("{", "not JSON", id="truncated"),
        pytest.param("[]", "expected a JSON object of container -> grant", id="a-list"),
        pytest.param('"x"', "expected a JSON object", id="a-string"),
        pytest.param("null", "expected a JSON object", id="null"),
        pytest.param('{"c": 3}', "container 'c': expected an object", id="grant-not-an-object"),
        pytest.param('{"c": null}', "container 'c': expected an object", id="grant-null"),
        pytest.param(json.dumps({"c": _without("count")}), "'count'", id="missing-count"),
        pytest.param(json.dumps({"c": _without("sku")}), "'sku'", id="missing-sku"),
        pytest.param(json.dumps({"c": {**GOOD, "count": "two"}}), "container 'c'", id="bad-int"),
        pytest.param(json.dumps({"c": {**GOOD, "count": None}}), "container 'c'", id="null-int"),
        pytest.param(json.dumps({"c": {**GOOD, "memory_mib": [1]}}), "container 'c'", id="list"),
        pytest.param(
            json.dumps({"c": {**GOOD, "gpus_per_slice": "x"}}), "container 'c'", id="bad-gpus"
        ),
    ],
)
def test_malformed_slices_annotation_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(SlicesAnnotationError) as info:
        contract.load_slices(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "grant",
    [
        pytest.param({**GOOD, "count": 1.5}, id="fractional-count-truncated"),
        pytest.param({**GOOD, "count": True}, id="boolean-count"),
        pytest.param({**GOOD, "memory_mib": "2048"}, id="string-memory"),
        pytest.param({**GOOD, "backend": 7}, id="number-backend"),
        pytest.param({**GOOD, "gpus_per_slice": 2.0}, id="float-gpus-per-slice"),
    ],
)
def test_slices_annotation_with_wrong_types_is_refused(grant: dict[str, Any]) -> None:
    """Regression: values the webhook never writes are not coerced (1.5 -> 1, true -> 1)."""
    with pytest.raises(SlicesAnnotationError, match="container 'c'"):
        contract.load_slices(json.dumps({"c": grant}))


def test_slices_annotation_with_infinite_count_is_refused() -> None:
    """Regression: int(inf) raised OverflowError, which escaped as a crash."""
    text = json.dumps({"c": {**GOOD, "count": float("inf")}})
    assert "Infinity" in text
    with pytest.raises(SlicesAnnotationError):
        contract.load_slices(text)
