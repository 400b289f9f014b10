"""What every page callback shares: its outputs as one named structure, the viewer of
the request, the error state of a callback that failed, and the CSV downloads.

A callback's outputs are a frozen dataclass whose fields are the outputs, each
annotated with the component property it sets and what it shows if the callback
fails::

    @dataclass(frozen=True, kw_only=True)
    class Outputs(callbacks.Outputs):
        status: Annotated[list[Any], Out("ov-status", "children", ALERT)]
        capacity: Annotated[views.Figure, Out("ov-capacity", "figure", FIGURE)]

Dash's ``Output`` list (:meth:`Outputs.dash`), the tuple the callback returns
(:meth:`Outputs.values`) and its error state (:meth:`Outputs.failed`) are all derived
from it, in field order, and every field is required: an output cannot be declared to
Dash and not returned, or returned in another output's place. The page's layout reads
the same structure (``v.capacity``), so the first render and a callback show the same
values.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeVar

import dash
import flask
from dash import Input, Output, State

from dashboard import components, views
from dashboard.access import Scope
from dashboard.shared import Console, Problem
from governance.errors import StoreError

log = logging.getLogger(__name__)

Failed = Literal["empty", "alert", "figure", "note"]
"""What an output shows when its callback fails: nothing (``[]``), the alert that
says what went wrong, a figure that says it, or the note in an empty table's place."""
EMPTY: Failed = "empty"
ALERT: Failed = "alert"
FIGURE: Failed = "figure"
NOTE: Failed = "note"


@dataclass(frozen=True)
class Out:
    """The component property an output field sets, and what it shows on failure."""

    component: str
    prop: str
    failed: Failed = EMPTY


@dataclass(frozen=True, kw_only=True)
class Failure:
    """The error state of a callback that failed, one value per :data:`Failed`."""

    alert: list[Any]
    figure: views.Figure
    note: Any

    def shown(self, failed: Failed) -> Any:
        return {"empty": [], "alert": self.alert, "figure": self.figure, "note": self.note}[failed]


class Outputs:
    """Base of a callback's named outputs (see the module docstring)."""

    __slots__ = ()

    @classmethod
    def spec(cls) -> tuple[tuple[str, str], ...]:
        """(component id, property) of each output, in the order Dash gets them."""
        return tuple((out.component, out.prop) for _, out in _fields(cls))

    @classmethod
    def dash(cls) -> list[Output]:
        return [Output(component, prop) for component, prop in cls.spec()]

    @classmethod
    def failed(cls, failure: Failure, **given: Any) -> Self:
        """The outputs of a callback that failed: each field as its :class:`Out`
        says, but those ``given``."""
        fields = _fields(cls)
        unknown = set(given) - {name for name, _ in fields}
        if unknown:
            raise TypeError(f"{cls.__qualname__} has no output {', '.join(sorted(unknown))}")
        make: Callable[..., Self] = cls
        return make(**{name: given.get(name, failure.shown(out.failed)) for name, out in fields})

    def values(self) -> tuple[Any, ...]:
        """What the callback returns: each field's value, in the order of :meth:`dash`."""
        return tuple(getattr(self, name) for name, _ in _fields(type(self)))


OutputsT = TypeVar("OutputsT", bound=Outputs)

_FIELDS: dict[type[Outputs], tuple[tuple[str, Out], ...]] = {}


def _fields(cls: type[Outputs]) -> tuple[tuple[str, Out], ...]:
    """(field name, its output) of each field of ``cls``, read once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = _read_fields(cls)
    return found


def _read_fields(cls: type[Outputs]) -> tuple[tuple[str, Out], ...]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} must be a dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    found: list[tuple[str, Out]] = []
    for field in dataclasses.fields(cls):
        outs = [m for m in getattr(hints[field.name], "__metadata__", ()) if isinstance(m, Out)]
        if len(outs) != 1:
            raise TypeError(
                f"{cls.__qualname__}.{field.name} names {len(outs)} outputs: annotate it "
                "Annotated[T, Out(component_id, property)]"
            )
        found.append((field.name, outs[0]))
    spec = [(o.component, o.prop) for _, o in found]
    if len(set(spec)) != len(spec):
        raise TypeError(f"{cls.__qualname__} sets one component property twice: {spec}")
    return tuple(found)


def register(
    app: dash.Dash,
    outputs: type[OutputsT],
    *inputs: Input | State,
    answer: Callable[..., OutputsT],
) -> None:
    """Register a page callback that sets ``outputs`` from ``inputs``: ``answer``
    returns one ``outputs``, which Dash gets as its values. Page callbacks fire only
    when an input changes: the page arrives filled."""

    def callback(*args: Any) -> tuple[Any, ...]:
        return answer(*args).values()

    app.callback(*outputs.dash(), *inputs, prevent_initial_call=True)(callback)


def viewer(console: Console) -> Scope:
    """The viewer of the request being answered."""
    return console.scope(dict(flask.request.headers))


def failure(console: Console, exc: Exception, what: str, *, rows: str = "") -> Failure:
    """The error state of a callback that failed building ``what`` (whose table is
    ``rows``, else ``what``). Never a traceback in the page; the log has it."""
    if isinstance(exc, StoreError):
        problem = console.store_problem(exc)
        message = "Governance store unavailable"
    else:
        log.exception("the %s failed", what)
        problem = Problem(
            title="Something went wrong",
            detail=f"The {what} could not be built ({type(exc).__name__}); the "
            "console's log has the details.",
            tone="danger",
        )
        message = "Could not build this figure"
    return Failure(
        alert=components.problem_alerts([problem]),
        figure=views.message_figure(message, tone="error"),
        note=components.note(f"No rows: the {rows or what} could not be built (see above)."),
    )


Table = Callable[[Console, Scope, Mapping[str, Any]], tuple[list[dict[str, Any]], str]]
"""A CSV download, recomputed for the viewer from the page's inputs (``params``): its
rows, and what its file name adds after the table's name ("", or "-" and the
department shown)."""


@dataclass(frozen=True, kw_only=True)
class Downloads:
    """A page's CSV downloads: the inputs they are recomputed from, and each table."""

    params: Mapping[str, State]
    """Each parameter a table reads, and the component property it comes from."""
    tables: Mapping[str, Table]
    """Each table by the name its CSV button carries."""
