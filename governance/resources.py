"""Quantities of the three quota resources, and limits that can be unlimited.

gpupool counts quota in three resources, as sold: ``slices`` (how many slices),
``memory_mib`` (GPU memory, per-GPU value x GPU count) and ``compute_pct`` (percent of a
card, per-GPU value x GPU count; 100 is one whole card). "No limit" is
:data:`UNLIMITED`, which is not 0: a limit of 0 admits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

from governance import quantity

ResourceName = Literal["slices", "memory_mib", "compute_pct"]
RESOURCE_NAMES: Final[tuple[ResourceName, ...]] = ("slices", "memory_mib", "compute_pct")
RESOURCE_UNITS: Final[dict[ResourceName, str]] = {
    "slices": "slices",
    "memory_mib": "MiB",
    "compute_pct": "% of a GPU",
}


YAML_KEYS: Final[dict[ResourceName, str]] = {
    "slices": "slices",
    "memory_mib": "memory",
    "compute_pct": "compute",
}
"""How each quota resource is spelled in the YAML document."""


def format_amount(resource: ResourceName, value: int | None) -> str:
    """``80Gi``, ``250%``, ``4``, or ``unlimited``: the units the YAML is written in."""
    if value is None:
        return quantity.UNLIMITED_WORD
    if resource == "memory_mib":
        return quantity.format_mib(value)
    if resource == "compute_pct":
        return f"{value}%"
    return str(value)


@dataclass(frozen=True, kw_only=True)
class Resources:
    """An amount of each quota resource (usage or demand)."""

    slices: int = 0
    memory_mib: int = 0
    compute_pct: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            slices=self.slices + other.slices,
            memory_mib=self.memory_mib + other.memory_mib,
            compute_pct=self.compute_pct + other.compute_pct,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            slices=self.slices - other.slices,
            memory_mib=self.memory_mib - other.memory_mib,
            compute_pct=self.compute_pct - other.compute_pct,
        )

    def get(self, name: ResourceName) -> int:
        value: int = getattr(self, name)
        return value

    def is_zero(self) -> bool:
        return self.slices == 0 and self.memory_mib == 0 and self.compute_pct == 0

    def max(self, other: Resources) -> Resources:
        """Element-wise maximum (the Kubernetes effective demand uses it)."""
        return Resources(
            slices=max(self.slices, other.slices),
            memory_mib=max(self.memory_mib, other.memory_mib),
            compute_pct=max(self.compute_pct, other.compute_pct),
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ZERO: Final = Resources()


@dataclass(frozen=True)
class Limit:
    """A limit on one resource: an integer, or unlimited (``value is None``)."""

    value: int | None

    @property
    def unlimited(self) -> bool:
        return self.value is None

    def admits(self, total: int) -> bool:
        return self.value is None or total <= self.value

    def headroom(self, used: int) -> int | None:
        """How much more fits, or None when unlimited (never negative)."""
        return None if self.value is None else max(0, self.value - used)

    def __add__(self, other: Limit) -> Limit:
        if self.value is None or other.value is None:
            return UNLIMITED
        return Limit(self.value + other.value)

    def __str__(self) -> str:
        return "unlimited" if self.value is None else str(self.value)


UNLIMITED: Final = Limit(None)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """A limit on each quota resource; unlimited unless given."""

    slices: Limit = UNLIMITED
    memory_mib: Limit = UNLIMITED
    compute_pct: Limit = UNLIMITED

    def get(self, name: ResourceName) -> Limit:
        value: Limit = getattr(self, name)
        return value

    def is_unlimited(self) -> bool:
        return self.slices.unlimited and self.memory_mib.unlimited and self.compute_pct.unlimited

    def __add__(self, other: Limits) -> Limits:
        return Limits(
            slices=self.slices + other.slices,
            memory_mib=self.memory_mib + other.memory_mib,
            compute_pct=self.compute_pct + other.compute_pct,
        )

    @staticmethod
    def of(
        slices: int | None = None, memory_mib: int | None = None, compute_pct: int | None = None
    ) -> Limits:
        return Limits(
            slices=Limit(slices), memory_mib=Limit(memory_mib), compute_pct=Limit(compute_pct)
        )


NO_LIMITS: Final = Limits()
