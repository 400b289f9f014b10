"""The request-form table: every form module registered once, each readable on its own,
the names users write derived from the table and honoured by every backend."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

import governance.forms as forms
from governance import backends
from governance.forms import base, hami, plain, sku_label, sku_resource
from governance.placement import SliceRequest

pytestmark = pytest.mark.unit


def resources(quantities: dict[str, Any], sku: str | None = None) -> forms.Resources:
    """One container named ``main``, in a pod labelled ``gpupool.io/sku: <sku>`` if given."""
    labels = {} if sku is None else {"gpupool.io/sku": sku}
    return forms.Resources(container="main", quantities=quantities, labels=labels)


def test_every_form_module_is_registered() -> None:
    registered = {type(form).__module__ for form in forms.FORMS}
    for info in pkgutil.iter_modules(forms.__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        qualified = f"governance.forms.{info.name}"
        assert hasattr(importlib.import_module(qualified), "FORM"), info.name
        assert qualified in registered, f"{info.name}.FORM is not in the form table"


def test_forms_are_asked_in_designs_order() -> None:
    assert forms.FORMS == (sku_resource.FORM, sku_label.FORM, hami.FORM, plain.FORM)


def test_a_name_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'plain'"):
        forms._table([plain.FORM, hami.FORM, plain.FORM])


def test_the_names_users_write_are_the_union_of_what_the_forms_read() -> None:
    assert forms.USER_RESOURCES == (
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
        "nvidia.com/gpumem-percentage",
        "nvidia.com/gpucores",
    )
    assert forms.USER_PREFIXES == ("gpupool.io/",)
    for form in forms.FORMS:
        assert set(form.resources) <= set(forms.USER_RESOURCES), form.name
        assert set(form.prefixes) <= set(forms.USER_PREFIXES), form.name


@pytest.mark.parametrize("name", sorted(backends.BACKENDS))
def test_every_backend_strips_every_name_a_form_reads(name: str) -> None:
    assert set(forms.USER_RESOURCES) <= set(backends.get(name).gpu_resources)


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/gpucores", True),
        ("gpupool.io/small", True),
        ("nvidia.com/mig-1g.10gb", False),
        ("cpu", False),
        ("example.com/gpupool.io/x", False),
    ],
)
def test_is_user_resource(name: str, written: bool) -> None:
    assert forms.is_user_resource(name) is written


@pytest.mark.parametrize(
    ("form", "given", "expected"),
    [
        pytest.param(
            sku_resource.FORM,
            resources({"gpupool.io/large": "2"}),
            SliceRequest(count=2, sku="large"),
            id="sku-resource",
        ),
        pytest.param(
            sku_resource.FORM, resources({"nvidia.com/gpu": "2"}), None, id="sku-no-match"
        ),
        pytest.param(
            sku_label.FORM,
            resources({"nvidia.com/gpu": "3"}, sku="small"),
            SliceRequest(count=3, sku="small"),
            id="label",
        ),
        pytest.param(
            sku_label.FORM,
            resources({"nvidia.com/gpu": "3"}, sku="custom"),
            None,
            id="label-custom-is-not-a-sku",
        ),
        pytest.param(
            hami.FORM,
            resources(
                {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "3k", "nvidia.com/gpucores": "30"}
            ),
            SliceRequest(count=2, custom=True, memory_mib=3000, compute_pct=30),
            id="hami",
        ),
        pytest.param(hami.FORM, resources({"nvidia.com/gpu": "2"}), None, id="hami-no-match"),
        pytest.param(plain.FORM, resources({"nvidia.com/gpu": "1k"}), SliceRequest(count=1000)),
        pytest.param(plain.FORM, resources({"nvidia.com/gpumem": "10"}), None, id="plain-no-match"),
    ],
)
def test_each_form_reads_its_own_shape_and_nothing_else(
    form: base.Form, given: forms.Resources, expected: SliceRequest | None
) -> None:
    reading = form.read(given)
    if expected is None:
        assert reading is None
    else:
        assert reading == forms.Reading(request=expected)


def test_zero_is_a_match_that_asks_for_nothing() -> None:
    assert plain.FORM.read(resources({"nvidia.com/gpu": "0"})) == forms.Reading(request=None)
    assert forms.read(resources({"gpupool.io/small": 0})) == forms.Reading(request=None)


def test_the_first_form_that_reads_a_container_wins() -> None:
    labelled = resources({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8"}, sku="small")
    assert hami.FORM.read(labelled) is not None  # HAMi would read it, but the label is first
    reading = forms.read(labelled)
    assert reading is not None
    assert reading.request == SliceRequest(count=1, sku="small")
    assert reading.warnings == (
        "container 'main': nvidia.com/gpumem ignored: SKU small (pod label gpupool.io/sku) "
        "fixes the memory and compute of a slice.",
    )
    assert forms.read(resources({})) is None


def test_a_form_names_the_container_and_what_to_write() -> None:
    with pytest.raises(forms.InvalidDemand) as err:
        forms.read(resources({"nvidia.com/gpu": "1.5"}))
    assert str(err.value) == (
        "container 'main' asks for nvidia.com/gpu: '1.5', which is not a whole number. "
        "Write it as a whole number in resources.limits."
    )
