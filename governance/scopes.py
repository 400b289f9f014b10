"""Usage scopes: the keys under which the ledger counts usage, as a type.

A reservation counts against seven scopes (its :class:`Path`): its department, the
department per SKU and per pool, its queue, the queue per SKU and per pool, and the
pool as a whole. Quotas name their limits by these scopes, the ledger locks and adds
to the usage row of each, ``gpupool apply`` checks new limits against them, and the
quota report and the console read them.

The store keeps a scope as a string (the usage table's primary key): :attr:`Scope.key`
writes it, in this one place, and :func:`parse` reads it back, in this other one::

    department/ml            department/ml/sku/a100-1g      department/ml/pool/a100
    queue/ml/train           queue/ml/train/sku/a100-1g     queue/ml/train/pool/a100
    pool/a100

Names never contain ``/`` (the configuration refuses them), so a key splits back
unambiguously. A scope hashes and compares by its key: a scope parsed from a row is
the same dictionary key as one built for a demand.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """What a scope counts the usage of."""

    DEPARTMENT = "department"
    DEPARTMENT_SKU = "department per SKU"
    DEPARTMENT_POOL = "department per pool"
    QUEUE = "queue"
    QUEUE_SKU = "queue per SKU"
    QUEUE_POOL = "queue per pool"
    POOL = "pool"


@dataclass(frozen=True, eq=False, kw_only=True)
class Scope:
    """One usage key. Build it with the functions below (they give only the fields its
    kind uses); compare and hash by :attr:`key`."""

    kind: Kind
    department: str = ""
    queue: str = ""
    sku: str = ""
    pool: str = ""
    key: str = field(init=False, repr=False)
    """The string form stored in the usage table."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Scope) -> bool:
        """Scopes sort by key: the order in which every transaction locks them."""
        return self.key < other.key

    def __str__(self) -> str:
        return self.key


def _key(scope: Scope) -> str:
    d, q, s, p = scope.department, scope.queue, scope.sku, scope.pool
    match scope.kind:
        case Kind.DEPARTMENT:
            return f"department/{d}"
        case Kind.DEPARTMENT_SKU:
            return f"department/{d}/sku/{s}"
        case Kind.DEPARTMENT_POOL:
            return f"department/{d}/pool/{p}"
        case Kind.QUEUE:
            return f"queue/{d}/{q}"
        case Kind.QUEUE_SKU:
            return f"queue/{d}/{q}/sku/{s}"
        case Kind.QUEUE_POOL:
            return f"queue/{d}/{q}/pool/{p}"
        case Kind.POOL:
            return f"pool/{p}"


def parse(key: str) -> Scope:
    """The scope stored under ``key``; ValueError when it is none of the seven forms."""
    parts = key.split("/")
    match parts:
        case ["department", d]:
            return department(d)
        case ["department", d, "sku", s]:
            return department_sku(d, s)
        case ["department", d, "pool", p]:
            return department_pool(d, p)
        case ["queue", d, q]:
            return queue(d, q)
        case ["queue", d, q, "sku", s]:
            return queue_sku(d, q, s)
        case ["queue", d, q, "pool", p]:
            return queue_pool(d, q, p)
        case ["pool", p]:
            return pool(p)
    raise ValueError(f"{key!r} is not a usage scope")


# One Scope per key, made once: a reservation asks for the same few paths again and
# again, and a scope is a dictionary key on every step of the quota arithmetic.


@functools.lru_cache(maxsize=65536)
def department(name: str) -> Scope:
    return Scope(kind=Kind.DEPARTMENT, department=name)


@functools.lru_cache(maxsize=65536)
def department_sku(name: str, sku: str) -> Scope:
    return Scope(kind=Kind.DEPARTMENT_SKU, department=name, sku=sku)


@functools.lru_cache(maxsize=65536)
def department_pool(name: str, pool_name: str) -> Scope:
    return Scope(kind=Kind.DEPARTMENT_POOL, department=name, pool=pool_name)


@functools.lru_cache(maxsize=65536)
def queue(department_name: str, name: str) -> Scope:
    return Scope(kind=Kind.QUEUE, department=department_name, queue=name)


@functools.lru_cache(maxsize=65536)
def queue_sku(department_name: str, name: str, sku: str) -> Scope:
    return Scope(kind=Kind.QUEUE_SKU, department=department_name, queue=name, sku=sku)


@functools.lru_cache(maxsize=65536)
def queue_pool(department_name: str, name: str, pool_name: str) -> Scope:
    return Scope(kind=Kind.QUEUE_POOL, department=department_name, queue=name, pool=pool_name)


@functools.lru_cache(maxsize=65536)
def pool(name: str) -> Scope:
    return Scope(kind=Kind.POOL, pool=name)


@dataclass(frozen=True, kw_only=True)
class Path:
    """The seven scopes one allocation counts against, by name."""

    department: Scope
    department_sku: Scope
    department_pool: Scope
    queue: Scope
    queue_sku: Scope
    queue_pool: Scope
    pool: Scope
    locked: tuple[Scope, ...] = field(init=False)
    """All seven, sorted by key: every transaction locks rows in this one order (no
    deadlocks); the department's row sorts first and serialises every change in it."""

    def __post_init__(self) -> None:
        every = (
            self.department,
            self.department_sku,
            self.department_pool,
            self.queue,
            self.queue_sku,
            self.queue_pool,
            self.pool,
        )
        object.__setattr__(self, "locked", tuple(sorted(every)))


@functools.lru_cache(maxsize=65536)
def path(department_name: str, queue_name: str, sku: str, pool_name: str) -> Path:
    """The scopes of an allocation in a queue with a SKU on a pool."""
    d, q, s, p = department_name, queue_name, sku, pool_name
    return Path(
        department=department(d),
        department_sku=department_sku(d, s),
        department_pool=department_pool(d, p),
        queue=queue(d, q),
        queue_sku=queue_sku(d, q, s),
        queue_pool=queue_pool(d, q, p),
        pool=pool(p),
    )


__all__ = [
    "Kind",
    "Path",
    "Scope",
    "department",
    "department_pool",
    "department_sku",
    "parse",
    "path",
    "pool",
    "queue",
    "queue_pool",
    "queue_sku",
]
