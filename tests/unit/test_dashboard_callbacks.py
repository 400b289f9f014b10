"""A callback's outputs as one named structure: Dash's Output list and the values
returned come from the same declaration, and a declaration that cannot be read is
refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import pytest

from dashboard import callbacks
from dashboard.callbacks import Out
from dashboard.pages import overview


@dataclass(frozen=True, kw_only=True)
class Shown(callbacks.Outputs):
    title: Annotated[str, Out("t", "children")]
    rows: Annotated[list[Any], Out("grid", "data")]
    pages: Annotated[int, Out("grid", "page_count")]


def test_outputs_and_values_follow_the_declaration_in_field_order() -> None:
    assert Shown.spec() == (("t", "children"), ("grid", "data"), ("grid", "page_count"))
    assert [(o.component_id, o.component_property) for o in Shown.dash()] == list(Shown.spec())
    shown = Shown(pages=3, rows=[{"a": 1}], title="hello")
    assert shown.values() == ("hello", [{"a": 1}], 3)


def test_every_output_must_be_given_a_value() -> None:
    with pytest.raises(TypeError, match="rows"):
        Shown(title="hello", pages=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="kpis"):
        overview.Outputs(status=[])  # type: ignore[call-arg]


@dataclass(frozen=True, kw_only=True)
class Page(callbacks.Outputs):
    status: Annotated[list[Any], Out("p-status", "children", callbacks.ALERT)]
    kpis: Annotated[list[Any], Out("p-kpis", "children")]
    figure: Annotated[dict[str, Any], Out("p-graph", "figure", callbacks.FIGURE)]
    note: Annotated[Any, Out("p-table-note", "children", callbacks.NOTE)]
    title: Annotated[str, Out("p-title", "children")]


def test_a_failed_callback_shows_what_each_output_declares_for_failure() -> None:
    failure = callbacks.Failure(alert=["alert"], figure={"data": []}, note="why")
    failed = Page.failed(failure, title="Slices")
    assert failed == Page(
        status=["alert"], kpis=[], figure={"data": []}, note="why", title="Slices"
    )
    with pytest.raises(TypeError, match="Page has no output tittle"):
        Page.failed(failure, tittle="typo")


@dataclass(frozen=True, kw_only=True)
class Unnamed(callbacks.Outputs):
    title: Annotated[str, Out("t", "children")]
    rows: list[Any]


@dataclass(frozen=True, kw_only=True)
class Twice(callbacks.Outputs):
    first: Annotated[str, Out("t", "children")]
    second: Annotated[str, Out("t", "children")]


class NotADataclass(callbacks.Outputs):
    title: Annotated[str, Out("t", "children")]


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        pytest.param(Unnamed, r"Unnamed\.rows names 0 outputs", id="field-without-output"),
        pytest.param(Twice, "sets one component property twice", id="one-property-twice"),
        pytest.param(NotADataclass, "must be a dataclass", id="not-a-dataclass"),
    ],
)
def test_a_declaration_that_cannot_be_read_is_refused(
    cls: type[callbacks.Outputs], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        cls.spec()
