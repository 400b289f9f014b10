"""Request forms: the ways a user asks for GPUs, one module each, registered in
:data:`FORMS`.

DESIGN.md, "What a user writes": per GPU container, the first form that matches wins:

1. :mod:`~governance.forms.sku_resource`: ``gpupool.io/<sku>: N``;
2. :mod:`~governance.forms.sku_label`: the pod label ``gpupool.io/sku: <sku>`` with
   ``nvidia.com/gpu: N``;
3. :mod:`~governance.forms.hami`: ``nvidia.com/gpu: N`` with HAMi's
   ``nvidia.com/gpumem`` / ``gpumem-percentage`` / ``gpucores``;
4. :mod:`~governance.forms.plain`: ``nvidia.com/gpu: N``, the queue's default SKU.

Adding a form is one new module (defining ``FORM``, an object that satisfies
:class:`~governance.forms.base.Form`) and one line in ``_REGISTERED``, at the place its
precedence calls for. The names users write (:data:`USER_RESOURCES`,
:data:`USER_PREFIXES`) are derived from the table: the webhook treats them as GPU
requests and every backend removes them from an admitted container.

Pure: the pod-level work (which containers ask for GPUs, requests equal to limits, data
planes' own names refused) is the caller's, in ``admission/demand.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

from governance.forms import hami, plain, sku_label, sku_resource
from governance.forms.base import Form, InvalidDemand, Quantity, Reading, Resources

_REGISTERED: tuple[Form, ...] = (
    sku_resource.FORM,
    sku_label.FORM,
    hami.FORM,
    plain.FORM,
)


def _union(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """De-duplicated, in first-seen order (the order errors and tokens are built in)."""
    return tuple(dict.fromkeys(name for group in groups for name in group))


def _table(forms: Iterable[Form]) -> tuple[Form, ...]:
    table = tuple(forms)
    names = [form.name for form in table]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two request forms are registered under the name {name!r}")
    return table


FORMS: tuple[Form, ...] = _table(_REGISTERED)
"""In order of precedence: the first whose ``read`` answers wins."""

USER_RESOURCES: tuple[str, ...] = _union(form.resources for form in FORMS)
"""Every resource name a user writes to ask for GPUs (``nvidia.com/gpu``, HAMi's...)."""

USER_PREFIXES: tuple[str, ...] = _union(form.prefixes for form in FORMS)
"""Every prefix of the names a user writes (``gpupool.io/`` for ``gpupool.io/<sku>``)."""

_USER_RESOURCES = frozenset(USER_RESOURCES)


def is_user_resource(name: str) -> bool:
    """Whether a user asks for GPUs by writing ``name`` (some form reads it)."""
    return name in _USER_RESOURCES or name.startswith(USER_PREFIXES)


_READERS = tuple(form.read for form in FORMS)


def read(resources: Resources) -> Reading | None:
    """The first form's reading of one GPU container; None when no form reads it."""
    for form_read in _READERS:
        reading = form_read(resources)
        if reading is not None:
            return reading
    return None


__all__ = [
    "FORMS",
    "USER_PREFIXES",
    "USER_RESOURCES",
    "Form",
    "InvalidDemand",
    "Quantity",
    "Reading",
    "Resources",
    "is_user_resource",
    "read",
]
