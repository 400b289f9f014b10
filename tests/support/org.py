"""Builders for organisation objects, usable by every test (kueue's ``Make…`` wrappers).

Two families:

* ``make_sku``, ``make_pool``, ``make_queue``, ``make_department``, ``make_binding``,
  ``make_org``: the frozen dataclasses of :mod:`governance.model`, with defaults that
  make a small valid organisation; override any field by keyword.
* ``org_document(...)``: the same organisation as a YAML-shaped dict for
  :func:`governance.config.build_org` / :func:`governance.storage.revisions.apply`, plus
  ``with_change(doc, "departments[0].quota.memory", "80Gi")`` to edit one path.

The default organisation: pool ``a100`` (8 x A100 80 GiB, backend hami), SKUs
``a100-1g`` (10 GiB, 15 %) ``a100-half`` (40 GiB, 50 %) and ``a100-whole``; department
``ml`` (namespaces ``ml``, ``ml-*``) with queues ``train`` (default) and ``infer``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from governance.model import Department, Org, Pool, Queue, Quota, RoleBinding, Sku
from governance.resources import NO_LIMITS, Limits

GIB = 1024


def make_pool(name: str = "a100", **kw: Any) -> Pool:
    fields: dict[str, Any] = {
        "vendor": "nvidia",
        "model": "A100-80GB",
        "backend": "hami",
        "gpus": 8,
        "memory_mib_per_gpu": 80 * GIB,
    }
    fields.update(kw)
    return Pool(name=name, **fields)


def make_sku(name: str = "a100-1g", **kw: Any) -> Sku:
    fields: dict[str, Any] = {"compute_pct": 15, "memory_mib": 10 * GIB, "pools": ("a100",)}
    fields.update(kw)
    return Sku(name=name, **fields)


def make_quota(
    total: Limits = NO_LIMITS,
    *,
    per_sku: Mapping[str, Limits] | None = None,
    per_pool: Mapping[str, Limits] | None = None,
) -> Quota:
    return Quota(total=total, per_sku=dict(per_sku or {}), per_pool=dict(per_pool or {}))


def make_queue(name: str = "train", department: str = "ml", **kw: Any) -> Queue:
    fields: dict[str, Any] = {"pool": "a100"}
    fields.update(kw)
    return Queue(name=name, department=department, **fields)


def make_department(name: str = "ml", **kw: Any) -> Department:
    fields: dict[str, Any] = {"namespaces": (name, f"{name}-*"), "default_queue": "train"}
    fields.update(kw)
    return Department(name=name, **fields)


def make_binding(
    role: str = "member", department: str = "ml", *subjects: str, **kw: Any
) -> RoleBinding:
    return RoleBinding(
        role=role, department=department, subjects=tuple(subjects) or ("user:ana",), **kw
    )


def make_org(
    *,
    skus: Iterable[Sku] | None = None,
    pools: Iterable[Pool] | None = None,
    departments: Iterable[Department] | None = None,
    queues: Iterable[Queue] | None = None,
    role_bindings: Iterable[RoleBinding] = (),
) -> Org:
    """An Org from the given objects; each omitted family gets the default one."""
    if pools is None:
        pools = [make_pool()]
    if skus is None:
        skus = [
            make_sku("a100-1g"),
            make_sku("a100-half", compute_pct=50, memory_mib=40 * GIB),
            make_sku("a100-whole", compute_pct=100, memory_mib=None, memory_pct=100),
        ]
    if departments is None:
        departments = [make_department()]
    if queues is None:
        queues = [make_queue("train"), make_queue("infer")]
    return Org(
        skus={s.name: s for s in skus},
        pools={p.name: p for p in pools},
        departments={d.name: d for d in departments},
        queues={(q.department, q.name): q for q in queues},
        role_bindings=tuple(role_bindings),
    )


# -- YAML-shaped documents -----------------------------------------------------------


def org_document(**overrides: Any) -> dict[str, Any]:
    """A small valid configuration document; top-level keys can be replaced."""
    doc: dict[str, Any] = {
        "pools": [
            {
                "name": "a100",
                "vendor": "nvidia",
                "model": "A100-80GB",
                "backend": "hami",
                "gpus": 8,
                "memory_per_gpu": "80Gi",
            }
        ],
        "skus": [
            {"name": "a100-1g", "memory": "10Gi", "compute": "15%", "pools": ["a100"]},
            {"name": "a100-half", "memory": "40Gi", "compute": 50, "pools": ["a100"]},
            {"name": "a100-whole", "compute": "100%", "price_per_hour": 2.5, "pools": ["a100"]},
        ],
        "departments": [
            {
                "name": "ml",
                "namespaces": ["ml", "ml-*"],
                "default_queue": "train",
                "quota": {"slices": 16, "memory": "320Gi", "compute": "400%"},
                "queues": [
                    {
                        "name": "train",
                        "pool": "a100",
                        "quota": {"memory": "160Gi"},
                        "borrowing_limit": {"memory": "80Gi"},
                    },
                    {"name": "infer", "pool": "a100", "default_sku": "a100-1g"},
                ],
            }
        ],
        "role_bindings": [
            {"role": "platform-admin", "subjects": ["user:root"]},
            {"role": "member", "department": "ml", "subjects": ["group:ml-team"]},
        ],
    }
    doc.update(copy.deepcopy(overrides))
    return doc


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def with_change(document: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with ``path`` (``departments[0].quota.memory``) set
    to ``value``; ``...`` (Ellipsis) as value deletes the key."""
    doc = copy.deepcopy(dict(document))
    steps: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _STEP.finditer(path)
    ]
    node: Any = doc
    for step in steps[:-1]:
        node = node[step]
    last = steps[-1]
    if value is Ellipsis:
        del node[last]
    elif isinstance(node, list) and isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return doc
