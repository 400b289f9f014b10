"""The allocation ledger: every admitted GPU pod, from reservation to release.

States::

    reserved --bind--> bound --release--> released
        |                 (pod ended or deleted)
        +--release--> released   (pod deleted before it was seen)
        +--expire---> expired    (pod never appeared within the TTL)

An entry is keyed by its allocation id and by the admission request's uid, so a
reinvocation of the same admission request finds its reservation instead of charging
twice. Entries are never deleted: they are the history that metering reads.

:func:`reserve` is one transaction: it locks the usage rows of every scope on the
request's path (department first, then the department's per-SKU/per-pool rows, the
pool, the queue's rows; sorted), reads the usage of the department's queues (for
borrowing), asks the pure :func:`governance.quotas.evaluate`, and either adds the demand
to every row and records the allocation, or records the denial. On PostgreSQL the rows
are locked with ``SELECT ... ORDER BY scope FOR UPDATE``, one total order for every
transaction; a row that does not exist yet (the first pod of a department) is created
first, in a short transaction of its own, and the transaction runs again, so that no
transaction ever creates a row while it holds others (see :func:`_lock_usage`). A
transaction that PostgreSQL rolls back all the same (a deadlock or serialisation
failure, told by its SQLSTATE) runs again, a bounded number of times (:func:`_write`).
On SQLite the transaction starts with ``BEGIN IMMEDIATE``, which serialises writers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import operator
import random
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from governance import quotas, scopes
from governance.contract import Reason, SliceGrant
from governance.errors import StoreBusy, StoreConflict, StoreError, StoreUnavailable
from governance.model import Org
from governance.quotas import Demand, QuotaDecision
from governance.resources import RESOURCE_NAMES, ZERO, ResourceName, Resources
from governance.scopes import Scope
from governance.storage import schema
from governance.storage.store import Store, utcnow

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(minutes=10)


class State(enum.StrEnum):
    RESERVED = "reserved"
    BOUND = "bound"
    RELEASED = "released"
    EXPIRED = "expired"

    @property
    def live(self) -> bool:
        return self in (State.RESERVED, State.BOUND)


@dataclass(frozen=True, kw_only=True)
class Allocation:
    id: str
    request_uid: str
    state: State
    namespace: str
    pod_name: str
    pod_uid: str
    department: str
    queue: str
    sku: str
    pool: str
    amount: Resources
    borrowed: Resources
    subject: str
    grants: Mapping[str, SliceGrant]
    created_at: datetime
    expires_at: datetime
    bound_at: datetime | None
    ended_at: datetime | None
    fingerprint: str = ""
    """Digest of what identified the pod at admission ("" for entries made before
    migration 0004, and for duplicates): a reinvocation under a new request uid is
    honoured only for a pod with the same digest (see the admitter)."""


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """The answer of :func:`reserve`."""

    decision: QuotaDecision
    allocation: Allocation | None
    """The recorded entry (None when denied or for a dry run)."""
    replayed: bool = False
    """True when this request uid had been reserved before: nothing new was charged."""

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


class LedgerError(StoreError):
    """An operation on an allocation that does not exist or cannot take it."""


def new_allocation_id() -> str:
    """``alloc-`` and 32 hex digits: the time in milliseconds (48 bits, as in a UUIDv7)
    then 80 random bits.

    Ids made later sort later, so a group commit's new keys go to the end of the
    allocations' key index instead of 32 scattered places in it (the group commits
    took about 6% less time, two stores interleaved in one process). The
    random part keeps ids unique across webhook replicas; an id is never trusted for
    what it is, only for what the ledger holds under it (see the admitter)."""
    return f"alloc-{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


# -- reading ---------------------------------------------------------------------------


def _row_to_allocation(row: Mapping[Any, Any]) -> Allocation:
    grants_raw: dict[str, dict[str, Any]] = row["grants"] or {}
    return Allocation(
        id=row["id"],
        request_uid=row["request_uid"],
        state=State(row["state"]),
        namespace=row["namespace"],
        pod_name=row["pod_name"],
        pod_uid=row["pod_uid"],
        department=row["department"],
        queue=row["queue"],
        sku=row["sku"],
        pool=row["pool"],
        amount=Resources(row[name] for name in RESOURCE_NAMES),
        borrowed=Resources(row[name] for name in _BORROWED_COLUMNS),
        subject=row["subject"],
        grants={name: SliceGrant(**g) for name, g in grants_raw.items()},
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        bound_at=row["bound_at"],
        ended_at=row["ended_at"],
        fingerprint=row["fingerprint"],
    )


def get(store: Store, allocation_id: str) -> Allocation | None:
    t = schema.allocations
    with store.read() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == allocation_id)).mappings().first()
    return _row_to_allocation(row) if row else None


def by_request(store: Store, request_uid: str) -> Allocation | None:
    t = schema.allocations
    with store.read() as conn:
        row = conn.execute(sa.select(t).where(t.c.request_uid == request_uid)).mappings().first()
    return _row_to_allocation(row) if row else None


def list_allocations(
    store: Store,
    *,
    states: Iterable[State] | None = None,
    department: str | None = None,
    departments: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[Allocation]:
    """Allocations, newest first, filtered by state and department."""
    t = schema.allocations
    query = sa.select(t).order_by(t.c.created_at.desc(), t.c.id)
    if states is not None:
        query = query.where(t.c.state.in_([s.value for s in states]))
    if department is not None:
        query = query.where(t.c.department == department)
    if departments is not None:
        query = query.where(t.c.department.in_(list(departments)))
    if limit is not None:
        query = query.limit(limit)
    with store.read() as conn:
        return [_row_to_allocation(r) for r in conn.execute(query).mappings()]


def usage(store: Store) -> dict[Scope, Resources]:
    """Usage of every scope that has a row."""
    with store.read() as conn:
        return read_usage(conn)


def read_usage(conn: Connection) -> dict[Scope, Resources]:
    """Usage of every scope, read in the caller's transaction (``revisions.apply`` checks
    quotas against it inside the transaction that records the new revision)."""
    return {
        scopes.parse(key): Resources(values)
        for key, *values in conn.execute(sa.select(*_USAGE_COLUMNS))
    }


def admission_counts(
    store: Store, *, since: datetime, departments: Iterable[str] | None
) -> tuple[int, list[tuple[str, int]]]:
    """(pods admitted since ``since``, [(denial reason, count)] most frequent first), for
    ``departments`` (None: all). Two ``COUNT`` queries: the console's overview asks on
    every refresh, and reading the entries to count them cost it about 300 ms at 3,000
    GPUs."""
    allocations = schema.allocations
    denials = schema.denials
    admitted = sa.select(sa.func.count()).where(allocations.c.created_at >= since)
    denied = (
        sa.select(denials.c.reason, sa.func.count())
        .where(denials.c.at >= since)
        .group_by(denials.c.reason)
    )
    if departments is not None:
        wanted = sorted(departments)
        admitted = admitted.where(allocations.c.department.in_(wanted))
        denied = denied.where(denials.c.department.in_(wanted))
    with store.read() as conn:
        n = int(conn.execute(admitted).scalar() or 0)
        reasons = [(str(reason), int(count)) for reason, count in conn.execute(denied)]
    reasons.sort(key=lambda x: (-x[1], x[0]))
    return n, reasons


@dataclass(frozen=True, kw_only=True)
class Denial:
    at: datetime
    namespace: str
    department: str
    queue: str
    sku: str
    subject: str
    reason: str
    message: str


def record_denial(store: Store, denial: Denial) -> None:
    """Keep a denial for the console and audit (the webhook records RBAC and
    placement denials; :func:`reserve` records quota denials itself)."""
    with store.write() as conn:
        conn.execute(_INSERT_DENIAL, _denial_row(denial))


def record_denials(store: Store, denials: Sequence[Denial], *, wait: bool = True) -> int:
    """Keep several denials, in one transaction (``wait``: see :meth:`Store.write`);
    returns how many were kept.

    Every text is cut to its column (a 600-character username made PostgreSQL refuse a
    whole group of denials). If the group is refused all the same, each denial is tried
    on its own, so that one the database refuses costs only itself (logged). An
    unreachable or (``wait=False``) locked store raises for the group, as before."""
    if not denials:
        return 0
    rows = [_denial_row(d) for d in denials]
    try:
        with store.write(wait=wait) as conn:
            conn.execute(_INSERT_DENIAL, rows)
        return len(rows)
    except (StoreUnavailable, StoreBusy):
        raise
    except StoreError as exc:
        if len(rows) == 1:
            raise
        log.warning("a group of %d denials was refused (%s); recording one by one", len(rows), exc)
    kept = 0
    for denial, row in zip(denials, rows, strict=True):
        try:
            with store.write(wait=wait) as conn:
                conn.execute(_INSERT_DENIAL, row)
            kept += 1
        except StoreError as exc:  # the audit trail misses this one; the answer stood
            log.warning(
                "could not record the denial of %r in %s (%s): %s",
                denial.subject[:80],
                denial.namespace,
                denial.reason,
                exc,
            )
    return kept


def _denial_row(denial: Denial) -> dict[str, Any]:
    return _fit(
        _DENIAL_LENGTHS,
        {
            "at": denial.at,
            "namespace": denial.namespace,
            "department": denial.department,
            "queue": denial.queue,
            "sku": denial.sku,
            "subject": denial.subject,
            "reason": denial.reason,
            "message": denial.message,
        },
    )


def _lengths(table: sa.Table) -> dict[str, int]:
    """The length of each bounded text column (PostgreSQL refuses a longer value)."""
    return {
        c.name: c.type.length
        for c in table.columns
        if isinstance(c.type, sa.String) and c.type.length is not None
    }


_DENIAL_LENGTHS = _lengths(schema.denials)
_ALLOCATION_LENGTHS = _lengths(schema.allocations)


def _fit(lengths: Mapping[str, int], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with each text longer than its column cut (:func:`_cut`)."""
    for name, limit in lengths.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            row[name] = _cut(value, limit)
    return row


def _cut(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, an ellipsis marking the cut. Names reach
    the ledger before Kubernetes validates anything: a userInfo name has no bound, and a
    pod's name is checked only after admission."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def recent_denials(
    store: Store, *, departments: Iterable[str] | None = None, limit: int = 100
) -> list[Denial]:
    t = schema.denials
    query = sa.select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
    if departments is not None:
        query = query.where(t.c.department.in_(list(departments)))
    with store.read() as conn:
        return [
            Denial(
                at=r["at"],
                namespace=r["namespace"],
                department=r["department"],
                queue=r["queue"],
                sku=r["sku"],
                subject=r["subject"],
                reason=r["reason"],
                message=r["message"],
            )
            for r in conn.execute(query).mappings()
        ]


# -- locking and counting --------------------------------------------------------------
# The statements of the hot path are built once: SQLAlchemy then reuses their compiled
# form; the bulk statements of a group commit are the driver's own SQL (_DriverSql).

_U = schema.usage
_A = schema.allocations
_USAGE_COLUMNS = (_U.c.scope, *(_U.c[name] for name in RESOURCE_NAMES))
_BORROWED_COLUMNS = tuple(f"{schema.BORROWED_PREFIX}{name}" for name in RESOURCE_NAMES)
_ADD_USAGE = (
    _U.update()
    .where(_U.c.scope.in_(sa.bindparam("keys", expanding=True)))
    .values(
        {
            name: _U.c[name] + sa.bindparam(f"d_{name}", type_=sa.BigInteger)
            for name in RESOURCE_NAMES
        }
    )
)
_SELECT_BY_REQUESTS = sa.select(_A).where(
    _A.c.request_uid.in_(sa.bindparam("uids", expanding=True))
)
_INSERT_DENIAL = schema.denials.insert()
_D = schema.denials
_DENIAL_COLUMNS = tuple(c.name for c in _D.columns if not c.primary_key)
_ALLOCATION_COLUMNS = tuple(c.name for c in _A.columns)
_INSTANT_COLUMNS = tuple(c.name for c in _A.columns if isinstance(c.type, schema.UTCDateTime))


@dataclass(frozen=True)
class _DriverSql:
    """The group commit's bulk statements as the database driver's own SQL.

    SQLAlchemy Core builds parameters row by row through its type system, which cost
    more than SQLite's work for the hundreds of rows of a group. These statements are
    rendered once per dialect from the same tables, with the same types' bind
    processors (SQLAlchemy's, for the JSON and UTC-timestamp columns), and executed
    with ``exec_driver_sql`` (errors are SQLAlchemy's as on any other statement)."""

    placeholder: str
    lock_usage: str
    """A format string; ``{marks}`` takes the placeholders of the IN list."""
    add_usage: str
    """A format string; ``{rows}`` takes ``add_usage_row`` once per scope."""
    add_usage_row: str
    create_usage: str
    insert_allocation: str
    """A format string; ``{rows}`` takes ``insert_allocation_row`` once per allocation."""
    insert_allocation_row: str
    allocation_values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    """A row's values (a dict by column name) in the table's column order."""
    allocation_processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(position, bind processor) of the columns that have one (on SQLite, the JSON
    grants and the timestamps): the others' values go in as they are, unvisited."""
    lock_usage_any: str = ""
    """PostgreSQL (this and the statements below): ``lock_usage`` over one JSON array
    of scopes. Each takes its lists as one JSON parameter, so that each has one text
    whatever the group's size (psycopg converts each text once and prepares it on the
    server after a few runs), and a group's usage update and allocations go in one
    statement: one round trip fewer while the group holds its usage rows' locks. JSON,
    not PostgreSQL arrays: psycopg dumps an array element by element in Python (a
    regular expression quoting each text), which cost a writer more CPU than everything
    else in a group; ``json.dumps`` is C. Each statement is shaped so that the planner,
    which cannot see inside a parameter, still reaches the usage rows through their
    index (``scope = ANY(ARRAY(SELECT ...))``, an initplan run once): joined directly to
    a JSON record set of unknown length it scanned the whole usage table under the
    group's locks."""
    known_uids: str = ""
    """The allocations (every column, in the table's order) of the request uids of one
    JSON array that the ledger holds."""
    insert_denials: str = ""
    """The denials of one JSON array of rows by column name."""
    record_any: str = ""
    """The usage deltas (one JSON array of objects: the scope and each resource) and
    the allocations (one JSON array of rows by column name) in one statement."""

    def allocation_params(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The flat parameters of ``insert_allocation`` for ``rows``."""
        params: list[Any] = []
        values_of, processors = self.allocation_values, self.allocation_processors
        for row in rows:
            values = list(values_of(row))
            for position, process in processors:
                values[position] = process(values[position])
            params += values
        return params


_DRIVER_SQL: dict[tuple[str, str], _DriverSql] = {}


def _driver_sql(dialect: sa.Dialect) -> _DriverSql:
    key = (dialect.name, dialect.driver)
    found = _DRIVER_SQL.get(key)
    if found is not None:
        return found
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    q = dialect.identifier_preparer.quote
    usage, alloc = q(_U.name), q(_A.name)
    scope, *amounts = (q(c.name) for c in _USAGE_COLUMNS)
    lock = "" if dialect.name == "sqlite" else " FOR UPDATE"
    columns = tuple(c.name for c in _A.columns)
    record_any = ""
    if dialect.name == "postgresql":
        record_any = (
            f"WITH d AS MATERIALIZED (SELECT * FROM json_to_recordset({mark}::json) "
            f"AS d({scope} VARCHAR(512), "
            + ", ".join(f"{a} BIGINT" for a in amounts)
            + f")), u AS (UPDATE {usage} SET "
            + ", ".join(f"{a} = {usage}.{a} + d.{a}" for a in amounts)
            + f" FROM d WHERE {usage}.{scope} = d.{scope} "
            f"AND {usage}.{scope} = ANY(ARRAY(SELECT {scope} FROM d)) RETURNING 1) "
            f"INSERT INTO {alloc} ({', '.join(q(c) for c in columns)}) "
            f"SELECT {', '.join(q(c) for c in columns)} "
            f"FROM json_populate_recordset(NULL::{alloc}, {mark}::json)"
        )
    found = _DriverSql(
        placeholder=mark,
        lock_usage=(
            f"SELECT {scope}, {', '.join(amounts)} FROM {usage} "
            f"WHERE {scope} IN ({{marks}}) ORDER BY {scope}{lock}"
        ),
        # One statement for the group, not one per row (PostgreSQL's round trips and
        # both drivers' per-statement work); VALUES columns are column1, column2... in
        # both: the scope, then one per resource.
        add_usage=(
            f"UPDATE {usage} SET "
            + ", ".join(f"{a} = {usage}.{a} + d.column{i + 2}" for i, a in enumerate(amounts))
            + f" FROM (VALUES {{rows}}) AS d WHERE {usage}.{scope} = d.column1"
        ),
        add_usage_row=(
            f"(CAST({mark} AS VARCHAR(512)), "
            + ", ".join(f"CAST({mark} AS BIGINT)" for _ in amounts)
            + ")"
        ),
        create_usage=(
            f"INSERT INTO {usage} ({scope}, {', '.join(amounts)}) "
            f"VALUES ({mark}, {', '.join('0' for _ in amounts)}) ON CONFLICT ({scope}) DO NOTHING"
        ),
        insert_allocation=(
            f"INSERT INTO {alloc} ({', '.join(q(c) for c in columns)}) VALUES {{rows}}"
        ),
        insert_allocation_row=f"({', '.join(mark for _ in columns)})",
        allocation_values=operator.itemgetter(*columns),
        allocation_processors=tuple(
            (position, process)
            for position, process in enumerate(
                c.type.dialect_impl(dialect).bind_processor(dialect) for c in _A.columns
            )
            if process is not None
        ),
        lock_usage_any=(
            f"SELECT {scope}, {', '.join(amounts)} FROM {usage} "
            f"WHERE {scope} = ANY(ARRAY(SELECT json_array_elements_text({mark}::json))) "
            f"ORDER BY {scope}{lock}"
        ),
        record_any=record_any,
        known_uids=(
            f"SELECT {', '.join(q(c) for c in columns)} FROM {alloc} WHERE {q('request_uid')} "
            f"IN (SELECT json_array_elements_text({mark}::json))"
        ),
        insert_denials=(
            f"INSERT INTO {q(_D.name)} ({', '.join(q(c) for c in _DENIAL_COLUMNS)}) "
            f"SELECT {', '.join(q(c) for c in _DENIAL_COLUMNS)} "
            f"FROM json_populate_recordset(NULL::{q(_D.name)}, {mark}::json)"
        ),
    )
    _DRIVER_SQL[key] = found
    return found


def _allocation_row(alloc: Allocation) -> dict[str, Any]:
    """The ``allocations`` row of ``alloc``, by column name."""
    amount, borrowed = alloc.amount, alloc.borrowed
    return {
        "id": alloc.id,
        "request_uid": alloc.request_uid,
        "state": alloc.state.value,
        "namespace": alloc.namespace,
        "pod_name": alloc.pod_name,
        "pod_uid": alloc.pod_uid,
        "department": alloc.department,
        "queue": alloc.queue,
        "sku": alloc.sku,
        "pool": alloc.pool,
        **dict(zip(RESOURCE_NAMES, amount.values, strict=True)),
        **dict(zip(_BORROWED_COLUMNS, borrowed.values, strict=True)),
        "subject": alloc.subject,
        "grants": {name: g.as_dict() for name, g in alloc.grants.items()},
        "created_at": alloc.created_at,
        "expires_at": alloc.expires_at,
        "bound_at": alloc.bound_at,
        "ended_at": alloc.ended_at,
        "fingerprint": alloc.fingerprint,
    }


class _Tx:
    """The statements of a reservation's transaction, on one database: the usage rows
    to lock and create, the allocations the ledger already holds for some request uids,
    and the writes of a group. :class:`_SqliteTx` runs them through SQLAlchemy,
    :class:`_PgTx` on psycopg's own cursor."""

    creates_in_place: bool = False
    """Whether a missing usage row is created inside the transaction that needs it."""

    def usage_rows(self, keys: Sequence[str]) -> Sequence[Sequence[Any]]:
        """(scope, amount per resource) of the rows of ``keys`` that exist, locked."""
        raise NotImplementedError

    def create_usage(self, keys: Sequence[str]) -> None:
        raise NotImplementedError

    def known(self, uids: Sequence[str]) -> list[Allocation]:
        """The entries of the request uids that the ledger holds (seldom any: the API
        server's retries)."""
        raise NotImplementedError

    def record(
        self, added: Mapping[Scope, Sequence[int]], allocations: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add each scope's amounts to its row and insert the allocations."""
        raise NotImplementedError

    def deny(self, rows: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError


class _SqliteTx(_Tx):
    """SQLite, through a SQLAlchemy connection (its statements are CPU work of
    microseconds; SQLAlchemy's share is small)."""

    creates_in_place = True

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sql = _driver_sql(conn.dialect)

    def usage_rows(self, keys: Sequence[str]) -> Sequence[Sequence[Any]]:
        sql = self.sql
        statement = sql.lock_usage.format(marks=", ".join(sql.placeholder for _ in keys))
        return self.conn.exec_driver_sql(statement, tuple(keys)).all()

    def create_usage(self, keys: Sequence[str]) -> None:
        self.conn.exec_driver_sql(self.sql.create_usage, [(k,) for k in keys])

    def known(self, uids: Sequence[str]) -> list[Allocation]:
        rows = self.conn.execute(_SELECT_BY_REQUESTS, {"uids": list(uids)}).mappings()
        return [_row_to_allocation(row) for row in rows]

    def record(
        self, added: Mapping[Scope, Sequence[int]], allocations: Sequence[Mapping[str, Any]]
    ) -> None:
        if added:
            _add_deltas(self.conn, added)
        if allocations:
            sql = self.sql
            self.conn.exec_driver_sql(
                sql.insert_allocation.format(
                    rows=", ".join(sql.insert_allocation_row for _ in allocations)
                ),
                tuple(sql.allocation_params(allocations)),
            )

    def deny(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(_INSERT_DENIAL, list(rows))


class _PgTx(_Tx):
    """PostgreSQL, on psycopg's own cursor: every list in one JSON parameter (see
    :attr:`_DriverSql.lock_usage_any`), no SQLAlchemy between (its statement and result
    objects cost a group as much as the statements). The driver's errors come
    out as SQLAlchemy's (:meth:`Store.driver_error`), for the store to translate.
    :class:`_AsyncPgTx` is the same on an event loop."""

    def __init__(self, store: Store, cursor: Any) -> None:
        self.store = store
        self.cursor = cursor
        self.sql = _driver_sql(store.engine.dialect)
        self._errors = store.engine.dialect.loaded_dbapi.Error

    @classmethod
    def on(cls, store: Store, conn: Connection) -> _PgTx:
        """On the driver's connection under a SQLAlchemy transaction."""
        driver = conn.connection.driver_connection
        assert driver is not None, "a connection in a transaction has its driver's"
        return cls(store, driver.cursor())

    def _run(
        self, statement: str, params: Sequence[Any], *, rows: bool = False, many: bool = False
    ) -> Any:
        """``statement`` (``many``: once per parameter list in ``params``), its rows when
        ``rows``; the driver's errors as SQLAlchemy's."""
        try:
            if many:
                self.cursor.executemany(statement, params)
                return None
            self.cursor.execute(statement, params)
            return self.cursor.fetchall() if rows else None
        except self._errors as exc:
            raise self.store.driver_error(exc, self.cursor.connection) from exc

    def usage_rows(self, keys: Sequence[str]) -> Sequence[Sequence[Any]]:
        rows: list[tuple[Any, ...]] = self._run(self.sql.lock_usage_any, _pg_list(keys), rows=True)
        return rows

    def create_usage(self, keys: Sequence[str]) -> None:
        self._run(self.sql.create_usage, [(k,) for k in keys], many=True)

    def known(self, uids: Sequence[str]) -> list[Allocation]:
        return _pg_allocations(self._run(self.sql.known_uids, _pg_list(uids), rows=True))

    def record(
        self, added: Mapping[Scope, Sequence[int]], allocations: Sequence[Mapping[str, Any]]
    ) -> None:
        if added or allocations:
            self._run(self.sql.record_any, _pg_record(added, allocations))

    def deny(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._run(self.sql.insert_denials, _pg_rows(rows))


class _AsyncPgTx:
    """:class:`_PgTx` on psycopg's ``AsyncConnection``: the same statements and
    parameters, each awaited (driven by :func:`_drive_async`)."""

    creates_in_place = False

    def __init__(self, store: Store, cursor: Any) -> None:
        self.store = store
        self.cursor = cursor
        self.sql = _driver_sql(store.engine.dialect)
        self._errors = store.engine.dialect.loaded_dbapi.Error

    async def _run(
        self, statement: str, params: Sequence[Any], *, rows: bool = False, many: bool = False
    ) -> Any:
        try:
            if many:
                await self.cursor.executemany(statement, params)
                return None
            await self.cursor.execute(statement, params)
            return await self.cursor.fetchall() if rows else None
        except self._errors as exc:
            raise self.store.driver_error(exc, self.cursor.connection) from exc

    async def usage_rows(self, keys: Sequence[str]) -> Sequence[Sequence[Any]]:
        rows: list[tuple[Any, ...]] = await self._run(
            self.sql.lock_usage_any, _pg_list(keys), rows=True
        )
        return rows

    async def create_usage(self, keys: Sequence[str]) -> None:
        await self._run(self.sql.create_usage, [(k,) for k in keys], many=True)

    async def known(self, uids: Sequence[str]) -> list[Allocation]:
        return _pg_allocations(await self._run(self.sql.known_uids, _pg_list(uids), rows=True))

    async def record(
        self, added: Mapping[Scope, Sequence[int]], allocations: Sequence[Mapping[str, Any]]
    ) -> None:
        if added or allocations:
            await self._run(self.sql.record_any, _pg_record(added, allocations))

    async def deny(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._run(self.sql.insert_denials, _pg_rows(rows))


def _pg_list(values: Sequence[str]) -> tuple[str]:
    return (json.dumps(list(values)),)


def _pg_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[str]:
    return (json.dumps(list(rows), default=_json_instant),)


def _pg_record(
    added: Mapping[Scope, Sequence[int]], allocations: Sequence[Mapping[str, Any]]
) -> tuple[str, str]:
    deltas = [
        {"scope": key.key, **dict(zip(RESOURCE_NAMES, delta, strict=True))}
        for key, delta in added.items()
    ]
    return (json.dumps(deltas), json.dumps(allocations, default=_json_instant))


def _pg_allocations(rows: Sequence[Sequence[Any]]) -> list[Allocation]:
    """Allocations from rows of every column in the table's order (``known_uids``)."""
    found = []
    for row in rows:
        named = dict(zip(_ALLOCATION_COLUMNS, row, strict=True))
        for name in _INSTANT_COLUMNS:  # the session's time zone, as UTC
            if named[name] is not None:
                named[name] = named[name].astimezone(UTC)
        found.append(_row_to_allocation(named))
    return found


def _tx(store: Store, conn: Connection) -> _Tx:
    return _SqliteTx(conn) if store.is_sqlite else _PgTx.on(store, conn)


def _lock_usage(tx: _Tx, keys: Iterable[Scope], *, create: bool = True) -> dict[Scope, Resources]:
    """Lock the usage rows of ``keys``, in sorted order, and return them (``create``
    False: a missing row is left out, which reads as zero, for a dry run that writes
    nothing).

    On PostgreSQL every row is locked by one ``SELECT ... ORDER BY scope FOR UPDATE``,
    so that all transactions take their locks in one total order and cannot deadlock.
    A row that does not exist yet cannot be locked: creating it here, after other rows
    are held, broke that order (two webhooks bursting into a new department deadlocked,
    issue 12.3). So a missing row raises :class:`_MissingUsage`, and :func:`_write`
    creates it in a short transaction of its own and runs the whole transaction again.
    SQLite serialises writers (``BEGIN IMMEDIATE``): there the rows are created in
    place."""
    return _drive(tx, _lock_steps(keys, create=create, in_place=tx.creates_in_place))


def _lock_steps(
    keys: Iterable[Scope], *, create: bool, in_place: bool
) -> Generator[_Step, Any, dict[Scope, Resources]]:
    """:func:`_lock_usage` as steps (see :func:`_drive`)."""
    ordered = sorted(set(keys))
    found = yield from _usage_steps(ordered)
    missing = [k for k in ordered if k not in found]
    if missing and create:
        if not in_place:
            raise _MissingUsage(missing)
        yield ("create_usage", [k.key for k in missing])
        found.update((yield from _usage_steps(missing)))
    return found


def _usage_steps(ordered: Sequence[Scope]) -> Generator[_Step, Any, dict[Scope, Resources]]:
    """The rows of ``ordered`` that exist, locked (read by exact key)."""
    by_key = {scope.key: scope for scope in ordered}
    rows = yield ("usage_rows", list(by_key))
    return {by_key[key]: Resources(values) for key, *values in rows}


_Step = tuple[Any, ...]
"""One statement of a transaction's steps: the name of a :class:`_Tx` method and its
arguments."""


def _drive(tx: _Tx, steps: Generator[_Step, Any, _T]) -> _T:
    """Run ``steps`` on ``tx``: each step it yields is a :class:`_Tx` method's name and
    arguments, and the method's answer is sent back. The decision is written once, as
    steps, and run on a blocking connection here, on the event loop's by
    :func:`_drive_async`."""
    try:
        step = next(steps)
        while True:
            name, *args = step
            step = steps.send(getattr(tx, name)(*args))
    except StopIteration as done:
        result: _T = done.value
        return result


async def _drive_async(tx: Any, steps: Generator[_Step, Any, _T]) -> _T:
    """:func:`_drive` on a transaction whose methods are coroutines (:class:`_AsyncPgTx`)."""
    try:
        step = next(steps)
        while True:
            name, *args = step
            step = steps.send(await getattr(tx, name)(*args))
    except StopIteration as done:
        result: _T = done.value
        return result


class _MissingUsage(Exception):
    """Usage rows to create before the transaction that needs them can lock them."""

    def __init__(self, keys: Sequence[Scope]) -> None:
        super().__init__(f"usage rows missing: {', '.join(k.key for k in keys)}")
        self.keys = tuple(keys)


CONFLICT_ATTEMPTS = 5
"""Runs of one transaction that PostgreSQL may roll back to break a deadlock or a
serialisation conflict (:class:`StoreConflict`) before the error reaches the caller."""
CONFLICT_BACKOFF_S = 0.01
"""The first pause before a run again (doubling, with full jitter)."""

_T = TypeVar("_T")
_C = TypeVar("_C")


def _write(store: Store, work: Callable[[Connection], _T], *, wait: bool = True) -> _T:
    """``work`` in one write transaction of the store (see :func:`_run`)."""

    def create(keys: Sequence[str]) -> None:
        with store.write(wait=wait) as conn:
            _tx(store, conn).create_usage(keys)

    return _run(lambda: store.write(wait=wait), work, create)


def _run(
    begin: Callable[[], AbstractContextManager[_C]],
    work: Callable[[_C], _T],
    create: Callable[[Sequence[str]], None],
) -> _T:
    """``work`` in the write transaction that ``begin`` opens, run again when it needs
    usage rows created first (:class:`_MissingUsage`: ``create`` makes them in their
    own short transaction, in sorted order, ``ON CONFLICT DO NOTHING``), or when
    PostgreSQL rolled it back to break a deadlock or a serialisation conflict (see
    :class:`_Again`)."""
    again = _Again()
    while True:
        try:
            with begin() as tx:
                return work(tx)
        except _MissingUsage as missing:
            create(again.creating(missing))
        except StoreConflict as conflict:
            time.sleep(again.after_conflict(conflict))


class _Again:
    """When a transaction runs again: after it found usage rows missing (created first,
    each run creating what it found missing), or after PostgreSQL rolled it back to
    break a deadlock or a serialisation conflict (at most :data:`CONFLICT_ATTEMPTS`
    runs, after a pause doubling from :data:`CONFLICT_BACKOFF_S`, with full jitter)."""

    def __init__(self) -> None:
        self.conflicts = 0
        self.creations = 0

    def creating(self, missing: _MissingUsage) -> list[str]:
        """The keys to create before the next run; StoreError when runs keep finding
        rows missing."""
        self.creations += 1
        if self.creations > len(missing.keys) + 2:
            raise StoreError(f"could not create the ledger's {missing}") from None
        return [k.key for k in sorted(missing.keys)]

    def after_conflict(self, conflict: StoreConflict) -> float:
        """Seconds to wait before the next run; ``conflict`` again when runs are spent."""
        self.conflicts += 1
        if self.conflicts >= CONFLICT_ATTEMPTS:
            raise conflict
        return random.uniform(0, CONFLICT_BACKOFF_S * 2**self.conflicts)


def _add_usage(conn: Connection, keys: Iterable[Scope], delta: Resources) -> None:
    conn.execute(
        _ADD_USAGE,
        {
            "keys": sorted({k.key for k in keys}),
            **{f"d_{name}": value for name, value in delta.items()},
        },
    )


# -- transitions -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReserveRequest:
    """One reservation to make: what :func:`reserve` takes, as a value (for
    :func:`reserve_many` and :class:`admission.writer.LedgerWriter`)."""

    demand: Demand
    request_uid: str
    namespace: str
    grants: Mapping[str, SliceGrant]
    subject: str = ""
    pod_name: str = ""
    allocation_id: str | None = None
    ttl: timedelta = DEFAULT_TTL
    now: datetime | None = None
    fingerprint: str = ""
    """See :attr:`Allocation.fingerprint`."""


def reserve(
    store: Store,
    org: Org,
    *,
    demand: Demand,
    request_uid: str,
    namespace: str,
    grants: Mapping[str, SliceGrant],
    subject: str = "",
    pod_name: str = "",
    allocation_id: str | None = None,
    ttl: timedelta = DEFAULT_TTL,
    dry_run: bool = False,
    now: datetime | None = None,
    fingerprint: str = "",
) -> Reservation:
    """Check every limit on the demand's path and record a reservation, in one
    transaction. A request uid seen before returns its reservation (``replayed``).
    A dry run decides but records nothing (not even a denial)."""
    request = ReserveRequest(
        demand=demand,
        request_uid=request_uid,
        namespace=namespace,
        grants=grants,
        subject=subject,
        pod_name=pod_name,
        allocation_id=allocation_id,
        ttl=ttl,
        now=now,
        fingerprint=fingerprint,
    )

    def work(conn: Connection) -> Reservation:
        (reservation,) = _reserve_in(_tx(store, conn), org, [request], dry_run=dry_run)
        if dry_run:
            conn.rollback()
        return reservation

    return _write(store, work)


def reserve_many(
    store: Store, org: Org, requests: Sequence[ReserveRequest], *, wait: bool = True
) -> list[Reservation]:
    """Reserve for every request in one transaction (group commit), one answer each.

    The requests are decided in order, each against the usage that those before it
    leave, exactly as if each had been reserved alone in that order: a request uid
    seen before (in the ledger or earlier in ``requests``) returns its reservation, a
    request that does not fit is denied (and the denial kept) without affecting the
    others. The statements are the same whatever the number of requests (one read of
    the prior request uids, one locking read of every scope on their paths, one
    update of each touched scope, one insert of the allocations, one of the denials;
    on PostgreSQL the update and the insert are one statement, and every text is the
    same for any group size: see :class:`_DriverSql`), so their cost is shared. If the
    transaction fails, none of them is recorded.
    ``wait=False``: see :meth:`Store.write`."""
    if not requests:
        return []
    return _write(
        store,
        lambda conn: _reserve_in(_tx(store, conn), org, requests, dry_run=False),
        wait=wait,
    )


class AsyncGroupSession:
    """:func:`reserve_many` for an event loop that writes group after group
    (PostgreSQL): each group written on a connection the loop holds
    (:class:`~governance.storage.store.AsyncHeldConnection`), every statement awaited,
    so no thread and no hand-over of the GIL stands between the loop and the database,
    and no pool checkout, liveness ping or SQLAlchemy object per group (together they
    cost a group of one 0.84 ms of client CPU, against 0.43 ms on a held connection
    through the driver's cursor). The same steps decide as on every other path
    (:func:`_reserve_steps`), with the same runs again (:class:`_Again`). A group that
    fails because the held connection broke (the server restarted, a proxy dropped an
    idle connection) runs once more on a new one: it committed nothing that the run
    again does not find (a request uid in the ledger is replayed, not charged twice).
    One group at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held = store.hold_async()

    @property
    def connects(self) -> int:
        """Connections opened so far."""
        return self._held.connects

    async def reserve_many(self, org: Org, requests: Sequence[ReserveRequest]) -> list[Reservation]:
        if not requests:
            return []
        held = self._held
        while True:
            fresh = held.broken  # the next transaction opens a connection
            try:
                return await self._run(org, requests)
            except StoreUnavailable:
                if fresh or not held.broken:
                    raise
                log.warning(
                    "the ledger's held connection broke; running the group again on a new one"
                )

    async def _run(self, org: Org, requests: Sequence[ReserveRequest]) -> list[Reservation]:
        again = _Again()
        while True:
            try:
                async with self._held.transaction() as cursor:
                    steps = _reserve_steps(org, requests, dry_run=False, in_place=False)
                    return await _drive_async(_AsyncPgTx(self.store, cursor), steps)
            except _MissingUsage as missing:
                keys = again.creating(missing)
                async with self._held.transaction() as cursor:
                    await _AsyncPgTx(self.store, cursor).create_usage(keys)
            except StoreConflict as conflict:
                await asyncio.sleep(again.after_conflict(conflict))

    async def close(self) -> None:
        await self._held.close()

    def abandon(self) -> None:
        """Close the connection without its event loop (which is gone)."""
        self._held.abandon()


def _reserve_in(
    tx: _Tx,
    org: Org,
    requests: Sequence[ReserveRequest],
    *,
    dry_run: bool,
) -> list[Reservation]:
    return _drive(tx, _reserve_steps(org, requests, dry_run=dry_run, in_place=tx.creates_in_place))


def _reserve_steps(
    org: Org,
    requests: Sequence[ReserveRequest],
    *,
    dry_run: bool,
    in_place: bool,
) -> Generator[_Step, Any, list[Reservation]]:
    """A group's transaction as steps (see :func:`_drive`): the prior request uids, the
    locked usage, then each request decided in order, then the writes."""
    uids = sorted({r.request_uid for r in requests})
    known: list[Allocation] = yield ("known", uids)
    seen: dict[str, Allocation] = {a.request_uid: a for a in known}
    # One locking read of every request's scopes (read by exact key: no collation
    # dependence). A request that borrows also needs its department's other queues:
    # they are read (and locked) when one does. Locking them then cannot deadlock:
    # every change inside a department holds the department row, which sorts first
    # and is already held.
    paths = [request.demand.path.locked for request in requests]
    view = yield from _lock_steps(
        {key for keys in paths for key in keys}, create=not dry_run, in_place=in_place
    )
    siblings_read: set[str] = set()
    added: dict[Scope, list[int]] = {}  # per scope, an amount per resource
    allocations: list[dict[str, Any]] = []
    denials: list[dict[str, Any]] = []
    out: list[Reservation] = []
    for request, keys in zip(requests, paths, strict=True):
        prior = seen.get(request.request_uid)
        if prior is not None:
            out.append(
                Reservation(
                    decision=QuotaDecision(
                        allowed=True, reason=Reason.ADMITTED, borrowed=prior.borrowed
                    ),
                    allocation=prior,
                    replayed=True,
                )
            )
            continue
        demand = request.demand
        if demand.department not in siblings_read and quotas.borrows(org, demand, view):
            siblings_read.add(demand.department)
            others = [key for key in quotas.siblings(org, demand) if key not in view]
            if others:
                view.update((yield from _lock_steps(others, create=not dry_run, in_place=in_place)))
        decision = quotas.evaluate(org, demand, view)
        now = request.now or utcnow()
        if dry_run:
            out.append(Reservation(decision=decision, allocation=None))
            continue
        if not decision.allowed:
            assert decision.violation is not None
            denials.append(
                _denial_row(
                    Denial(
                        at=now,
                        namespace=request.namespace,
                        department=demand.department,
                        queue=demand.queue,
                        sku=demand.sku,
                        subject=request.subject,
                        reason=decision.reason.value,
                        message=decision.violation.message(),
                    )
                )
            )
            out.append(Reservation(decision=decision, allocation=None))
            continue
        amount = demand.amount
        values = amount.values
        for key in keys:
            view[key] = view.get(key, ZERO) + amount
            delta = added.get(key)
            if delta is None:
                added[key] = list(values)
            else:
                for i, value in enumerate(values):
                    delta[i] += value
        subject = _cut(request.subject, _ALLOCATION_LENGTHS["subject"])
        pod_name = _cut(request.pod_name, _ALLOCATION_LENGTHS["pod_name"])
        alloc = Allocation(
            id=request.allocation_id or new_allocation_id(),
            request_uid=request.request_uid,
            state=State.RESERVED,
            namespace=request.namespace,
            pod_name=pod_name,
            pod_uid="",
            department=demand.department,
            queue=demand.queue,
            sku=demand.sku,
            pool=demand.pool,
            amount=amount,
            borrowed=decision.borrowed,
            subject=subject,
            grants=dict(request.grants),
            created_at=now,
            expires_at=now + request.ttl,
            bound_at=None,
            ended_at=None,
            fingerprint=request.fingerprint,
        )
        allocations.append(_allocation_row(alloc))
        seen[request.request_uid] = alloc
        out.append(Reservation(decision=decision, allocation=alloc))
    if allocations:
        yield ("record", added, allocations)
    if denials:
        yield ("deny", denials)
    return out


def _json_instant(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC instants")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _add_deltas(conn: Connection, deltas: Mapping[Scope, Sequence[int]]) -> None:
    """Add an amount per resource to each scope's row, in one statement."""
    sql = _driver_sql(conn.dialect)
    ordered = sorted(deltas.items())
    params: list[Any] = []
    for key, delta in ordered:
        params.append(key.key)
        params += delta
    conn.exec_driver_sql(
        sql.add_usage.format(rows=", ".join(sql.add_usage_row for _ in ordered)),
        tuple(params),
    )


def _locked_allocation(store: Store, conn: Connection, allocation_id: str) -> Allocation:
    t = schema.allocations
    query = sa.select(t).where(t.c.id == allocation_id)
    if not store.is_sqlite:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise LedgerError(f"no allocation {allocation_id!r} in the ledger")
    return _row_to_allocation(row)


def _demand_of(alloc: Allocation) -> Demand:
    return Demand(
        department=alloc.department,
        queue=alloc.queue,
        sku=alloc.sku,
        pool=alloc.pool,
        amount=alloc.amount,
    )


def bind(
    store: Store,
    allocation_id: str,
    *,
    pod_uid: str,
    pod_name: str = "",
    now: datetime | None = None,
) -> Allocation:
    """The pod exists. Idempotent. An entry that had expired (the pod showed up late)
    is charged again and bound: a running pod is always counted."""
    at = now or utcnow()
    t = schema.allocations

    def work(conn: Connection) -> Allocation:
        alloc = _locked_allocation(store, conn, allocation_id)
        if alloc.state in (State.BOUND, State.RELEASED):
            return alloc
        if alloc.state is State.EXPIRED:
            keys = _demand_of(alloc).path.locked
            _lock_usage(_tx(store, conn), keys)
            _add_usage(conn, keys, alloc.amount)
        values = {
            "state": State.BOUND.value,
            "pod_uid": pod_uid,
            "pod_name": pod_name or alloc.pod_name,
            "bound_at": at,
            "ended_at": None,
        }
        conn.execute(t.update().where(t.c.id == allocation_id).values(**values))
        return _replace(alloc, values)

    return _write(store, work)


def release(
    store: Store,
    allocation_id: str,
    *,
    now: datetime | None = None,
    state: State = State.RELEASED,
) -> Allocation:
    """The pod is gone (or never came: ``state=EXPIRED``). Idempotent."""
    if state.live:
        raise ValueError(f"release to a live state {state.value!r}")
    at = now or utcnow()
    t = schema.allocations

    def work(conn: Connection) -> Allocation:
        alloc = _locked_allocation(store, conn, allocation_id)
        if not alloc.state.live:
            return alloc
        keys = _demand_of(alloc).path.locked
        _lock_usage(_tx(store, conn), keys)
        _add_usage(conn, keys, -alloc.amount)
        values = {"state": state.value, "ended_at": at}
        conn.execute(t.update().where(t.c.id == allocation_id).values(**values))
        return _replace(alloc, values)

    return _write(store, work)


DUPLICATE_PREFIX = "duplicate:"
"""The request uid of a duplicate's entry: this prefix and the pod's uid."""


def duplicate_uid(pod_uid: str) -> str:
    """The request uid under which :func:`record_duplicate` keeps a pod's own entry."""
    return f"{DUPLICATE_PREFIX}{pod_uid}"


def record_duplicate(
    store: Store,
    claimed: Allocation,
    *,
    pod_uid: str,
    pod_name: str,
    now: datetime | None = None,
) -> tuple[Allocation, bool]:
    """A second pod runs with the allocation id of ``claimed`` (which another pod holds):
    give it an entry of its own, bound to it and charged like ``claimed``, so that usage
    counts every running pod (even past a quota: the pod exists). Idempotent by the
    pod's uid (:func:`duplicate_uid`); returns (the entry, whether it was made now)."""
    at = now or utcnow()
    uid = duplicate_uid(pod_uid)
    t = schema.allocations

    def work(conn: Connection) -> tuple[Allocation, bool]:
        found = conn.execute(sa.select(t).where(t.c.request_uid == uid)).mappings().first()
        if found is not None:
            return _row_to_allocation(found), False
        keys = _demand_of(claimed).path.locked
        _lock_usage(_tx(store, conn), keys)
        _add_usage(conn, keys, claimed.amount)
        alloc = dataclasses.replace(
            claimed,
            id=new_allocation_id(),
            request_uid=uid,
            state=State.BOUND,
            pod_name=_cut(pod_name, _ALLOCATION_LENGTHS["pod_name"]),
            pod_uid=pod_uid,
            created_at=at,
            expires_at=at,
            bound_at=at,
            ended_at=None,
            fingerprint="",
        )
        conn.execute(t.insert().values(**_allocation_row(alloc)))
        return alloc, True

    return _write(store, work)


def expire(
    store: Store, *, now: datetime | None = None, created_before: datetime | None = None
) -> list[Allocation]:
    """Expire every reservation whose pod never appeared before its TTL ran out, and
    give its quota back; returns the entries expired.

    One conditional statement (``UPDATE ... WHERE state = 'reserved' ... RETURNING``)
    decides, under each row's lock, which entries expire: one that a pod bound a moment
    before stays bound (reading the ids first and releasing them after left running
    pods' entries expired). Only the usage of the entries that this statement changed
    is given back, in the same transaction.

    ``created_before``: spare entries made at or after this instant. The reconciler
    passes the time up to which it has seen every pod (less the time a pod may take to
    be created after its admission), so that a broken watch never expires the entry of
    a pod that exists but was not seen."""
    at = now or utcnow()
    t = schema.allocations
    condition = [t.c.state == State.RESERVED.value, t.c.expires_at < at]
    if created_before is not None:
        condition.append(t.c.created_at < created_before)
    statement = (
        t.update()
        .where(*condition)
        .values(state=State.EXPIRED.value, ended_at=at)
        .returning(*t.columns)
    )

    def work(conn: Connection) -> list[Allocation]:
        expired = [_row_to_allocation(row) for row in conn.execute(statement).mappings()]
        given_back: dict[Scope, list[int]] = {}
        for alloc in expired:
            values = alloc.amount.values
            for key in _demand_of(alloc).path.locked:
                delta = given_back.setdefault(key, [0] * len(values))
                for i, value in enumerate(values):
                    delta[i] -= value
        if given_back:
            _lock_usage(_tx(store, conn), sorted(given_back))
            _add_deltas(conn, given_back)
        return sorted(expired, key=lambda a: (a.created_at, a.id))

    return _write(store, work)


def _replace(alloc: Allocation, values: Mapping[str, Any]) -> Allocation:
    changes: dict[str, Any] = dict(values)
    if "state" in changes:
        changes["state"] = State(changes["state"])
    return dataclasses.replace(alloc, **changes)


# -- reports ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuotaLine:
    """One row of ``gpupool get quotas``: a department (queue "") or a queue, one
    resource."""

    department: str
    queue: str
    resource: ResourceName
    used: int
    limit: int | None
    """None: unlimited."""
    borrowed: int
    """For a queue: how far above its nominal quota it is now."""
    ceiling: int | None = None
    """For a queue: nominal + borrowing limit (None: unlimited)."""


def quota_report(
    store: Store, org: Org, *, departments: Iterable[str] | None = None
) -> list[QuotaLine]:
    current = usage(store)
    wanted = set(departments) if departments is not None else None
    lines: list[QuotaLine] = []
    for dept in sorted(org.departments.values(), key=lambda d: d.name):
        if wanted is not None and dept.name not in wanted:
            continue
        dused = current.get(scopes.department(dept.name), ZERO)
        for name in RESOURCE_NAMES:
            lines.append(
                QuotaLine(
                    department=dept.name,
                    queue="",
                    resource=name,
                    used=dused.get(name),
                    limit=dept.quota.total.get(name).value,
                    borrowed=0,
                    ceiling=dept.quota.total.get(name).value,
                )
            )
        for queue in sorted(org.queues_of(dept.name), key=lambda q: q.name):
            qused = current.get(scopes.queue(dept.name, queue.name), ZERO)
            ceiling = quotas.borrowing_ceiling(queue)
            for name in RESOURCE_NAMES:
                nominal = queue.nominal.total.get(name).value
                used_value = qused.get(name)
                lines.append(
                    QuotaLine(
                        department=dept.name,
                        queue=queue.name,
                        resource=name,
                        used=used_value,
                        limit=nominal,
                        borrowed=0 if nominal is None else max(0, used_value - nominal),
                        ceiling=ceiling.get(name).value,
                    )
                )
    return lines


def rebuild_usage(store: Store) -> int:
    """Recompute every usage row from the live allocations (repair after a bug or a
    manual edit). Returns the number of live allocations counted."""
    t, u = schema.allocations, schema.usage
    with store.write() as conn:
        rows = (
            conn.execute(
                sa.select(t).where(t.c.state.in_([State.RESERVED.value, State.BOUND.value]))
            )
            .mappings()
            .all()
        )
        totals: dict[Scope, Resources] = {}
        for row in rows:
            alloc = _row_to_allocation(row)
            for key in _demand_of(alloc).path.locked:
                totals[key] = totals.get(key, ZERO) + alloc.amount
        conn.execute(u.delete())
        if totals:
            conn.execute(
                u.insert(),
                [{"scope": k.key, **v.as_dict()} for k, v in sorted(totals.items())],
            )
    return len(rows)
