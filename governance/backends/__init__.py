"""Data-plane backends, one module each, registered in :data:`BACKENDS`.

Adding a vendor or data plane is one new module and one line in this table.
"""

from __future__ import annotations

from governance.backends.base import Backend, ContainerChanges, PodChanges

BACKENDS: dict[str, Backend] = {}


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None


__all__ = ["BACKENDS", "Backend", "ContainerChanges", "PodChanges", "get"]
