"""Recording a configuration in the store: ``gpupool apply`` and ``gpupool set quota``.

:func:`apply` validates a document (:mod:`governance.config`) and records it as the
newest configuration revision, in one write transaction; applying the same document
again records nothing. Nothing else is written: the revision's role bindings are its
RBAC policy, compiled by every reader from the revision itself
(:mod:`governance.snapshot`).
A quota below what the ledger has in use, or the removal of something that still has
slices in use, is refused (:func:`check_usage`). :func:`change_quota` is a department
admin's or a platform admin's change of one quota in the configuration in force,
applied the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from governance import config, quantity, quotas, rbac, resources, scopes
from governance.contract import SKU_CUSTOM
from governance.errors import ConfigError, FieldError, Forbidden
from governance.model import Org
from governance.quotas import Usage
from governance.resources import RESOURCE_NAMES, ZERO, Limits, Resources
from governance.scopes import Kind, Scope
from governance.storage import ledger, schema, source
from governance.storage.store import ConfigRevision, Store, checksum_of


@dataclass(frozen=True, kw_only=True)
class ApplyResult:
    revision: int | None
    """The revision now in force (None on a dry run that would record a new one)."""
    diff: list[str]
    org: Org
    changed: bool


def _index(document: Mapping[str, Any], key: str, name: str) -> int | None:
    items = document.get(key) or []
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("name") == name:
            return i
    return None


def _shown(amount: Resources) -> str:
    return ", ".join(
        f"{resources.format_amount(r, amount.get(r))} {resources.YAML_KEYS[r]}"
        for r in RESOURCE_NAMES
        if amount.get(r)
    )


def check_usage(org: Org, document: Mapping[str, Any], usage: Usage, *, source: str) -> None:
    """Refuse a configuration whose limits are below what the ledger has in use, or that
    removes what still has slices in use: a ConfigError with every such limit."""
    errors: list[FieldError] = []

    def below(limits: Limits, used: Resources, what: str, path: str, keyed: bool = True) -> None:
        for r in RESOURCE_NAMES:
            limit = limits.get(r)
            if limit.value is not None and used.get(r) > limit.value:
                in_use = resources.format_amount(r, used.get(r))
                reason = (
                    f"quota below what is in use: {what} for {resources.YAML_KEYS[r]} would be "
                    f"{resources.format_amount(r, limit.value)} but {in_use} is in use. Set it to "
                    f"at least {in_use}, or apply it once enough GPU pods there have finished."
                )
                where = f"{path}.{resources.YAML_KEYS[r]}" if keyed else path
                errors.append(FieldError(path=where, reason=reason))

    def used(scope: Scope) -> Resources:
        return usage.get(scope, ZERO)

    for d, dept in org.departments.items():
        i = _index(document, "departments", d)
        at = f"departments[{i}]"
        below(dept.quota.total, used(scopes.department(d)), f"department {d} quota", f"{at}.quota")
        for s, limits in dept.quota.per_sku.items():
            below(
                limits,
                used(scopes.department_sku(d, s)),
                f"department {d} quota for SKU {s}",
                f"{at}.quota.per_sku.{s}",
            )
        for p, limits in dept.quota.per_pool.items():
            below(
                limits,
                used(scopes.department_pool(d, p)),
                f"department {d} cap on pool {p}",
                f"{at}.quota.per_pool.{p}",
            )
        qdocs = (document.get("departments") or [])[i].get("queues") or [] if i is not None else []
        for queue in org.queues_of(d):
            q = queue.name
            j = next((k for k, x in enumerate(qdocs) if x.get("name") == q), None)
            qat = f"{at}.queues[{j}]"
            below(
                quotas.borrowing_ceiling(queue),
                used(scopes.queue(d, q)),
                f"queue {d}/{q} nominal quota + borrowing limit",
                f"{qat}.quota",
            )
            for s, limits in queue.nominal.per_sku.items():
                below(
                    limits,
                    used(scopes.queue_sku(d, q, s)),
                    f"queue {d}/{q} quota for SKU {s}",
                    f"{qat}.quota.per_sku.{s}",
                )
            for p, limits in queue.nominal.per_pool.items():
                below(
                    limits,
                    used(scopes.queue_pool(d, q, p)),
                    f"queue {d}/{q} quota on pool {p}",
                    f"{qat}.quota.per_pool.{p}",
                )
    for p, pool in org.pools.items():
        i = _index(document, "pools", p)
        below(
            pool.capacity_limits,
            used(scopes.pool(p)),
            f"pool {p} sellable capacity (gpus x memory_per_gpu x over-subscription)",
            f"pools[{i}]",
            keyed=False,
        )
    # Whatever is removed must be idle.
    for scope, amount in sorted(usage.items()):
        if amount.is_zero():
            continue
        gone = _removed(org, scope)
        if gone:
            errors.append(
                FieldError(
                    path="",
                    reason=f"the new configuration removes {gone}, which has {_shown(amount)} "
                    f"in use (usage row {scope.key}). Keep it until its GPU pods have finished.",
                )
            )
    if errors:
        raise ConfigError(source=source, errors=errors)


def _removed(org: Org, scope: Scope) -> str | None:
    """What of ``scope`` the organisation no longer has, in words; None if nothing."""
    if scope.kind is Kind.POOL:
        return None if scope.pool in org.pools else f"pool {scope.pool}"
    if scope.kind in (Kind.QUEUE, Kind.QUEUE_SKU, Kind.QUEUE_POOL):
        if (scope.department, scope.queue) not in org.queues:
            return f"queue {scope.department}/{scope.queue}"
    elif scope.department not in org.departments:
        return f"department {scope.department}"
    known_sku = scope.sku in org.skus or scope.sku == SKU_CUSTOM
    if scope.kind in (Kind.DEPARTMENT_SKU, Kind.QUEUE_SKU) and not known_sku:
        return f"SKU {scope.sku}"
    if scope.kind in (Kind.DEPARTMENT_POOL, Kind.QUEUE_POOL) and scope.pool not in org.pools:
        return f"pool {scope.pool}"
    return None


def current_org(store: Store) -> Org | None:
    """The organisation of the newest applied revision, or None before the first apply."""
    found = source.load(store)
    return None if found is None else found.org


DECLARING_KEYS: Final = ("pools", "skus", "departments", "role_bindings")
"""What a document declares; one that declares none of them would remove everything."""


def declares_nothing(document: Mapping[str, Any]) -> bool:
    """True for an empty document (a 0-byte file, ``{}``, only apiVersion/kind)."""
    return not any(document.get(key) for key in DECLARING_KEYS)


def apply(
    store: Store,
    document: Mapping[str, Any],
    *,
    source: str,
    dry_run: bool = False,
    applied_by: str = "",
    allow_empty: bool = False,
) -> ApplyResult:
    """Validate ``document`` and record it as the newest configuration revision.

    Idempotent: a document whose checksum equals the newest revision's records nothing
    (``changed`` is False). In one write transaction: refuse limits below what is in
    use, record the revision (with ``applied_by``).
    ``dry_run`` checks and reports the diff but writes nothing.

    A document that declares nothing is refused unless ``allow_empty``: as kubectl
    refuses "no objects passed to apply", an empty file must never silently remove
    every pool, SKU, department and binding.
    """
    if declares_nothing(document) and not allow_empty:
        raise ConfigError(
            "the document declares nothing (no pools, skus, departments or "
            "role_bindings): applying it would remove the whole organisation. Check that "
            "this is the file you meant; to remove everything on purpose, apply it with "
            "--prune-all",
            source=source,
        )
    org = config.build_org(document, source=source)
    latest = store.latest_config()
    return _record(
        store,
        document,
        org,
        latest=latest,
        in_force=lambda: _in_force(latest),
        source=source,
        dry_run=dry_run,
        applied_by=applied_by,
    )


def _in_force(latest: ConfigRevision | None) -> tuple[Org | None, list[str]]:
    """The organisation of ``latest``, and what the diff must say when it no longer
    validates (a stricter backend, say): that must not stop the fix from being
    applied."""
    if latest is None:
        return None, []
    try:
        return config.build_org(latest.document, source=f"store revision {latest.revision}"), []
    except ConfigError as exc:
        return None, [
            f"! revision {latest.revision} in force no longer validates ({exc}); "
            "the diff shows the whole new configuration"
        ]


def _record(
    store: Store,
    document: Mapping[str, Any],
    org: Org,
    *,
    latest: ConfigRevision | None,
    in_force: Callable[[], tuple[Org | None, list[str]]],
    source: str,
    dry_run: bool,
    applied_by: str,
) -> ApplyResult:
    """Record ``document`` (built as ``org``) over ``latest``, the revision it was
    made against: nothing when it is the same document; refused when another revision
    was applied since. ``in_force`` gives ``latest``'s organisation for the diff (asked
    only when the document changed)."""
    plain: dict[str, Any] = json.loads(json.dumps(dict(document)))
    if latest is not None and latest.checksum == checksum_of(plain):
        return ApplyResult(revision=latest.revision, diff=[], org=org, changed=False)
    old, lines = in_force()
    lines += config.diff(old, org)
    if not lines:
        lines = ["~ document changed without changing the organisation"]
    if dry_run:
        try:
            check_usage(org, plain, ledger.usage(store), source=source)
        except ConfigError as exc:
            raise config.with_lines(exc, document) from None
        return ApplyResult(revision=None, diff=lines, org=org, changed=True)
    with store.write() as conn:
        t = schema.config_revisions
        now = conn.execute(sa.select(sa.func.max(t.c.revision))).scalar()
        if int(now or 0) != (latest.revision if latest is not None else 0):
            raise ConfigError(
                f"another configuration (revision {now}) was applied while this one was "
                "being checked: run apply again to see the new diff",
                source=source,
            )
        try:
            check_usage(org, plain, ledger.read_usage(conn), source=source)
        except ConfigError as exc:
            raise config.with_lines(exc, document) from None
        revision = store.save_config(conn, plain, source=source, applied_by=applied_by)
    return ApplyResult(revision=revision, diff=lines, org=org, changed=True)


QUOTA_PARSERS: Final[dict[str, Callable[[object], int | None]]] = {
    r.yaml_key: r.parse for r in resources.RESOURCES
}
"""The quota keys ``change_quota`` sets, as the YAML spells them, and their parsers."""


def change_quota(
    store: Store,
    *,
    identity: rbac.Identity,
    department: str,
    queue: str | None,
    values: Mapping[str, str],
    dry_run: bool = False,
) -> ApplyResult:
    """Set a queue's nominal quota, or a department's quota, in the configuration in
    force, and apply the result as a new revision naming ``identity``.

    Who may: a department's dept-admins split its quota among its queues (a queue's
    nominal quota, never above the department's own limit); the department's quota is
    a platform-admin's (the policy's ``edit`` on ``quota``: in the department, or in
    every department), asked of the snapshot of the revision being changed. Raises
    Forbidden (who, what, whom to ask) otherwise. The new document is checked like any
    other (``apply``: limits below what is in use are refused), and a revision applied
    meanwhile by someone else makes this fail, not overwrite.
    """
    latest = store.latest_config()
    if latest is None:
        raise source.no_organisation(store)
    snapshot = source.of_revision(latest)
    org, policy = snapshot.org, snapshot.policy
    if department not in org.departments:
        raise ConfigError(
            f"unknown department {department!r}; known: {', '.join(sorted(org.departments))}"
        )
    if queue is not None and (department, queue) not in org.queues:
        known = sorted(q.name for q in org.queues_of(department))
        raise ConfigError(
            f"unknown queue {queue!r} in department {department}; known: {', '.join(known)}"
        )
    parsed: dict[str, int | None] = {}
    written: dict[str, object] = {}
    for key, text in values.items():
        if key not in QUOTA_PARSERS:
            raise ConfigError(f"cannot set {key!r}; settable: {', '.join(QUOTA_PARSERS)}")
        raw: object = text.strip()
        if QUOTA_PARSERS[key] is quantity.parse_count and str(raw).isdigit():
            raw = int(str(raw))
        try:
            parsed[key] = QUOTA_PARSERS[key](raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{exc}", source="--" + key) from None
        written[key] = quantity.UNLIMITED_WORD if parsed[key] is None else raw
    who = identity.subjects()[0]
    platform = policy.can_edit_quota(identity, rbac.EVERY_DEPARTMENT).allowed
    if not platform:
        if queue is None:
            raise Forbidden(
                f"{who} may not change the quota of department {department}: a department's "
                "own quota is set by a platform-admin (its dept-admins split it among its "
                "queues with -q QUEUE). Ask a platform-admin.",
                subject=who,
                department=department,
            )
        decision = policy.can_edit_quota(identity, department)
        if not decision.allowed:
            raise Forbidden(decision.explanation, subject=who, department=department)
        limits = org.departments[department].quota.total
        for key, value in parsed.items():
            resource = next(r for r, k in resources.YAML_KEYS.items() if k == key)
            ceiling = limits.get(resource).value
            if ceiling is not None and (value is None or value > ceiling):
                wanted = resources.format_amount(resource, value)
                own = resources.format_amount(resource, ceiling)
                raise Forbidden(
                    f"{who} may not set queue {department}/{queue}'s {key} quota to "
                    f"{wanted}: above department {department}'s own "
                    f"{key} quota of {own}, which a dept-admin "
                    "splits among its queues but cannot raise. Ask a platform-admin to raise "
                    "the department's quota first.",
                    subject=who,
                    department=department,
                )
    document: dict[str, Any] = json.loads(json.dumps(latest.document))
    target = next(d for d in document["departments"] if d.get("name") == department)
    if queue is not None:
        target = next(q for q in target.get("queues") or [] if q.get("name") == queue)
    quota = target.get("quota")
    if not isinstance(quota, dict):
        quota = target["quota"] = {}
    quota.update(written)
    what = f"queue {department}/{queue}" if queue else f"department {department}"
    changed = f"gpupool set quota ({what})"
    # Recorded over the revision just read and checked: one applied meanwhile by
    # someone else makes this fail (see _record), never silently overwritten.
    return _record(
        store,
        document,
        config.build_org(document, source=changed),
        latest=latest,
        in_force=lambda: (org, []),
        source=changed,
        dry_run=dry_run,
        applied_by=who,
    )
