"""What changed between two organisations, as ``gpupool apply`` shows it.

One line per change, ``+`` for an entity added, ``-`` removed, ``~`` a field changed,
every quantity in the units the YAML is written in::

    + department research
    ~ queue ml/train nominal memory 80Gi -> 160Gi
    - sku old
"""

from __future__ import annotations

import json

from governance import quantity, rbac
from governance.model import Org, Quota
from governance.resources import RESOURCE_NAMES, YAML_KEYS, Limits, format_amount


def _limits_fields(prefix: str, limits: Limits) -> dict[str, str]:
    return {
        f"{prefix}{YAML_KEYS[r]}": format_amount(r, limits.get(r).value) for r in RESOURCE_NAMES
    }


def _quota_fields(prefix: str, quota: Quota) -> dict[str, str]:
    out = _limits_fields(f"{prefix} ", quota.total)
    for sku, limits in sorted(quota.per_sku.items()):
        out.update(_limits_fields(f"{prefix} per_sku {sku} ", limits))
    for pool, limits in sorted(quota.per_pool.items()):
        out.update(_limits_fields(f"{prefix} per_pool {pool} ", limits))
    return out


def _entities(org: Org | None) -> dict[str, dict[str, str]]:
    """Each entity of ``org`` as ``"kind name" -> {field: shown value}``, in order."""
    if org is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    for p in org.pools.values():
        out[f"pool {p.name}"] = {
            "vendor": p.vendor,
            "model": p.model,
            "backend": p.backend,
            "gpus": str(p.gpus),
            "memory_per_gpu": quantity.format_mib(p.memory_mib_per_gpu),
            "memory_oversubscription": str(p.memory_oversubscription),
            "compute_oversubscription": str(p.compute_oversubscription),
            "node_selector": json.dumps(dict(p.node_selector), sort_keys=True),
            "backend_options": json.dumps(dict(p.backend_options), sort_keys=True),
        }
    for s in org.skus.values():
        out[f"sku {s.name}"] = {
            "memory": quantity.format_mib(s.memory_mib) if s.memory_mib is not None else "-",
            "memory_pct": str(s.memory_pct) if s.memory_pct is not None else "-",
            "compute": f"{s.compute_pct}%",
            "gpus": str(s.gpus_per_slice),
            "price_per_hour": str(s.price_per_hour),
            "pools": ", ".join(s.pools),
            "description": s.description,
        }
    for d in org.departments.values():
        out[f"department {d.name}"] = {
            "namespaces": ", ".join(d.namespaces),
            "default_queue": d.default_queue,
            **_quota_fields("quota", d.quota),
        }
    for (dept, name), q in org.queues.items():
        out[f"queue {dept}/{name}"] = {
            "pool": q.pool,
            "default_sku": str(q.default_sku),
            "skus": ", ".join(q.skus) or "(all on its pool)",
            **_quota_fields("nominal", q.nominal),
            **_limits_fields("borrowing_limit ", q.borrowing_limit),
        }
    for b in org.role_bindings:
        narrowed = ""
        if b.queues or b.skus:
            narrowed = (
                f" (queues {', '.join(b.queues) or 'all'}; SKUs {', '.join(b.skus) or 'all'})"
            )
        where = "every department" if b.department == rbac.EVERY_DEPARTMENT else b.department
        for subject in b.subjects:
            out[f"binding {b.role} in {where} for {subject}{narrowed}"] = {}
    return out


def diff(old: Org | None, new: Org) -> list[str]:
    """Human lines: ``+ department ml``, ``~ queue ml/train nominal memory 80Gi -> 160Gi``,
    ``- sku old``."""
    before = _entities(old)
    after = _entities(new)
    lines: list[str] = []
    for key, fields in after.items():
        if key not in before:
            lines.append(f"+ {key}")
            continue
        for name, value in fields.items():
            was = before[key].get(name)
            if was != value:
                lines.append(f"~ {key} {name} {was} -> {value}")
    lines.extend(f"- {key}" for key in before if key not in after)
    return lines
