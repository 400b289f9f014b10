"""The console's PromQL, in one place, and the recording rules that precompute it.

Each heavy aggregation has a name (``level:metric:operation``, Prometheus's naming
convention) and a raw expression. ``dashboard/recording-rules.yaml`` records every
expression of :data:`RULES` under its name; :class:`dashboard.prometheus.PrometheusSource`
queries the recorded names when the rules are installed (the default) and the raw
expressions otherwise (``--no-recording-rules``, e.g. before the rules have run).
``tests/unit/test_dashboard_queries.py`` checks that the YAML file and this module
agree, and ``promtool test rules`` checks the rules against known series.

Department scoping is a label matcher added to every selector, never a filter after
the fact: a department admin's query cannot return another department's series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dashboard.model import IDLE_FRACTION
from governance import contract

SLICE_KEY = "namespace, pod, container, UUID"
"""The labels that identify one slice on one GPU (for ``and on(...)``)."""
BY_QUEUE = "department, queue, sku"
BY_GPU = "department, UUID, Hostname"

RULE_GROUP = "gpupool-dashboard"


def regex_escape(value: str) -> str:
    """Escape ``value`` for a PromQL regex matcher, as an RE2 literal in a string."""
    special = set(r"\.+*?()|[]{}^$")
    out = "".join("\\" + ch if ch in special else ch for ch in value)
    return out.replace("\\", "\\\\").replace('"', '\\"')


def string_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def department_matcher(departments: Iterable[str] | None) -> str:
    """``department=~"a|b"`` for a scoped viewer, "" for the whole fleet."""
    if departments is None:
        return ""
    alternatives = "|".join(regex_escape(d) for d in sorted(departments))
    return f'department=~"{alternatives}"'


def selector(metric: str, *matchers: str) -> str:
    inside = ", ".join(m for m in matchers if m)
    return f"{metric}{{{inside}}}" if inside else metric


def idle_filter(matcher: str) -> str:
    """The per-slice compute utilisation of idle slices only (see IDLE_FRACTION)."""
    util = selector(contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO, matcher)
    limit = selector(contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO, matcher)
    return f"({util} < {IDLE_FRACTION} * {limit})"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A recorded aggregation: ``record`` is the name, ``expr(matcher)`` the PromQL."""

    key: str
    """The short name the source reads the values under."""
    record: str
    template: str
    """PromQL with ``{m}`` where the department matcher goes (inside braces or not)."""

    def expr(self, matcher: str = "") -> str:
        """The raw PromQL with ``matcher`` (e.g. ``department=~"a"``) in each selector."""
        return self.template.replace("{m}", f"{{{matcher}}}" if matcher else "")


def _idle() -> str:
    util = contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO + "{m}"
    limit = contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO + "{m}"
    return f"({util} < {IDLE_FRACTION} * {limit})"


def _usage_rules(by: str, level: str) -> list[Rule]:
    mem_limit = contract.METRIC_SLICE_MEMORY_LIMIT_BYTES
    mem_used = contract.METRIC_SLICE_MEMORY_USED_BYTES
    comp_limit = contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO
    comp_used = contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO
    idle = _idle()
    return [
        Rule(
            key="slices",
            record=f"{level}:{mem_limit}:count",
            template=f"count by ({by}) ({mem_limit}{{m}})",
        ),
        Rule(
            key="memory_limit",
            record=f"{level}:{mem_limit}:sum",
            template=f"sum by ({by}) ({mem_limit}{{m}})",
        ),
        Rule(
            key="memory_used",
            record=f"{level}:{mem_used}:sum",
            template=f"sum by ({by}) ({mem_used}{{m}})",
        ),
        Rule(
            key="compute_limit",
            record=f"{level}:{comp_limit}:sum",
            template=f"sum by ({by}) ({comp_limit}{{m}})",
        ),
        Rule(
            key="compute_used",
            record=f"{level}:{comp_used}:sum",
            template=f"sum by ({by}) ({comp_used}{{m}})",
        ),
        Rule(
            key="idle_slices",
            record=f"{level}:gpupool_slice_idle:count",
            template=f"count by ({by}) {idle}",
        ),
        Rule(
            key="idle_memory",
            record=f"{level}:gpupool_slice_idle_memory_limit_bytes:sum",
            template=f"sum by ({by}) ({mem_limit}{{m}} and on ({SLICE_KEY}) {idle})",
        ),
        Rule(
            key="idle_compute",
            record=f"{level}:gpupool_slice_idle_compute_limit_ratio:sum",
            template=f"sum by ({by}) ({comp_limit}{{m}} and on ({SLICE_KEY}) {idle})",
        ),
    ]


QUEUE_RULES: tuple[Rule, ...] = tuple(_usage_rules(BY_QUEUE, "department_queue_sku"))
"""Per (department, queue, SKU): the overview and department pages."""

GPU_RULES: tuple[Rule, ...] = tuple(
    r
    for r in _usage_rules(BY_GPU, "department_uuid_hostname")
    if r.key in ("slices", "memory_limit", "memory_used", "compute_limit", "compute_used")
)
"""Per (department, GPU): the GPU page of a viewer scoped to some departments."""

DEPARTMENT_RULES: tuple[Rule, ...] = tuple(
    Rule(
        key=key,
        record=f"department:{metric}:sum",
        template=f"sum by (department) ({metric}{{m}})",
    )
    for key, metric in (
        ("memory_limit", contract.METRIC_SLICE_MEMORY_LIMIT_BYTES),
        ("memory_used", contract.METRIC_SLICE_MEMORY_USED_BYTES),
        ("compute_limit", contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO),
        ("compute_used", contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO),
    )
)
"""Per department: the "over time" plots sum ~100 series instead of every queue/SKU."""

IDLE_SLICE_RULE = Rule(
    key="idle_memory",
    record=f"slice:{contract.METRIC_SLICE_MEMORY_LIMIT_BYTES}:idle",
    template=(f"{contract.METRIC_SLICE_MEMORY_LIMIT_BYTES}{{m}} and on ({SLICE_KEY}) {_idle()}"),
)
"""Per idle slice (all its labels), the memory it holds: the waste tables' topk."""

RULES: tuple[Rule, ...] = QUEUE_RULES + GPU_RULES + DEPARTMENT_RULES + (IDLE_SLICE_RULE,)


def rule_query(rule: Rule, matcher: str, *, recorded: bool) -> str:
    """The rule's PromQL for a viewer: the recorded series filtered by ``matcher``, or
    the raw expression with ``matcher`` in every selector."""
    if recorded:
        return selector(rule.record, matcher)
    return rule.expr(matcher)


def uuid_matcher(uuids: Iterable[str]) -> str:
    """``UUID=~"a|b"``: only these GPUs (Prometheus matches a list of literals as a set)."""
    return f'UUID=~"{"|".join(regex_escape(u) for u in sorted(uuids))}"'


def gpu_fleet_parts(matcher: str = "") -> list[tuple[str, str]]:
    """Whole-card figures per GPU (platform admins only), with few labels each: what
    the GPU page draws and lists, nothing more (5 samples per GPU; the card's total
    memory, DCGM_FI_DEV_FB_FREE, is not shown and not asked for). ``matcher`` (e.g.
    :func:`uuid_matcher`) narrows every selector."""
    keep = "UUID, Hostname"
    return [
        (
            "util",
            f"max by ({keep}, gpu, modelName) ({selector(contract.DCGM_FI_DEV_GPU_UTIL, matcher)})",
        ),
        ("fb_used", f"sum by ({keep}) ({selector(contract.DCGM_FI_DEV_FB_USED, matcher)})"),
        (
            "memory_limit",
            f"sum by ({keep}) ({selector(contract.METRIC_GPU_ALLOCATED_MEMORY_BYTES, matcher)})",
        ),
        (
            "compute_limit",
            f"sum by ({keep}) ({selector(contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO, matcher)})",
        ),
        (
            "slices",
            f"sum by ({keep}) ({selector(contract.METRIC_GPU_ALLOCATED_SLICES, matcher)})",
        ),
    ]


def gpu_identity_query(matcher: str, held: str) -> str:
    """Index and model (DCGM's ``gpu`` and ``modelName`` labels) of the GPUs in
    ``held`` (a vector by UUID and Hostname, e.g. a department's slices per GPU):
    only labels, never the whole card's figures."""
    util = selector(contract.DCGM_FI_DEV_GPU_UTIL, matcher)
    return f"group by (UUID, Hostname, gpu, modelName) ({util}) and on (UUID, Hostname) {held}"


def history_parts(matcher: str, *, recorded: bool) -> list[tuple[str, str]]:
    """Allocated and used summed over the viewer's departments, for a range query."""
    raw = {
        "memory_limit": contract.METRIC_SLICE_MEMORY_LIMIT_BYTES,
        "memory_used": contract.METRIC_SLICE_MEMORY_USED_BYTES,
        "compute_limit": contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO,
        "compute_used": contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO,
    }
    return [
        (
            r.key,
            f"sum({rule_query(r, matcher, recorded=True)})"
            if recorded
            else f"sum({selector(raw[r.key], matcher)})",
        )
        for r in DEPARTMENT_RULES
    ]


def waste_query(matcher: str, limit: int, *, recorded: bool = False) -> str:
    """The ``limit`` idle slices holding the most memory."""
    if recorded:
        return f"topk({int(limit)}, {selector(IDLE_SLICE_RULE.record, matcher)})"
    mem_limit = selector(contract.METRIC_SLICE_MEMORY_LIMIT_BYTES, matcher)
    return f"topk({int(limit)}, {mem_limit} and on ({SLICE_KEY}) {idle_filter(matcher)})"


SLICE_METRICS = (
    contract.METRIC_SLICE_MEMORY_USED_BYTES,
    contract.METRIC_SLICE_MEMORY_LIMIT_BYTES,
    contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO,
    contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO,
    contract.METRIC_SLICE_PROCESSES,
)


def slices_query(*matchers: str) -> str:
    """Every per-slice series matching ``matchers``, in one selector."""
    names = "|".join(SLICE_METRICS)
    return selector("", f'__name__=~"{names}"', *matchers)


def recording_rules_document() -> dict[str, object]:
    """The content of ``dashboard/recording-rules.yaml``."""
    return {
        "groups": [
            {
                "name": RULE_GROUP,
                "interval": "30s",
                "rules": [{"record": r.record, "expr": r.expr("")} for r in RULES],
            }
        ]
    }
