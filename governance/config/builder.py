"""The builder: a shape-valid document -> the frozen :class:`~governance.model.Org`.

It checks what the fields refer to (a queue's pool, a SKU offered on a queue's pool, a
binding's department and queues, namespaces owned twice, a borrowing limit with
nothing to borrow from...), lets each registered backend check the SKUs of its pools,
and reports every error of the document at once (:class:`_Builder`), each with its
path and line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from governance import backends, quantity, rbac
from governance.config import shape
from governance.config.document import with_lines
from governance.contract import SKU_CUSTOM
from governance.errors import ConfigError, FieldError
from governance.model import ROLES, Department, Org, Pool, Queue, Quota, RoleBinding, Sku
from governance.resources import RESOURCE_NAMES, YAML_KEYS

_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")


def known_backends() -> list[str]:
    """Backend names a pool may use: every registered backend."""
    return sorted(backends.BACKENDS)


def globs_overlap(a: str, b: str) -> bool:
    """Whether some namespace matches both glob patterns (``*`` and ``?`` only).

    Walks the product of the two patterns' automata: a state is a position in each.
    First a cheap test on the literal text before the first and after the last
    wildcard, which settles almost every pair of an organisation's patterns (an apply
    compares every pair, and organisations have a thousand departments).
    """
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    if not (pa.startswith(pb) or pb.startswith(pa)):
        return False
    sa_, sb_ = _literal_prefix(a[::-1]), _literal_prefix(b[::-1])
    if not (sa_.startswith(sb_) or sb_.startswith(sa_)):
        return False
    start = (0, 0)
    seen = {start}
    todo = [start]
    while todo:
        i, j = todo.pop()
        if i == len(a) and j == len(b):
            return True
        steps: list[tuple[int, int]] = []
        if i < len(a) and a[i] == "*":
            steps.append((i + 1, j))
        if j < len(b) and b[j] == "*":
            steps.append((i, j + 1))
        if i < len(a) and j < len(b):
            ca, cb = a[i], b[j]
            if ca in "*?" or cb in "*?" or ca == cb:
                steps.append((i if ca == "*" else i + 1, j if cb == "*" else j + 1))
        for step in steps:
            if step not in seen:
                seen.add(step)
                todo.append(step)
    return False


def _literal_prefix(pattern: str) -> str:
    """The text before the first wildcard."""
    for i, c in enumerate(pattern):
        if c in "*?":
            return pattern[:i]
    return pattern


def _is_pattern(namespace: str) -> bool:
    return "*" in namespace or "?" in namespace


class _Builder:
    """Checks the cross-references of a shape-valid document and builds the Org.

    Every check records its error and the build goes on, so that one run reports all
    that is wrong with a file (as Kueue's field error lists do); an entity that cannot
    be built at all (a queue on an unknown pool) is left out, and so are what refers to
    it only where that would repeat the same error."""

    def __init__(self, doc: shape.OrgDoc, source: str) -> None:
        self.doc = doc
        self.source = source
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path=path, reason=message))

    def name(self, path: str, value: str, what: str) -> str:
        if value == "*" or not _NAME_RE.match(value):
            self.fail(
                path,
                f"{what} name {value!r} is not valid: use lowercase letters, digits, '-', "
                "'.', '_' (at most 63 characters, starting and ending with a letter or digit)",
            )
        return value

    def unique(self, items: Iterable[tuple[str, str]], what: str) -> None:
        seen: dict[str, str] = {}
        for path, name in items:
            if name in seen:
                self.fail(f"{path}.name", f"duplicate {what} name {name!r} (also {seen[name]})")
            seen[name] = path

    def build(self) -> Org:
        pools = self.pools()
        skus = self.skus(pools)
        departments, queues = self.departments(pools, skus)
        bindings = self.role_bindings(departments, queues, skus)
        return Org(
            skus=skus,
            pools=pools,
            departments=departments,
            queues=queues,
            role_bindings=bindings,
        )

    def pools(self) -> dict[str, Pool]:
        self.unique(((f"pools[{i}]", p.name) for i, p in enumerate(self.doc.pools)), "pool")
        out: dict[str, Pool] = {}
        allowed = known_backends()
        for i, doc in enumerate(self.doc.pools):
            at = f"pools[{i}]"
            self.name(f"{at}.name", doc.name, "pool")
            if doc.backend not in allowed:
                self.fail(
                    f"{at}.backend",
                    f"unknown backend {doc.backend!r} for pool {doc.name}; known backends: "
                    f"{', '.join(allowed)}",
                )
            for key in ("memory_oversubscription", "compute_oversubscription"):
                factor = getattr(doc, key)
                if factor < 1.0:
                    self.fail(
                        f"{at}.{key}",
                        f"over-subscription factor {factor} is below 1.0: a pool sells at "
                        "least its physical capacity (1.0 = no over-subscription)",
                    )
            if doc.name in out:  # a duplicate, reported by unique()
                continue
            out[doc.name] = Pool(
                name=doc.name,
                vendor=doc.vendor,
                model=doc.model,
                backend=doc.backend,
                gpus=doc.gpus,
                memory_mib_per_gpu=doc.memory_per_gpu,
                memory_oversubscription=doc.memory_oversubscription,
                compute_oversubscription=doc.compute_oversubscription,
                node_selector=dict(doc.node_selector),
                backend_options=dict(doc.backend_options),
            )
        return out

    def skus(self, pools: Mapping[str, Pool]) -> dict[str, Sku]:
        self.unique(((f"skus[{i}]", s.name) for i, s in enumerate(self.doc.skus)), "SKU")
        out: dict[str, Sku] = {}
        for i, doc in enumerate(self.doc.skus):
            at = f"skus[{i}]"
            self.name(f"{at}.name", doc.name, "SKU")
            if doc.name == SKU_CUSTOM:
                self.fail(
                    f"{at}.name",
                    f"SKU name {SKU_CUSTOM!r} is reserved for HAMi-form requests that name "
                    "no SKU: choose another name",
                )
            if doc.memory is not None and doc.memory_pct is not None:
                self.fail(
                    at,
                    f"SKU {doc.name} gives both memory and memory_pct: give one (memory "
                    "in MiB or with a unit, or memory_pct of the card)",
                )
            if not 1 <= doc.compute <= 100:
                self.fail(
                    f"{at}.compute",
                    f"SKU {doc.name} compute {doc.compute}% is not 1..100% of a card (it is "
                    "per GPU; a SKU spanning several cards sets gpus: N)",
                )
            memory_pct = doc.memory_pct
            if doc.memory is None and memory_pct is None:
                if doc.compute != 100:
                    self.fail(
                        at,
                        f"SKU {doc.name} gives neither memory nor memory_pct: only a whole-card "
                        "SKU (compute 100%) may leave memory out (it then gets the whole card's)",
                    )
                memory_pct = 100
            if memory_pct is not None and not 1 <= memory_pct <= 100:
                self.fail(
                    f"{at}.memory_pct", f"SKU {doc.name} memory_pct {memory_pct} is not 1..100"
                )
            if doc.memory == 0:
                self.fail(f"{at}.memory", f"SKU {doc.name} memory must be more than 0")
            if doc.gpus < 1:
                self.fail(f"{at}.gpus", f"SKU {doc.name} gpus must be 1 or more")
            if not doc.pools:
                self.fail(f"{at}.pools", f"SKU {doc.name} is offered on no pool")
            for j, pool_name in enumerate(doc.pools):
                pool = pools.get(pool_name)
                if pool is None:
                    self.fail(
                        f"{at}.pools[{j}]",
                        f"unknown pool {pool_name!r} for SKU {doc.name}; pools: "
                        f"{', '.join(sorted(pools)) or '(none defined)'}",
                    )
                    continue
                if doc.memory is not None and doc.memory > pool.memory_mib_per_gpu:
                    shown = quantity.format_mib(doc.memory)
                    self.fail(
                        f"{at}.memory",
                        f"SKU {doc.name} has {shown} per GPU, more than a card of pool "
                        f"{pool.name} ({pool.model}, "
                        f"{quantity.format_mib(pool.memory_mib_per_gpu)})",
                    )
            if doc.name in out:  # a duplicate, reported by unique()
                continue
            out[doc.name] = Sku(
                name=doc.name,
                compute_pct=doc.compute,
                memory_mib=doc.memory,
                memory_pct=memory_pct,
                gpus_per_slice=doc.gpus,
                price_per_hour=doc.price_per_hour,
                pools=tuple(doc.pools),
                description=doc.description,
            )
        return out

    def quota(
        self,
        at: str,
        doc: shape.QuotaDoc,
        pools: Mapping[str, Pool],
        skus: Mapping[str, Sku],
    ) -> Quota:
        for sku in doc.per_sku:
            if sku not in skus:
                self.fail(
                    f"{at}.per_sku.{sku}",
                    f"unknown SKU {sku!r} in a quota; SKUs: {', '.join(sorted(skus)) or '(none)'}",
                )
        for pool in doc.per_pool:
            if pool not in pools:
                self.fail(
                    f"{at}.per_pool.{pool}",
                    f"unknown pool {pool!r} in a quota; pools: "
                    f"{', '.join(sorted(pools)) or '(none)'}",
                )
        return Quota(
            total=doc.limits(),
            per_sku={k: v.limits() for k, v in doc.per_sku.items()},
            per_pool={k: v.limits() for k, v in doc.per_pool.items()},
        )

    def departments(
        self, pools: Mapping[str, Pool], skus: Mapping[str, Sku]
    ) -> tuple[dict[str, Department], dict[tuple[str, str], Queue]]:
        docs = self.doc.departments
        self.unique(((f"departments[{i}]", d.name) for i, d in enumerate(docs)), "department")
        self.namespaces()
        departments: dict[str, Department] = {}
        queues: dict[tuple[str, str], Queue] = {}
        for i, doc in enumerate(docs):
            at = f"departments[{i}]"
            self.name(f"{at}.name", doc.name, "department")
            quota = self.quota(f"{at}.quota", doc.quota, pools, skus)
            self.unique(
                ((f"{at}.queues[{j}]", q.name) for j, q in enumerate(doc.queues)),
                f"queue (in department {doc.name})",
            )
            for j, qdoc in enumerate(doc.queues):
                queue = self.queue(f"{at}.queues[{j}]", doc.name, quota, qdoc, pools, skus)
                if queue is not None:
                    queues.setdefault((doc.name, queue.name), queue)
            names = [q.name for q in doc.queues]
            if doc.default_queue not in names:
                self.fail(
                    f"{at}.default_queue",
                    f"default queue {doc.default_queue!r} is not a queue of department "
                    f"{doc.name}; its queues: {', '.join(names) or '(none)'}",
                )
            if doc.name in departments:  # a duplicate, reported by unique()
                continue
            departments[doc.name] = Department(
                name=doc.name,
                namespaces=tuple(doc.namespaces),
                default_queue=doc.default_queue,
                quota=quota,
            )
        return departments, queues

    def namespaces(self) -> None:
        owners: list[tuple[str, str, str]] = []  # (path, namespace, department)
        for i, doc in enumerate(self.doc.departments):
            for k, ns in enumerate(doc.namespaces):
                at = f"departments[{i}].namespaces[{k}]"
                if not _NAMESPACE_RE.match(ns):
                    self.fail(
                        at,
                        f"namespace {ns!r} is not a namespace name or glob pattern "
                        "(lowercase letters, digits, '-', and '*' or '?' in patterns)",
                    )
                    continue
                if self.owned_twice(at, ns, doc.name, owners):
                    continue
                owners.append((at, ns, doc.name))

    def owned_twice(
        self, at: str, ns: str, department: str, owners: list[tuple[str, str, str]]
    ) -> bool:
        """Whether ``ns`` (at ``at``, of ``department``) is another entry's too (the
        error is recorded, once)."""
        for other_at, other, dept in owners:
            if other == ns:
                where = "also" if dept == department else f"department {dept} has it"
                self.fail(
                    at,
                    f"namespace {ns!r} is listed twice ({where} at {other_at}): a "
                    "namespace belongs to at most one department",
                )
                return True
            # An exact name beside another department's pattern is a deliberate
            # carve-out (exact names win); two patterns that overlap are not.
            if (
                dept != department
                and _is_pattern(ns)
                and _is_pattern(other)
                and globs_overlap(ns, other)
            ):
                self.fail(
                    at,
                    f"namespace pattern {ns!r} of department {department} overlaps "
                    f"{other!r} of department {dept} ({other_at}): a namespace "
                    "belongs to at most one department",
                )
                return True
        return False

    def queue(
        self,
        at: str,
        department: str,
        dept_quota: Quota,
        doc: shape.QueueDoc,
        pools: Mapping[str, Pool],
        skus: Mapping[str, Sku],
    ) -> Queue | None:
        """The queue; None when it names an unknown pool (nothing else of it can be
        checked)."""
        self.name(f"{at}.name", doc.name, "queue")
        pool = pools.get(doc.pool)
        if pool is None:
            self.fail(
                f"{at}.pool",
                f"unknown pool {doc.pool!r} for queue {department}/{doc.name}; pools: "
                f"{', '.join(sorted(pools)) or '(none defined)'}",
            )
            return None
        nominal = self.quota(f"{at}.quota", doc.quota, pools, skus)
        offered = sorted(s.name for s in skus.values() if pool.name in s.pools)
        for k, sku in enumerate(doc.skus):
            self.offered(f"{at}.skus[{k}]", sku, pool, skus, offered, department, doc.name)
        default_sku = doc.default_sku
        if default_sku is not None:
            self.offered(
                f"{at}.default_sku", default_sku, pool, skus, offered, department, doc.name
            )
            if doc.skus and default_sku not in doc.skus:
                self.fail(
                    f"{at}.default_sku",
                    f"default SKU {default_sku!r} is not among the SKUs of queue "
                    f"{department}/{doc.name}: {', '.join(doc.skus)}",
                )
        else:
            default_sku = _whole_card_sku(pool, skus, doc.skus)
        borrowing = doc.borrowing_limit.limits()
        for resource in RESOURCE_NAMES:
            if borrowing.get(resource).unlimited:
                continue
            key = YAML_KEYS[resource]
            if dept_quota.total.get(resource).unlimited:
                self.fail(
                    f"{at}.borrowing_limit.{key}",
                    f"queue {department}/{doc.name} has a borrowing limit on {key}, but "
                    f"department {department} has no {key} quota to borrow from: set the "
                    f"department's quota.{key} or remove the borrowing limit",
                )
            if nominal.total.get(resource).unlimited:
                self.fail(
                    f"{at}.borrowing_limit.{key}",
                    f"queue {department}/{doc.name} has a borrowing limit on {key} but no "
                    f"nominal {key} quota: a borrowing limit caps how far the queue goes "
                    f"above its nominal quota, so set quota.{key} too",
                )
        return Queue(
            name=doc.name,
            department=department,
            pool=pool.name,
            nominal=nominal,
            borrowing_limit=borrowing,
            default_sku=default_sku,
            skus=tuple(doc.skus),
        )

    def offered(
        self,
        at: str,
        sku: str,
        pool: Pool,
        skus: Mapping[str, Sku],
        offered: list[str],
        department: str,
        queue: str,
    ) -> None:
        if sku not in skus:
            self.fail(
                at,
                f"unknown SKU {sku!r} in queue {department}/{queue}; SKUs on pool "
                f"{pool.name}: {', '.join(offered) or '(none)'}",
            )
        elif sku not in offered:
            self.fail(
                at,
                f"SKU {sku!r} is not offered on pool {pool.name} of queue {department}/{queue}; "
                f"SKUs on that pool: {', '.join(offered) or '(none)'}",
            )

    def role_bindings(
        self,
        departments: Mapping[str, Department],
        queues: Mapping[tuple[str, str], Queue],
        skus: Mapping[str, Sku],
    ) -> tuple[RoleBinding, ...]:
        out: list[RoleBinding] = []
        # queues as declared, so that a queue left out for an error of its own (an
        # unknown pool) is not reported again as unknown here
        declared = {(d.name, q.name) for d in self.doc.departments for q in d.queues}
        for i, doc in enumerate(self.doc.role_bindings):
            at = f"role_bindings[{i}]"
            if doc.role not in ROLES:
                self.fail(f"{at}.role", f"unknown role {doc.role!r}; roles: {', '.join(ROLES)}")
                continue
            department = doc.department
            if doc.role == rbac.PLATFORM_ADMIN:
                if department not in (None, rbac.EVERY_DEPARTMENT):
                    self.fail(
                        f"{at}.department",
                        "platform-admin holds every department: leave department out or write '*'",
                    )
                department = rbac.EVERY_DEPARTMENT
            elif department is None:
                self.fail(
                    f"{at}.department",
                    f"required field 'department' is missing (a department name, or '*' "
                    f"for every department) for role {doc.role}",
                )
                continue
            elif department != rbac.EVERY_DEPARTMENT and department not in departments:
                self.fail(
                    f"{at}.department",
                    f"unknown department {department!r}; departments: "
                    f"{', '.join(sorted(departments)) or '(none)'}",
                )
                continue
            if not doc.subjects:
                self.fail(f"{at}.subjects", "a role binding needs at least one subject")
            subjects: list[str] = []
            for k, subject in enumerate(doc.subjects):
                try:
                    subjects.append(rbac.normalize_subject(subject))
                except ValueError as exc:
                    self.fail(f"{at}.subjects[{k}]", str(exc))
            if (doc.queues or doc.skus) and doc.role != rbac.MEMBER:
                self.fail(
                    at,
                    f"only a member binding may be narrowed to queues or SKUs; {doc.role} "
                    "holds the whole department",
                )
            if (doc.queues or doc.skus) and department == rbac.EVERY_DEPARTMENT:
                self.fail(at, "a binding narrowed to queues or SKUs must name one department")
            for k, queue in enumerate(doc.queues):
                if (department, queue) not in declared:
                    names = sorted(q for d, q in declared if d == department)
                    self.fail(
                        f"{at}.queues[{k}]",
                        f"unknown queue {queue!r} in department {department}; its queues: "
                        f"{', '.join(names)}",
                    )
            for k, sku in enumerate(doc.skus):
                if sku not in skus:
                    self.fail(
                        f"{at}.skus[{k}]",
                        f"unknown SKU {sku!r}; SKUs: {', '.join(sorted(skus)) or '(none)'}",
                    )
            out.append(
                RoleBinding(
                    role=doc.role,
                    department=department,
                    subjects=tuple(subjects),
                    queues=tuple(doc.queues),
                    skus=tuple(doc.skus),
                )
            )
        return tuple(out)

    def backends(self, org: Org) -> None:
        """Let each registered backend check the SKUs offered on its pools."""
        for i, doc in enumerate(self.doc.pools):
            backend = backends.BACKENDS.get(doc.backend)
            if backend is None:
                continue
            pool = org.pools[doc.name]
            try:
                backend.validate(pool, org.skus_on(pool.name))
            except ConfigError as exc:
                self.fail(self.doc_path(exc.path, f"pools[{i}]"), exc.reason)

    def doc_path(self, path: str, default: str) -> str:
        """A backend's ``pools.NAME.x`` or ``skus.NAME.x`` as a path into the document."""
        kind, _, rest = path.partition(".")
        name, _, tail = rest.partition(".")
        names: list[str] = []
        if kind == "pools":
            names = [p.name for p in self.doc.pools]
        elif kind == "skus":
            names = [s.name for s in self.doc.skus]
        for i, item in enumerate(names):
            if item == name:
                return f"{kind}[{i}]" + (f".{tail}" if tail else "")
        return path or default


def _whole_card_sku(pool: Pool, skus: Mapping[str, Sku], allowed: list[str]) -> str | None:
    """The default SKU of a queue that names none: a whole card of its pool, if offered."""
    for sku in sorted(skus.values(), key=lambda s: s.name):
        if pool.name not in sku.pools or (allowed and sku.name not in allowed):
            continue
        if (
            sku.gpus_per_slice == 1
            and sku.compute_pct == 100
            and (sku.memory_mib_on(pool) == pool.memory_mib_per_gpu)
        ):
            return sku.name
    return None


def build_org(document: Mapping[str, Any], *, source: str = "") -> Org:
    """Validate ``document`` and build the organisation; a ConfigError with every error
    otherwise: the shape's (:mod:`governance.config.shape`) when the shape is wrong, else
    every cross-reference's, each with its path and, for a document read from a file,
    its line."""
    try:
        doc = shape.validate(document, source=source)
    except ConfigError as exc:
        raise with_lines(exc, document) from None
    builder = _Builder(doc, source)
    org = builder.build()
    builder.backends(org)
    if builder.errors:
        raise with_lines(ConfigError(source=source, errors=builder.errors), document)
    return org
