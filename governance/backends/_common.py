"""Helpers shared by the backend modules: typed pool options, quantities, errors.

Private to :mod:`governance.backends`; the backends import it, nothing else should.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from governance import forms
from governance.backends.base import PodChanges
from governance.contract import Reason, SliceGrant
from governance.errors import ConfigError, PlacementError
from governance.model import Pool, Sku

USER_RESOURCES: tuple[str, ...] = forms.USER_RESOURCES
"""The names a user writes to ask for GPUs (the request forms' registry): every
backend strips them, whatever vendor it serves, because the webhook replaces them with
the data plane's own names."""

_RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def resource_names(*groups: Iterable[str]) -> tuple[str, ...]:
    """The union of ``groups``, de-duplicated, in first-seen order."""
    seen: dict[str, None] = {}
    for group in groups:
        for name in group:
            seen.setdefault(name, None)
    return tuple(seen)


def is_resource_name(name: str) -> bool:
    """Whether ``name`` is a syntactically valid Kubernetes extended resource name."""
    prefix, _, rest = name.rpartition("/")
    return (
        bool(prefix) and len(rest) <= 63 and len(prefix) <= 253 and bool(_RESOURCE_NAME.match(name))
    )


def quantity(value: int) -> str:
    """A non-negative integer as a Kubernetes quantity string."""
    if value < 0:
        raise ValueError(f"a resource quantity cannot be negative, got {value}")
    return str(value)


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def is_whole_card(memory_mib: int, compute_pct: int, pool: Pool) -> bool:
    """A shape that takes a whole card of ``pool``: all of its memory and compute."""
    return memory_mib >= pool.memory_mib_per_gpu and compute_pct >= 100


def base_pod(pool: Pool, **changes: Any) -> PodChanges:
    """Pod changes every backend makes: the pool's node selector, plus ``changes``."""
    return PodChanges(node_selector=dict(pool.node_selector), **changes)


def cannot_serve(grant: SliceGrant, pool: Pool, why: str, fix: str) -> PlacementError:
    """A grant that the pool's data plane cannot serve: a 422 with what to do."""
    return PlacementError(
        Reason.INVALID_REQUEST,
        f"{grant.count} x SKU {grant.sku!r} ({grant.memory_mib} MiB, {grant.compute_pct}% "
        f"per GPU, {grant.gpus} GPU(s)) cannot be served by pool {pool.name!r} "
        f"(backend {pool.backend}): {why}. {fix}",
    )


def sku_error(pool: Pool, sku: Sku, why: str, fix: str) -> ConfigError:
    """A SKU offered on ``pool`` that its backend cannot serve."""
    return ConfigError(
        f"SKU {sku.name!r} cannot be offered on pool {pool.name!r} (backend {pool.backend}, "
        f"{pool.model}): {why}. {fix}",
        path=f"skus.{sku.name}",
    )


class Options:
    """Typed, checked access to ``pool.backend_options``.

    Every getter raises ConfigError naming the pool and the option; :meth:`check`
    refuses option names the backend does not know (a typo is an error, not a no-op).
    """

    def __init__(self, pool: Pool, known: Iterable[str]) -> None:
        self.pool = pool
        self.known = frozenset(known)
        self.raw: Mapping[str, Any] = pool.backend_options

    def _error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=f"pools.{self.pool.name}.backend_options.{key}")

    def check(self) -> None:
        unknown = sorted(set(self.raw) - self.known)
        if unknown:
            raise self._error(
                unknown[0],
                f"unknown option(s) {', '.join(unknown)} for backend {self.pool.backend}; "
                f"known options: {', '.join(sorted(self.known)) or 'none'}",
            )

    def string(self, key: str, default: str) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str):
            raise self._error(key, f"expected a string, got {value!r}")
        return value

    def resource(self, key: str, default: str) -> str:
        value = self.string(key, default)
        if not is_resource_name(value):
            raise self._error(
                key,
                f"{value!r} is not a Kubernetes extended resource name (domain/name, "
                "for example nvidia.com/gpu.shared)",
            )
        return value

    def integer(self, key: str, default: int | None, *, minimum: int = 1) -> int | None:
        value = self.raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._error(key, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self._error(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self.string(key, default)
        if value not in allowed:
            raise self._error(key, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value = self.raw.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._error(key, f"expected a mapping of strings to strings, got {value!r}")
        return dict(value)


def check_vendor(pool: Pool, vendor: str) -> None:
    """A pool served by a backend of another vendor is a configuration error."""
    if pool.vendor.lower() != vendor:
        raise ConfigError(
            f"pool {pool.name!r} has vendor {pool.vendor!r}, but backend {pool.backend} "
            f"serves {vendor} devices: pick a backend of vendor {pool.vendor!r} or fix the "
            "pool's vendor",
            path=f"pools.{pool.name}.backend",
        )
