"""The quota resources, defined once, and the vectors of amounts and limits over them.

gpupool counts quota in the resources of :data:`RESOURCES`, as sold: ``slices`` (how
many slices), ``memory_mib`` (GPU memory, per-GPU value x GPU count) and
``compute_pct`` (percent of a card, per-GPU value x GPU count; 100 is one whole card).
Each :class:`Resource` says everything that differs between them: its unit, how a
granted slice counts it, how the YAML spells and shows it, and how much of it a pool
can sell. Everything else is derived from the table: :class:`Resources` and
:class:`Limits` (vectors in the table's order), the quota arithmetic, the store's
columns (usage, allocations' amounts and borrowed amounts) and the ledger's SQL, the
YAML schema of quotas, ``gpupool get quotas`` and the console's quota views.

Adding a resource is an entry here, its name in ``governance.contract.QUOTA_RESOURCES``
(the metric label values), a migration adding its columns, and a line in
docs/config.md (docs/architecture.md, "A new quota resource").

"No limit" is :data:`UNLIMITED`, which is not 0: a limit of 0 admits nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from governance import contract, quantity

if TYPE_CHECKING:
    from governance.model import Pool

ResourceName = str
"""The name of a quota resource: one of :data:`RESOURCE_NAMES`."""


def scaled(amount: int, factor: float) -> int:
    """``amount x factor`` rounded down, in decimal: 100 x 1.15 is 115, not 114."""
    return int(Decimal(amount) * Decimal(str(factor)))


def _percent(value: int) -> str:
    return f"{value}%"


@dataclass(frozen=True, kw_only=True)
class Resource:
    """One quota resource: what is particular to it, and only that."""

    name: ResourceName
    """The name in code, in the store's columns and in metrics (``memory_mib``)."""
    yaml_key: str
    """How a quota in the YAML document names it (``memory``)."""
    unit: str
    """Its unit, in messages (``MiB``)."""
    of_grant: Callable[[contract.SliceGrant], int]
    """How much of it a granted slice uses, as sold (per-GPU value x GPUs)."""
    parse: Callable[[object], int | None]
    """Reads a YAML value (None: unlimited); ValueError says what to write."""
    show: Callable[[int], str]
    """Writes an amount as the YAML spells it, which :attr:`parse` reads back."""
    physical: Callable[[Pool], int | None]
    """How much a pool holds (None: no bound)."""
    sellable: Callable[[Pool], int | None]
    """How much a pool may sell, every department together (None: no bound)."""
    example: str
    """A value as the YAML and ``gpupool set quota --<yaml_key>`` take it, for help."""


RESOURCES: Final[tuple[Resource, ...]] = (
    Resource(
        name="slices",
        yaml_key="slices",
        unit="slices",
        of_grant=lambda g: g.count,
        parse=quantity.parse_count,
        show=str,
        physical=lambda pool: None,
        sellable=lambda pool: None,
        example="16",
    ),
    Resource(
        name="memory_mib",
        yaml_key="memory",
        unit="MiB",
        of_grant=lambda g: g.total_memory_mib,
        parse=quantity.parse_memory_mib,
        show=quantity.format_mib,
        physical=lambda pool: pool.gpus * pool.memory_mib_per_gpu,
        sellable=lambda pool: scaled(
            pool.gpus * pool.memory_mib_per_gpu, pool.memory_oversubscription
        ),
        example="640Gi",
    ),
    Resource(
        name="compute_pct",
        yaml_key="compute",
        unit="% of a GPU",
        of_grant=lambda g: g.total_compute_pct,
        parse=quantity.parse_compute_pct,
        show=_percent,
        physical=lambda pool: pool.gpus * 100,
        sellable=lambda pool: scaled(pool.gpus * 100, pool.compute_oversubscription),
        example="800%",
    ),
)
"""Every quota resource, in the order of vectors, columns, reports and messages."""

RESOURCE_NAMES: Final[tuple[ResourceName, ...]] = tuple(r.name for r in RESOURCES)
BY_NAME: Final[dict[ResourceName, Resource]] = {r.name: r for r in RESOURCES}
RESOURCE_UNITS: Final[dict[ResourceName, str]] = {r.name: r.unit for r in RESOURCES}
YAML_KEYS: Final[dict[ResourceName, str]] = {r.name: r.yaml_key for r in RESOURCES}
"""How each quota resource is spelled in the YAML document."""
_INDEX: Final[dict[ResourceName, int]] = {name: i for i, name in enumerate(RESOURCE_NAMES)}
_N: Final = len(RESOURCES)

if RESOURCE_NAMES != contract.QUOTA_RESOURCES:  # pragma: no cover - a broken edit
    raise ImportError(
        f"the quota resources {RESOURCE_NAMES} differ from the contract's "
        f"{contract.QUOTA_RESOURCES}: add a new resource to both"
    )


def format_amount(resource: ResourceName, value: int | None) -> str:
    """``80Gi``, ``250%``, ``4``, or ``unlimited``: the units the YAML is written in."""
    if value is None:
        return quantity.UNLIMITED_WORD
    return BY_NAME[resource].show(value)


def _vector(values: Iterable[Any] | None, amounts: dict[str, Any], default: Any) -> tuple[Any, ...]:
    if values is not None:
        if amounts:
            raise TypeError("give the values as a vector or by name, not both")
        vector = tuple(values)
        if len(vector) != _N:
            raise ValueError(f"a vector of {len(vector)} values for {_N} quota resources")
        return vector
    listed = [default] * _N
    for name, value in amounts.items():
        index = _INDEX.get(name)
        if index is None:
            raise TypeError(f"unknown quota resource {name!r}; known: {', '.join(RESOURCE_NAMES)}")
        listed[index] = value
    return tuple(listed)


class Resources:
    """An amount of each quota resource (usage or demand): a vector in the order of
    :data:`RESOURCES`. ``Resources(slices=1, memory_mib=10240)`` names amounts (the
    others are 0); ``Resources((1, 10240, 15))`` gives the vector. Immutable."""

    __slots__ = ("values",)
    values: tuple[int, ...]

    def __init__(self, values: Iterable[int] | None = None, /, **amounts: int) -> None:
        object.__setattr__(self, "values", _vector(values, amounts, 0))

    @classmethod
    def of_grant(cls, grant: contract.SliceGrant) -> Resources:
        """The quota one grant uses, as sold."""
        return _resources(tuple(r.of_grant(grant) for r in RESOURCES))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Resources are immutable")

    def __reduce__(self) -> tuple[type[Resources], tuple[tuple[int, ...]]]:
        return (Resources, (self.values,))

    def __copy__(self) -> Resources:
        return self

    def __deepcopy__(self, memo: object) -> Resources:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resources) and self.values == other.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        named = ", ".join(f"{n}={v}" for n, v in zip(RESOURCE_NAMES, self.values, strict=True))
        return f"Resources({named})"

    def __add__(self, other: Resources) -> Resources:
        return _resources(tuple(a + b for a, b in zip(self.values, other.values, strict=True)))

    def __sub__(self, other: Resources) -> Resources:
        return _resources(tuple(a - b for a, b in zip(self.values, other.values, strict=True)))

    def __neg__(self) -> Resources:
        return _resources(tuple(-a for a in self.values))

    def __getitem__(self, name: ResourceName) -> int:
        return self.values[_INDEX[name]]

    def get(self, name: ResourceName) -> int:
        return self.values[_INDEX[name]]

    def is_zero(self) -> bool:
        return not any(self.values)

    def max(self, other: Resources) -> Resources:
        """Element-wise maximum (the Kubernetes effective demand uses it)."""
        return _resources(tuple(map(max, self.values, other.values)))

    def items(self) -> Iterator[tuple[ResourceName, int]]:
        return zip(RESOURCE_NAMES, self.values, strict=True)

    def as_dict(self) -> dict[str, int]:
        return dict(self.items())

    # Conveniences for the messages that name these resources; the arithmetic above
    # never uses them.
    @property
    def slices(self) -> int:
        return self.get("slices")

    @property
    def memory_mib(self) -> int:
        return self.get("memory_mib")

    @property
    def compute_pct(self) -> int:
        return self.get("compute_pct")


def _resources(values: tuple[int, ...]) -> Resources:
    """A vector already checked (the arithmetic's results), without ``__init__``."""
    made = object.__new__(Resources)
    object.__setattr__(made, "values", values)
    return made


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


class Limits:
    """A limit on each quota resource, unlimited unless given: ``Limits(memory_mib=
    Limit(81920))``, or :meth:`of` with plain numbers. Immutable."""

    __slots__ = ("values",)
    values: tuple[int | None, ...]
    """Each resource's limit, None where unlimited."""

    def __init__(self, values: Iterable[int | None] | None = None, /, **limits: Limit) -> None:
        plain = {name: limit.value for name, limit in limits.items()}
        object.__setattr__(self, "values", _vector(values, plain, None))

    @staticmethod
    def of(**values: int | None) -> Limits:
        """``Limits.of(slices=4, memory_mib=None)``: None is unlimited."""
        made = object.__new__(Limits)
        object.__setattr__(made, "values", _vector(None, values, None))
        return made

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Limits are immutable")

    def __reduce__(self) -> tuple[type[Limits], tuple[tuple[int | None, ...]]]:
        return (Limits, (self.values,))

    def __copy__(self) -> Limits:
        return self

    def __deepcopy__(self, memo: object) -> Limits:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self.values == other.values

    def __hash__(self) -> int:
        return hash(self.values)

    def __repr__(self) -> str:
        named = ", ".join(
            f"{n}={'unlimited' if v is None else v}"
            for n, v in zip(RESOURCE_NAMES, self.values, strict=True)
        )
        return f"Limits({named})"

    def get(self, name: ResourceName) -> Limit:
        return Limit(self.values[_INDEX[name]])

    def is_unlimited(self) -> bool:
        return all(v is None for v in self.values)

    def __add__(self, other: Limits) -> Limits:
        return Limits(
            None if a is None or b is None else a + b
            for a, b in zip(self.values, other.values, strict=True)
        )

    @property
    def slices(self) -> Limit:
        return self.get("slices")

    @property
    def memory_mib(self) -> Limit:
        return self.get("memory_mib")

    @property
    def compute_pct(self) -> Limit:
        return self.get("compute_pct")


NO_LIMITS: Final = Limits()


def fits(limits: Limits, used: Resources, amount: Resources) -> bool:
    """Whether ``used + amount`` stays within ``limits`` in every resource that
    ``amount`` asks for (a resource not asked for is never refused, even above its
    limit: a lowered quota must not block what does not use it)."""
    for limit, now, more in zip(limits.values, used.values, amount.values, strict=True):
        if limit is not None and more and now + more > limit:
            return False
    return True


def capacity(pool: Pool) -> Limits:
    """What ``pool`` may sell of each resource (physical x over-subscription)."""
    return Limits(r.sellable(pool) for r in RESOURCES)


def physical(pool: Pool) -> Resources:
    """What ``pool`` holds of each resource (0 where it sets no bound)."""
    return Resources(r.physical(pool) or 0 for r in RESOURCES)


def sellable(pool: Pool) -> Resources:
    """What ``pool`` may sell of each resource (0 where it sets no bound)."""
    return Resources(r.sellable(pool) or 0 for r in RESOURCES)


__all__ = [
    "BY_NAME",
    "NO_LIMITS",
    "RESOURCES",
    "RESOURCE_NAMES",
    "RESOURCE_UNITS",
    "UNLIMITED",
    "YAML_KEYS",
    "ZERO",
    "Limit",
    "Limits",
    "Resource",
    "ResourceName",
    "Resources",
    "capacity",
    "fits",
    "format_amount",
    "physical",
    "sellable",
]
