"""governance.config: YAML loading, validation into an Org, quantities, diffs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance import backends, config, quantity
from governance.errors import ConfigError
from governance.model import Pool, Sku
from governance.resources import Limit, Limits
from tests.support.org import GIB, org_document, with_change

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


def build(doc: dict[str, Any]) -> Any:
    return config.build_org(doc, source="org.yaml")


# -- the happy path ------------------------------------------------------------------


def test_small_document_builds_the_organisation() -> None:
    org = build(org_document())

    assert org.pools["a100"].memory_mib_per_gpu == 80 * GIB
    assert org.skus["a100-1g"].memory_mib == 10 * GIB
    assert org.skus["a100-1g"].compute_pct == 15
    whole = org.skus["a100-whole"]
    assert (whole.memory_mib, whole.memory_pct, whole.price_per_hour) == (None, 100, 2.5)
    ml = org.departments["ml"]
    assert ml.namespaces == ("ml", "ml-*")
    assert ml.quota.total == Limits.of(slices=16, memory_mib=320 * GIB, compute_pct=400)
    train = org.queues[("ml", "train")]
    assert train.nominal.total == Limits.of(memory_mib=160 * GIB)
    assert train.borrowing_limit == Limits.of(memory_mib=80 * GIB)
    # No default SKU named: the whole card of its pool.
    assert train.default_sku == "a100-whole"
    assert org.queues[("ml", "infer")].default_sku == "a100-1g"
    assert org.department_of("ml-dev") is ml


def test_subjects_are_kept_in_canonical_form() -> None:
    doc = with_change(
        org_document(),
        "role_bindings[1].subjects",
        ["system:serviceaccounts:ml-ci", "user:system:serviceaccount:ml:bot", "group:x"],
    )
    binding = build(doc).role_bindings[1]
    assert binding.subjects == (
        "group:system:serviceaccounts:ml-ci",
        "system:serviceaccount:ml:bot",
        "group:x",
    )
    assert build(org_document()).role_bindings[0].department == "*"


def test_example_organisation_is_valid_and_realistic() -> None:
    doc = config.load_file(EXAMPLE)
    org = config.build_org(doc, source=str(EXAMPLE))

    assert len(org.departments) >= 4
    assert len(org.queues) >= 8
    backends_used = {p.backend for p in org.pools.values()}
    assert {"hami", "nvidia-mig"} <= backends_used
    assert {p.vendor for p in org.pools.values()} - {"nvidia"}, "needs a non-NVIDIA pool"
    assert all(s.price_per_hour is not None for s in org.skus.values())
    subjects = {s for b in org.role_bindings for s in b.subjects}
    assert any(s.startswith("user:") for s in subjects)
    assert any(s.startswith("group:system:serviceaccounts:") for s in subjects)
    assert any(s.startswith("system:serviceaccount:") for s in subjects)
    assert any(b.queues or b.skus for b in org.role_bindings)


def test_unlimited_is_not_zero() -> None:
    doc = with_change(org_document(), "departments[0].quota.slices", "unlimited")
    doc = with_change(doc, "departments[0].quota.compute", 0)
    total = build(doc).departments["ml"].quota.total
    assert total.slices == Limit(None)
    assert total.compute_pct == Limit(0)
    # A key left out is unlimited too.
    assert (
        build(with_change(doc, "departments[0].quota.slices", ...))
        .departments["ml"]
        .quota.total.slices.unlimited
    )


# -- quantities ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        pytest.param(512, 512, id="int-is-MiB"),
        pytest.param("512", 512, id="string-int-is-MiB"),
        pytest.param("512Mi", 512, id="Mi"),
        pytest.param("80Gi", 80 * 1024, id="Gi"),
        pytest.param("8GiB", 8 * 1024, id="GiB"),
        pytest.param("1Ti", 1024 * 1024, id="Ti"),
        pytest.param("1.5Gi", 1536, id="fraction-of-Gi"),
        pytest.param("unlimited", None, id="unlimited"),
        pytest.param(0, 0, id="zero"),
    ],
)
def test_memory_quantities(text: object, mib: int | None) -> None:
    assert quantity.parse_memory_mib(text) == mib


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("80GB", "binary unit", id="decimal-unit"),
        pytest.param("-1Gi", "negative", id="negative-string"),
        pytest.param(-5, "negative", id="negative-int"),
        pytest.param("0.5Mi", "whole number of MiB", id="below-a-MiB"),
        pytest.param(1.5, "whole number of MiB", id="float"),
        pytest.param(True, "not a quantity", id="bool"),
        pytest.param("lots", "not a quantity", id="word"),
    ],
)
def test_bad_memory_quantities(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantity.parse_memory_mib(text)


@pytest.mark.parametrize(
    ("text", "pct"),
    [
        pytest.param(30, 30, id="int"),
        pytest.param("30%", 30, id="percent"),
        pytest.param("3200%", 3200, id="many-cards"),
        pytest.param("unlimited", None, id="unlimited"),
    ],
)
def test_compute_quantities(text: object, pct: int | None) -> None:
    assert quantity.parse_compute_pct(text) == pct


@pytest.mark.parametrize("text", ["30.5%", 0.5, "-3%", "half", False])
def test_bad_compute_quantities(text: object) -> None:
    with pytest.raises(ValueError, match="compute"):
        quantity.parse_compute_pct(text)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["", "Mi", "Gi", "Ti"]))
def test_memory_round_trips_through_its_display_form(value: int, unit: str) -> None:
    scale = {"": 1, "Mi": 1, "Gi": 1024, "Ti": 1024**2}[unit]
    mib = quantity.parse_memory_mib(f"{value}{unit}")
    assert mib == value * scale
    assert quantity.parse_memory_mib(quantity.format_mib(mib)) == mib


# -- YAML ----------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as err:
        config.load_document("pools:\n  - name: a\n   bad: [\n", source="org.yaml")
    assert err.value.source == "org.yaml"
    assert err.value.path.startswith("line 3")
    assert str(err.value).startswith("org.yaml: line 3")


def test_yaml_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'name' \\(first at line 1\\)"):
        config.load_document("name: a\nname: b\n", source="org.yaml")


def test_yaml_that_is_not_a_mapping_is_an_error() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load_document("- a\n- b\n", source="org.yaml")


def test_yaml_dates_stay_strings() -> None:
    doc = config.load_document("description: 2026-11-27\n", source="org.yaml")
    assert doc == {"description": "2026-11-27"}


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        config.load_file(tmp_path / "missing.yaml")


# -- every bad configuration, with its message ---------------------------------------

BAD = [
    pytest.param(
        "departments[0].quota.per_sku",
        {"h100": {"slices": 1}},
        "departments[0].quota.per_sku.h100",
        "unknown SKU 'h100' in a quota",
        id="unknown-sku-in-department-quota",
    ),
    pytest.param(
        "departments[0].queues[0].quota.per_sku",
        {"nope": {"slices": 1}},
        "departments[0].queues[0].quota.per_sku.nope",
        "unknown SKU 'nope' in a quota",
        id="unknown-sku-in-queue-quota",
    ),
    pytest.param(
        "departments[0].queues[1].default_sku",
        "h100-1g",
        "departments[0].queues[1].default_sku",
        "unknown SKU 'h100-1g' in queue ml/infer",
        id="unknown-default-sku-of-queue",
    ),
    pytest.param(
        "departments[0].queues[1].skus",
        ["a100-1g", "ghost"],
        "departments[0].queues[1].skus[1]",
        "unknown SKU 'ghost' in queue ml/infer",
        id="unknown-sku-in-queue",
    ),
    pytest.param(
        "departments[0].queues[1].skus",
        ["a100-half"],
        "departments[0].queues[1].default_sku",
        "is not among the SKUs of queue ml/infer",
        id="default-sku-outside-queue-skus",
    ),
    pytest.param(
        "departments[0].queues[0].pool",
        "h100",
        "departments[0].queues[0].pool",
        "unknown pool 'h100' for queue ml/train",
        id="unknown-pool-of-queue",
    ),
    pytest.param(
        "skus[0].pools",
        ["a100", "v100"],
        "skus[0].pools[1]",
        "unknown pool 'v100' for SKU a100-1g",
        id="unknown-pool-of-sku",
    ),
    pytest.param(
        "departments[0].quota.per_pool",
        {"v100": {"memory": "1Gi"}},
        "departments[0].quota.per_pool.v100",
        "unknown pool 'v100' in a quota",
        id="unknown-pool-in-quota",
    ),
    pytest.param(
        "pools[0].backend",
        "volcano",
        "pools[0].backend",
        "unknown backend 'volcano' for pool a100; known backends: ascend",
        id="unknown-backend",
    ),
    pytest.param(
        "departments[1]",
        {
            "name": "cv",
            "namespaces": ["ml"],
            "default_queue": "q",
            "queues": [{"name": "q", "pool": "a100"}],
        },
        "departments[1].namespaces[0]",
        "namespace 'ml' is listed twice (department ml has it at departments[0].namespaces[0])",
        id="namespace-in-two-departments",
    ),
    pytest.param(
        "departments[1]",
        {
            "name": "cv",
            "namespaces": ["ml-*"],
            "default_queue": "q",
            "queues": [{"name": "q", "pool": "a100"}],
        },
        "departments[1].namespaces[0]",
        "namespace 'ml-*' is listed twice",
        id="identical-pattern-in-two-departments",
    ),
    pytest.param(
        "departments[1]",
        {
            "name": "cv",
            "namespaces": ["*-dev"],
            "default_queue": "q",
            "queues": [{"name": "q", "pool": "a100"}],
        },
        "departments[1].namespaces[0]",
        "namespace pattern '*-dev' of department cv overlaps 'ml-*' of department ml",
        id="overlapping-patterns",
    ),
    pytest.param(
        "departments[0].namespaces",
        ["ml", "ML_Prod"],
        "departments[0].namespaces[1]",
        "'ML_Prod' is not a namespace name or glob pattern",
        id="invalid-namespace",
    ),
    pytest.param(
        "departments[0].default_queue",
        "batch",
        "departments[0].default_queue",
        "default queue 'batch' is not a queue of department ml; its queues: train, infer",
        id="default-queue-does-not-exist",
    ),
    pytest.param(
        "departments[0].default_queue",
        ...,
        "departments[0].default_queue",
        "required field 'default_queue' is missing",
        id="default-queue-missing",
    ),
    pytest.param(
        "skus[3]",
        {"name": "a100-1g", "memory": "5Gi", "compute": 10, "pools": ["a100"]},
        "skus[3].name",
        "duplicate SKU name 'a100-1g' (also skus[0])",
        id="duplicate-sku",
    ),
    pytest.param(
        "pools[1]",
        {
            "name": "a100",
            "vendor": "nvidia",
            "model": "A100",
            "backend": "hami",
            "gpus": 1,
            "memory_per_gpu": "40Gi",
        },
        "pools[1].name",
        "duplicate pool name 'a100' (also pools[0])",
        id="duplicate-pool",
    ),
    pytest.param(
        "departments[0].queues[1].name",
        "train",
        "departments[0].queues[1].name",
        "duplicate queue (in department ml) name 'train'",
        id="duplicate-queue",
    ),
    pytest.param(
        "departments[1]",
        {
            "name": "ml",
            "namespaces": [],
            "default_queue": "q",
            "queues": [{"name": "q", "pool": "a100"}],
        },
        "departments[1].name",
        "duplicate department name 'ml' (also departments[0])",
        id="duplicate-department",
    ),
    pytest.param(
        "departments[0].quota.memory",
        "-10Gi",
        "departments[0].quota.memory",
        "memory '-10Gi' is negative",
        id="negative-memory",
    ),
    pytest.param(
        "departments[0].queues[0].quota.slices",
        -1,
        "departments[0].queues[0].quota.slices",
        "slices -1 is negative",
        id="negative-slices",
    ),
    pytest.param(
        "departments[0].quota.compute",
        "-5%",
        "departments[0].quota.compute",
        "compute '-5%' is negative",
        id="negative-compute",
    ),
    pytest.param(
        "pools[0].gpus",
        -8,
        "pools[0].gpus",
        "gpus -8 is negative",
        id="negative-gpus",
    ),
    pytest.param(
        "skus[2].price_per_hour",
        -1.0,
        "skus[2].price_per_hour",
        "price_per_hour -1.0 is negative",
        id="negative-price",
    ),
    pytest.param(
        "departments[0].queues[0].quota.memory",
        "80GB",
        "departments[0].queues[0].quota.memory",
        "memory '80GB' is not a quantity",
        id="memory-with-decimal-unit",
    ),
    pytest.param(
        "pools[0].memory_oversubscription",
        0.8,
        "pools[0].memory_oversubscription",
        "over-subscription factor 0.8 is below 1.0",
        id="memory-oversubscription-below-one",
    ),
    pytest.param(
        "pools[0].compute_oversubscription",
        0.5,
        "pools[0].compute_oversubscription",
        "over-subscription factor 0.5 is below 1.0",
        id="compute-oversubscription-below-one",
    ),
    pytest.param(
        "pools[0].memory_per_gpu",
        "unlimited",
        "pools[0].memory_per_gpu",
        "memory per GPU must be a quantity, not unlimited",
        id="pool-memory-unlimited",
    ),
    pytest.param(
        "departments[0].quota.memory",
        ...,
        "departments[0].queues[0].borrowing_limit.memory",
        "queue ml/train has a borrowing limit on memory, but department ml has no memory quota",
        id="borrowing-limit-in-department-without-quota",
    ),
    pytest.param(
        "departments[0].queues[0].quota.memory",
        ...,
        "departments[0].queues[0].borrowing_limit.memory",
        "has a borrowing limit on memory but no nominal memory quota",
        id="borrowing-limit-without-nominal-quota",
    ),
    pytest.param(
        "skus[0].memory_pct",
        10,
        "skus[0]",
        "SKU a100-1g gives both memory and memory_pct",
        id="sku-with-memory-and-memory-pct",
    ),
    pytest.param(
        "skus[0].memory",
        ...,
        "skus[0]",
        "SKU a100-1g gives neither memory nor memory_pct",
        id="sku-without-memory",
    ),
    pytest.param(
        "skus[1].memory",
        "96Gi",
        "skus[1].memory",
        "SKU a100-half has 96Gi per GPU, more than a card of pool a100 (A100-80GB, 80Gi)",
        id="sku-bigger-than-a-card",
    ),
    pytest.param(
        "skus[1].compute",
        "150%",
        "skus[1].compute",
        "compute 150% is not 1..100% of a card",
        id="sku-more-compute-than-a-card",
    ),
    pytest.param(
        "skus[2].memory_pct",
        120,
        "skus[2].memory_pct",
        "SKU a100-whole memory_pct 120 is not 1..100",
        id="sku-memory-pct-over-100",
    ),
    pytest.param(
        "skus[0].name",
        "custom",
        "skus[0].name",
        "SKU name 'custom' is reserved",
        id="reserved-sku-name",
    ),
    pytest.param(
        "skus[0].pools",
        [],
        "skus[0].pools",
        "SKU a100-1g is offered on no pool",
        id="sku-on-no-pool",
    ),
    pytest.param(
        "departments[0].name",
        "ML Team",
        "departments[0].name",
        "department name 'ML Team' is not valid",
        id="invalid-department-name",
    ),
    pytest.param(
        "role_bindings[1].role",
        "owner",
        "role_bindings[1].role",
        "unknown role 'owner'; roles: platform-admin, dept-admin, member, viewer",
        id="unknown-role",
    ),
    pytest.param(
        "role_bindings[1].department",
        "finance",
        "role_bindings[1].department",
        "unknown department 'finance'; departments: ml",
        id="unknown-department-in-binding",
    ),
    pytest.param(
        "role_bindings[1].department",
        ...,
        "role_bindings[1].department",
        "required field 'department' is missing",
        id="binding-without-department",
    ),
    pytest.param(
        "role_bindings[0].department",
        "ml",
        "role_bindings[0].department",
        "platform-admin holds every department",
        id="platform-admin-in-one-department",
    ),
    pytest.param(
        "role_bindings[1].subjects",
        ["alice"],
        "role_bindings[1].subjects[0]",
        "subject 'alice' is not one of: user:NAME, group:NAME",
        id="subject-without-kind",
    ),
    pytest.param(
        "role_bindings[1].subjects",
        ["serviceaccount:ml:bot"],
        "role_bindings[1].subjects[0]",
        "is not one of",
        id="subject-unknown-kind",
    ),
    pytest.param(
        "role_bindings[1].subjects",
        ["system:serviceaccount:ml"],
        "role_bindings[1].subjects[0]",
        "must be system:serviceaccount:NAMESPACE:NAME",
        id="service-account-without-name",
    ),
    pytest.param(
        "role_bindings[1].subjects",
        ["system:serviceaccounts:Bad_NS"],
        "role_bindings[1].subjects[0]",
        "service-account group 'system:serviceaccounts:Bad_NS'",
        id="service-account-group-bad-namespace",
    ),
    pytest.param(
        "role_bindings[1].subjects",
        [],
        "role_bindings[1].subjects",
        "a role binding needs at least one subject",
        id="binding-without-subjects",
    ),
    pytest.param(
        "role_bindings[1].queues",
        ["serve"],
        "role_bindings[1].queues[0]",
        "unknown queue 'serve' in department ml",
        id="binding-narrowed-to-unknown-queue",
    ),
    pytest.param(
        "role_bindings[1].skus",
        ["h100"],
        "role_bindings[1].skus[0]",
        "unknown SKU 'h100'",
        id="binding-narrowed-to-unknown-sku",
    ),
    pytest.param(
        "role_bindings[1].role",
        "viewer",
        None,
        None,
        id="viewer-binding-is-fine",
    ),
    pytest.param(
        "pools[0].colour",
        "green",
        "pools[0].colour",
        "unknown field 'colour'",
        id="unknown-field",
    ),
    pytest.param(
        "departments",
        "ml",
        "departments",
        "Input should be a valid list",
        id="wrong-type",
    ),
]


@pytest.mark.parametrize(("change", "value", "path", "message"), BAD)
def test_bad_configuration_names_path_and_reason(
    change: str, value: Any, path: str | None, message: str | None
) -> None:
    doc = with_change(org_document(), change, value)
    if path is None:
        build(doc)
        return
    with pytest.raises(ConfigError) as err:
        build(doc)
    assert err.value.source == "org.yaml"
    assert err.value.path == path
    assert message is not None and message in err.value.reason, err.value.reason
    assert str(err.value).startswith(f"org.yaml: {path}: ")


def test_narrowing_is_for_member_bindings_only() -> None:
    doc = with_change(org_document(), "role_bindings[1].role", "viewer")
    doc = with_change(doc, "role_bindings[1].queues", ["train"])
    with pytest.raises(ConfigError, match="only a member binding may be narrowed"):
        build(doc)


def test_an_exact_namespace_may_carve_out_of_another_departments_pattern() -> None:
    doc = with_change(
        org_document(),
        "departments[1]",
        {
            "name": "cv",
            "namespaces": ["ml-vision"],
            "default_queue": "q",
            "queues": [{"name": "q", "pool": "a100"}],
        },
    )
    org = build(doc)
    assert org.department_of("ml-vision") is org.departments["cv"]
    assert org.department_of("ml-other") is org.departments["ml"]


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("ml-*", "ml-*", True),
        ("ml-*", "*-dev", True),
        ("ml-*", "cv-*", False),
        ("ml-?", "ml-ab", False),
        ("ml-?", "ml-a", True),
        ("*", "anything", True),
        ("a*b", "a*c", False),
        ("team-*-gpu", "team-ml-*", True),
    ],
)
def test_glob_overlap(a: str, b: str, overlap: bool) -> None:
    assert config.globs_overlap(a, b) is overlap
    assert config.globs_overlap(b, a) is overlap


# -- backends ------------------------------------------------------------------------


class _PickyBackend:
    name = "hami"
    vendor = "nvidia"
    gpu_resources = ("nvidia.com/gpu",)

    def container(self, grant: Any, pool: Any) -> Any:
        raise NotImplementedError

    def pod(self, grants: Any, pool: Any, queue: str) -> Any:
        raise NotImplementedError

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        for sku in skus:
            if sku.compute_pct < 20:
                raise ConfigError(
                    f"SKU {sku.name!r} is too small for pool {pool.name}", path=f"skus.{sku.name}"
                )


def test_registered_backend_validates_the_skus_of_its_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(backends.BACKENDS, "hami", _PickyBackend())  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        build(org_document())
    assert err.value.path == "skus[0]"
    assert "SKU 'a100-1g' is too small for pool a100" in err.value.reason


# -- diffs ---------------------------------------------------------------------------


def test_diff_of_a_new_organisation_adds_everything() -> None:
    lines = config.diff(None, build(org_document()))
    assert lines[:2] == ["+ pool a100", "+ sku a100-1g"]
    assert "+ department ml" in lines
    assert "+ queue ml/train" in lines
    assert "+ binding member in ml for group:ml-team" in lines


def test_diff_names_changed_fields_added_and_removed_entities() -> None:
    old = build(org_document())
    doc = with_change(org_document(), "departments[0].queues[0].quota.memory", "240Gi")
    doc = with_change(doc, "skus", doc["skus"][1:])
    doc = with_change(doc, "departments[0].queues[1].default_sku", ...)
    new_queue = {"name": "batch", "pool": "a100"}
    doc = with_change(doc, "departments[0].queues[2]", new_queue)
    lines = config.diff(old, build(doc))
    assert "~ queue ml/train nominal memory 160Gi -> 240Gi" in lines
    assert "~ queue ml/infer default_sku a100-1g -> a100-whole" in lines
    assert "+ queue ml/batch" in lines
    assert "- sku a100-1g" in lines
    assert config.diff(old, old) == []


def test_errors_in_a_loaded_document_name_the_line() -> None:
    text = EXAMPLE.read_text().replace(
        "quota: {slices: 32, memory: 384Gi}", "quota: {slices: 32, memory: 384GB}"
    )
    line = 1 + text.splitlines().index("        quota: {slices: 32, memory: 384GB}")
    doc = config.load_document(text, source="org.yaml")
    with pytest.raises(ConfigError) as err:
        config.build_org(doc, source="org.yaml")
    assert err.value.path == "departments[1].queues[2].quota.memory"
    assert err.value.reason.endswith(f"(line {line})")


def test_a_cross_reference_error_names_the_line_of_its_path() -> None:
    text = EXAMPLE.read_text().replace("default_queue: npu-train", "default_queue: npu-tain")
    line = 1 + text.splitlines().index("    default_queue: npu-tain")
    with pytest.raises(ConfigError, match=rf"default queue 'npu-tain' .* \(line {line}\)$"):
        config.build_org(config.load_document(text, source="org.yaml"), source="org.yaml")


def test_line_of_falls_back_to_the_enclosing_path() -> None:
    doc = config.load_document("pools:\n  - name: a\n    gpus: 1\n", source="x")
    assert isinstance(doc, config.Document)
    assert doc.line_of("pools[0].gpus") == 3
    assert doc.line_of("pools[0].memory_per_gpu") == 2
    assert doc.line_of("pools[0].backend_options.chip") == 2
    assert doc.line_of("skus[0]") is None


def test_test_builders_agree_with_the_document_builder() -> None:
    from tests.support.org import make_org, make_pool, make_sku

    built = build(org_document())
    assert built.pools["a100"] == make_pool()
    assert built.skus["a100-1g"] == make_sku()
    org = make_org()
    assert set(org.skus) == set(built.skus)
    assert set(org.queues) == set(built.queues)
    assert org.department_of("ml-x") is org.departments["ml"]


# -- every error of a file at once ---------------------------------------------------

SEVERAL_REFERENCE_ERRORS = """\
pools:
  - {name: a100, vendor: nvidia, model: A100-80GB, backend: hami, gpus: 8, memory_per_gpu: 80Gi}
  - {name: v100, vendor: nvidia, model: V100, backend: volcano, gpus: 4, memory_per_gpu: 32Gi}
skus:
  - {name: a100-1g, memory: 10Gi, compute: 15%, pools: [a100, h100]}
departments:
  - name: ml
    namespaces: [ml]
    default_queue: batch
    queues:
      - {name: train, pool: a100, default_sku: ghost}
      - {name: infer, pool: t4}
role_bindings:
  - {role: member, department: ml, subjects: [group:ml], queues: [infer, nope]}
  - {role: wizard, department: ml, subjects: [user:merlin]}
"""


def test_a_file_with_several_errors_reports_each_with_its_path_and_line() -> None:
    document = config.load_document(SEVERAL_REFERENCE_ERRORS, source="org.yaml")
    with pytest.raises(ConfigError) as caught:
        config.build_org(document, source="org.yaml")
    found = [(e.path, e.line) for e in caught.value.errors]
    assert found == [
        ("pools[1].backend", 3),
        ("skus[0].pools[1]", 5),
        ("departments[0].queues[0].default_sku", 11),
        ("departments[0].queues[1].pool", 12),
        ("departments[0].default_queue", 9),
        ("role_bindings[0].queues[1]", 14),
        ("role_bindings[1].role", 15),
    ]
    reasons = [e.reason for e in caught.value.errors]
    assert reasons[0].startswith("unknown backend 'volcano' for pool v100")
    assert reasons[3].startswith("unknown pool 't4' for queue ml/infer")
    # the queue left out for its unknown pool is not reported again as unknown
    assert "'infer'" not in reasons[5] and "unknown queue 'nope'" in reasons[5]
    # shown one per line, FILE: PATH: REASON (line N); the first is .path and .reason
    lines = str(caught.value).splitlines()
    assert len(lines) == 7
    assert lines[1] == (
        "org.yaml: skus[0].pools[1]: unknown pool 'h100' for SKU a100-1g; pools: a100, v100 "
        "(line 5)"
    )
    assert caught.value.path == "pools[1].backend"
    assert caught.value.reason.endswith("(line 3)")


SEVERAL_SHAPE_ERRORS = """\
pools:
  - {name: a100, vendor: nvidia, model: A100, backend: hami, gpus: -2, memory_per_gpu: 80GB}
skus:
  - {name: a100-1g, memroy: 10Gi, compute: 15%, pools: [a100]}
departments:
  - {name: ml, default_queue: train, quota: {compute: lots}}
"""


def test_every_shape_error_of_a_file_is_reported() -> None:
    document = config.load_document(SEVERAL_SHAPE_ERRORS, source="org.yaml")
    with pytest.raises(ConfigError) as caught:
        config.build_org(document, source="org.yaml")
    found = {(e.path, e.line) for e in caught.value.errors}
    assert found == {
        ("pools[0].gpus", 2),
        ("pools[0].memory_per_gpu", 2),
        ("skus[0].memroy", 4),
        ("departments[0].quota.compute", 6),
    }
    assert "more error" not in str(caught.value)
    assert all(line.startswith("org.yaml: ") for line in str(caught.value).splitlines())


@pytest.mark.parametrize(
    ("text", "mib", "in_config"),
    [
        pytest.param("512", 512, True, id="count-of-MiB"),
        pytest.param("8Gi", 8192, True, id="binary-suffix-is-bytes"),
        pytest.param("1.5Gi", 1536, True, id="fraction-of-Gi"),
        pytest.param("3k", 3000, False, id="decimal-suffix-is-a-count"),
        pytest.param("1536Ki", None, False, id="not-whole-MiB"),
    ],
)
def test_one_rule_for_gpu_memory(text: str, mib: int | None, in_config: bool) -> None:
    """HAMi's gpumem and the configuration read memory by one rule (quantity.to_mib);
    the configuration accepts fewer spellings (no decimal suffix), never other values."""
    assert quantity.to_mib(quantity.parse(text)) == mib
    if in_config:
        assert quantity.parse_memory_mib(text) == mib
    else:
        with pytest.raises(ValueError, match="memory"):
            quantity.parse_memory_mib(text)
