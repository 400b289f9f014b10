"""The request-form interface: one container's GPU resources -> a SliceRequest.

A form is one module of this package that defines ``FORM``, an object satisfying
:class:`Form`, listed in the table in ``governance/forms/__init__.py``. It is pure: it
sees one GPU container's quantities and the pod's labels (:class:`Resources`) and
answers with a :class:`Reading`, with None when the container is not written in this
form (the registry then asks the next one), or raises :class:`InvalidDemand` when it is
but cannot be read.

Exceptions::

    ValueError
     └── InvalidDemand   a GPU request that cannot be read: the webhook denies the pod
                         (422) with ``code`` as its reason, the message saying what to
                         write instead

The readers below apply each resource's unit to a quantity read by apimachinery's rules
(:mod:`governance.quantity`): the API server sends quantities in canonical form
(``3000`` arrives as ``3k``), so suffixes must be honoured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from governance import quantity
from governance.contract import Reason
from governance.placement import SliceRequest

Quantity = str | int | float
"""A quantity as it arrives in a pod: the API server sends strings, JSON may carry
numbers."""


class InvalidDemand(ValueError):
    """A GPU request the webhook cannot read (422), with the reason code."""

    def __init__(self, message: str, *, reason: Reason = Reason.INVALID_REQUEST) -> None:
        self.code = reason
        super().__init__(message)


class Resources(NamedTuple):
    """One GPU container as the forms read it. (A named tuple rather than a frozen
    dataclass, as :class:`Reading`: one is built per GPU container of every pod
    admitted, and a named tuple takes about half as long to build.)"""

    container: str
    """The container's name, for messages."""
    quantities: Mapping[str, Quantity]
    """The container's quantity of each resource name the registry reads (and of no
    other): its limit, else its request. The caller has checked that the two are equal
    where both are set, so a form never sees requests and limits disagree."""
    labels: Mapping[str, str]
    """The pod's labels."""


class Reading(NamedTuple):
    """What a form read from a container written in it."""

    request: SliceRequest | None
    """None: written in this form, but asking for no GPU (``nvidia.com/gpu: 0``)."""
    warnings: tuple[str, ...] = ()
    """What the user should hear although the pod is admitted (a value ignored...)."""


class Form(Protocol):
    name: str
    """Short name, for docs and errors about the registry."""
    resources: tuple[str, ...]
    """The resource names this form reads: users write them, so every backend removes
    them from an admitted container and the webhook treats them as GPU requests."""
    prefixes: tuple[str, ...]
    """Name prefixes this form reads (``gpupool.io/`` for ``gpupool.io/<sku>``)."""

    def read(self, resources: Resources) -> Reading | None:
        """None when the container is not written in this form; InvalidDemand when it
        is but cannot be read."""
        ...


def count(resources: Resources, name: str, value: Quantity) -> int:
    """A count: a non-negative whole number (Kubernetes' rule for extended resources);
    ``1k`` is 1000 and ``1500m`` is not whole."""
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)  # the common case, without building a Decimal
    expected = "a whole number"
    number = quantity.whole(parse(resources, name, value, expected).value)
    if number is None:
        raise invalid(resources, name, value, expected)
    if number < 0:
        raise invalid(resources, name, value, "a whole number, 0 or more")
    return number


def parse(resources: Resources, name: str, value: Quantity, expected: str) -> quantity.Quantity:
    """The quantity as apimachinery reads it, or InvalidDemand saying what was expected."""
    try:
        return quantity.parse(value)
    except quantity.InvalidQuantity as exc:
        raise invalid(resources, name, value, expected, why=exc.reason) from None


def invalid(
    resources: Resources, name: str, value: object, expected: str, *, why: str = ""
) -> InvalidDemand:
    """A quantity that is not what its resource's unit wants."""
    detail = f"; {why}" if why else ""
    return InvalidDemand(
        f"container {resources.container!r} asks for {name}: {value!r}, which is not "
        f"{expected}{detail}. Write it as {expected} in resources.limits."
    )
