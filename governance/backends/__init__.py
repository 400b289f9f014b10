"""Data-plane backends, one module each, registered in :data:`BACKENDS`.

Adding a vendor or data plane is one new module (defining ``BACKEND``, an object that
satisfies :class:`~governance.backends.base.Backend`) and one line in ``_REGISTERED``.
``docs/backends.md`` lists what each backend writes.
"""

from __future__ import annotations

from collections.abc import Iterable

from governance.backends import (
    ascend,
    cambricon,
    hami,
    hygon,
    kai,
    nvidia_mig,
    nvidia_mps,
    nvidia_timeslice,
    nvidia_whole,
)
from governance.backends.base import Backend, ContainerChanges, PodChanges

_REGISTERED: tuple[Backend, ...] = (
    hami.BACKEND,
    nvidia_whole.BACKEND,
    nvidia_mps.BACKEND,
    nvidia_timeslice.BACKEND,
    nvidia_mig.BACKEND,
    kai.BACKEND,
    ascend.BACKEND,
    cambricon.BACKEND,
    hygon.BACKEND,
)


def _table(backends: Iterable[Backend]) -> dict[str, Backend]:
    table: dict[str, Backend] = {}
    for backend in backends:
        if backend.name in table:
            raise ValueError(f"two backends are registered under the name {backend.name!r}")
        table[backend.name] = backend
    return table


BACKENDS: dict[str, Backend] = _table(_REGISTERED)


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


def all_gpu_resources() -> tuple[str, ...]:
    """Every GPU resource name of every registered backend (sorted, de-duplicated)."""
    return tuple(sorted({r for backend in BACKENDS.values() for r in backend.gpu_resources}))


__all__ = ["BACKENDS", "Backend", "ContainerChanges", "PodChanges", "all_gpu_resources", "get"]
