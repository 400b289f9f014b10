"""Experiment 2 with a gpupool configuration: departments, queues, SKUs, pools, quotas.

The replay (:mod:`simulator.replay`) asks an injected admission whether each pod may
run. Here that admission is gpupool's own governance decision over a
:class:`~governance.snapshot.Snapshot` of a configuration (``examples/org.yaml``, say),
never a copy of it: :func:`decide` is the one place that calls governance, and the
usage it reads is the replay's, kept per scope as the ledger keeps it.

**Who asks for what.** A pod that names its ``department`` and ``queue`` (gpupool's
format) asks through them; one that names neither (the Alibaba trace) is given a queue
by :func:`assign`, seeded: whole-GPU pods go to training queues (whose default SKU is a
whole card), GPU-sharing pods to the others, each queue drawn with weight its pool's
GPUs over the number of such queues on that pool, among the queues that offer a SKU
holding the pod (the same split of trace pods over examples/org.yaml as the demo makes
by hand in ``demo/workload.py``, derived from any configuration). The SKU is the pod's
``sku`` when it names one, else the smallest slice SKU of the queue that holds its
share of a GPU (both its memory and its compute share at least the pod's share), or
for whole GPUs the whole-card SKU with the most GPUs per slice that divides the pod's
count (8 GPUs: one ``h100-8x``, else 8 ``h100-whole``).

**Who.** RBAC is not what is simulated: a pod that names no ``subject`` asks as
someone allowed to use its queue (RBAC is not checked); one that names a subject
(``user:NAME``, ``group:NAME``, ``system:serviceaccount:NS:NAME``) is checked against
the configuration's compiled policy, and denied ``Forbidden`` as the webhook would.

**The fleet.** The pools of the configuration (:func:`fleet`): each pool's GPUs as
nodes of 8 GPUs of its model, with 16 cores and 128 GiB of memory per GPU. Then a pod
runs on its queue's pool (its only allowed "model" is the pool's name) and takes on its
card what its SKU takes: the larger of its memory share and its compute share net of
the pool's compute over-subscription (a MIG 1g.10gb slice 140/1000 of an H100, an
A100 quarter 250). With the trace's node list instead, pods keep the trace's GPU share
and model constraints: the configuration's quotas decide, the trace's fleet places.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from governance import config, decision, placement, quotas, rbac, scopes
from governance.contract import Reason
from governance.errors import ConfigError
from governance.model import Department, Org, Pool, Queue, Sku
from governance.resources import RESOURCE_NAMES, Limits, Resources
from governance.scopes import Scope
from governance.snapshot import Snapshot
from simulator import fleet as fleets
from simulator.replay import Admission, Decision, DepartmentCounts, ReplayResult, ScopeUse, Usage
from simulator.trace import MILLI_PER_GPU, Node, Pod

GPUS_PER_NODE = 8
CPU_MILLI_PER_GPU = 16_000
MEMORY_MIB_PER_GPU = 128 * 1024
"""The node shape of a fleet built from a configuration's pools (a pool says how many
GPUs it has, not how they are split into nodes nor what comes with them)."""


def load(path: Path) -> Snapshot:
    """The snapshot of the configuration in ``path``, validated (a ConfigError with
    every error of the file, each with its line, otherwise)."""
    document = config.load_file(path)
    return Snapshot.build(config.build_org(document, source=str(path)), source=str(path))


def fleet(org: Org) -> list[Node]:
    """Nodes for the configuration's pools, each node's model the pool's name (so that
    a pod asks for its queue's pool as its model)."""
    return fleets.from_pools(
        [replace(pool, model=pool.name) for pool in org.pools.values()],
        gpus_per_node=GPUS_PER_NODE,
        cpu_milli_per_gpu=CPU_MILLI_PER_GPU,
        memory_mib_per_gpu=MEMORY_MIB_PER_GPU,
    )


# -- SKUs and shares of a card ---------------------------------------------------------


def _is_whole_card(sku: Sku, pool: Pool) -> bool:
    return sku.compute_pct >= 100 and sku.memory_mib_on(pool) >= pool.memory_mib_per_gpu


def holds_milli(sku: Sku, pool: Pool) -> int:
    """The largest share of a GPU (thousandths) a pod may ask for and still fit in one
    slice of ``sku`` on ``pool``: the smaller of its memory and compute shares."""
    memory = sku.memory_mib_on(pool) * MILLI_PER_GPU // pool.memory_mib_per_gpu
    return min(memory, sku.compute_pct * MILLI_PER_GPU // 100, MILLI_PER_GPU)


def occupies_milli(sku: Sku, pool: Pool) -> int:
    """What one slice of ``sku`` takes of its card (thousandths): the larger of its
    memory share and its compute share over the pool's compute over-subscription."""
    memory = sku.memory_mib_on(pool) / pool.memory_mib_per_gpu
    compute = sku.compute_pct / 100 / pool.compute_oversubscription
    return min(math.ceil(round(max(memory, compute) * MILLI_PER_GPU, 6)), MILLI_PER_GPU)


def choose_sku(org: Org, queue: Queue, pod: Pod) -> Sku | None:
    """The SKU of ``queue`` a pod without one asks for (module doc), None if none fits."""
    pool = org.pools[queue.pool]
    offered = [org.skus[name] for name in org.offered_skus(queue)]
    if pod.shares_gpu:
        fitting = [
            s for s in offered if s.gpus_per_slice == 1 and holds_milli(s, pool) >= pod.gpu_milli
        ]
        return min(fitting, key=lambda s: (occupies_milli(s, pool), s.name), default=None)
    wholes = [s for s in offered if _is_whole_card(s, pool) and pod.num_gpu % s.gpus_per_slice == 0]
    return min(wholes, key=lambda s: (-s.gpus_per_slice, s.name), default=None)


# -- who asks --------------------------------------------------------------------------


def _training(org: Org, queue: Queue) -> bool:
    """A queue for whole-GPU pods: its default SKU is a whole card."""
    default = org.skus.get(queue.default_sku or "")
    return default is not None and _is_whole_card(default, org.pools[queue.pool])


def assign(
    pods: Sequence[Pod], org: Org, *, seed: int = 42, on_config_fleet: bool = False
) -> list[Pod]:
    """The pods with department, queue and SKU (module doc), seeded: the same seed gives
    the same assignment. CPU-only pods are left alone (gpupool never sees them).

    ``on_config_fleet``: the fleet is :func:`fleet`'s, so each GPU pod is bound to its
    queue's pool and takes its SKU's share of a card. A pod naming a department or
    queue the configuration lacks is a ConfigError."""
    rng = random.Random(seed)
    queues = sorted(org.queues.values(), key=lambda q: (q.department, q.name))
    weights: dict[tuple[str, str], float] = {}
    for queue in queues:
        kind = [
            q for q in queues if q.pool == queue.pool and _training(org, q) == _training(org, queue)
        ]
        weights[(queue.department, queue.name)] = org.pools[queue.pool].gpus / len(kind)
    choices: dict[tuple[bool, int, int], list[tuple[Queue, Sku]]] = {}
    assigned: list[Pod] = []
    for pod in pods:
        if not pod.num_gpu:
            assigned.append(pod)
            continue
        if pod.department or pod.queue:
            queue = _named_queue(org, pod)
            sku = org.skus.get(pod.sku) if pod.sku else choose_sku(org, queue, pod)
        else:
            key = (pod.shares_gpu, pod.num_gpu, pod.gpu_milli)
            found = choices.get(key)
            if found is None:
                found = choices[key] = _candidates(org, queues, pod)
            if found:
                queue, chosen = rng.choices(
                    found, weights=[weights[(q.department, q.name)] for q, _ in found]
                )[0]
                sku = chosen
            else:  # no queue offers a SKU that holds it: the decision says so
                queue = rng.choices(
                    queues, weights=[weights[(q.department, q.name)] for q in queues]
                )[0]
                sku = None
        pool = org.pools[queue.pool]
        named = pod.sku or (sku.name if sku is not None else "")
        changed = replace(pod, department=queue.department, queue=queue.name, sku=named)
        if on_config_fleet:
            share = pod.gpu_milli
            if sku is not None and pod.shares_gpu:
                share = occupies_milli(sku, pool)
            elif sku is not None:
                share = MILLI_PER_GPU
            changed = replace(changed, gpu_milli=share, gpu_models=(pool.name,))
        assigned.append(changed)
    return assigned


def _named_queue(org: Org, pod: Pod) -> Queue:
    department = org.departments.get(pod.department)
    if department is None:
        raise ConfigError(
            f"pod {pod.name} names department {pod.department!r}, which the configuration "
            f"does not have (it has {', '.join(sorted(org.departments))})"
        )
    name = pod.queue or department.default_queue
    queue = org.queues.get((department.name, name))
    if queue is None:
        raise ConfigError(
            f"pod {pod.name} names queue {name!r} of department {department.name}, which "
            f"has {', '.join(q.name for q in org.queues_of(department.name))}"
        )
    return queue


def _candidates(org: Org, queues: Sequence[Queue], pod: Pod) -> list[tuple[Queue, Sku]]:
    """Queues of the pod's kind (training for whole GPUs) with a SKU that holds it,
    else any queue with one."""
    every = [(q, s) for q in queues if (s := choose_sku(org, q, pod)) is not None]
    own_kind = [(q, s) for q, s in every if _training(org, q) != pod.shares_gpu]
    return own_kind or every


# -- the decision ----------------------------------------------------------------------


def _namespace(org: Org, department: Department) -> str:
    """A namespace the department owns, for the request (a pattern made concrete)."""
    for pattern in department.namespaces:
        candidate = pattern.replace("*", "sim").replace("?", "x")
        found = org.department_of(candidate)
        if found is not None and found.name == department.name:
            return candidate
    raise ConfigError(
        f"department {department.name} owns no namespace a pod could be created in "
        f"(its namespaces: {', '.join(department.namespaces)})"
    )


def _identity(subject: str) -> rbac.Identity:
    if subject.startswith("group:"):
        return rbac.Identity(user="simulated", groups=(subject.removeprefix("group:"),))
    return rbac.Identity(user=subject.removeprefix("user:"))


def ask_of(org: Org, pod: Pod) -> decision.Ask:
    """The request ``pod`` makes, as its author would write it: in a namespace of its
    department, labelled with its queue, one container asking for its SKU's slices."""
    sku = org.skus.get(pod.sku)
    count = pod.num_gpu // sku.gpus_per_slice if sku is not None else pod.num_gpu
    request = placement.SliceRequest(count=count, sku=pod.sku)
    return decision.Ask(
        namespace=_namespace(org, org.departments[pod.department]),
        queue=pod.queue or None,
        containers=(decision.Container(name="main", request=request),),
    )


def decide(snapshot: Snapshot, pod: Pod, usage: Mapping[Scope, Resources]) -> Decision:
    """Governance's answer to ``pod`` given ``usage``: the one call into governance,
    :func:`governance.decision.decide` (placement, RBAC when the pod names a subject,
    quota and borrowing), the decision the webhook, the ledger and ``gpupool check``
    make. Two pods cannot be put as a request, and are refused here with the codes the
    webhook would give them: a pod no SKU of its queue holds (``SKUNotOffered``), and
    one whose GPUs are no whole number of its SKU's slices (``InvalidRequest``)."""
    if not pod.num_gpu:
        return Decision(allowed=True, reason=Reason.NOT_GPU)
    org = snapshot.org
    if not pod.sku:
        queue = org.queues[(pod.department, pod.queue)]
        return Decision(
            allowed=False,
            reason=Reason.SKU_NOT_OFFERED,
            message=f"{pod.name}: no SKU of queue {pod.department}/{pod.queue} holds "
            f"{pod.num_gpu} GPU(s) of {pod.gpu_milli}/1000. Valid choices: "
            f"{', '.join(org.offered_skus(queue))}.",
        )
    sku = org.skus.get(pod.sku)
    if sku is not None and pod.num_gpu % sku.gpus_per_slice:
        return Decision(
            allowed=False,
            reason=Reason.INVALID_REQUEST,
            message=f"{pod.name}: SKU {sku.name} comes {sku.gpus_per_slice} GPUs per slice; "
            f"{pod.num_gpu} GPUs are not a whole number of slices.",
        )
    identity = _identity(pod.subject) if pod.subject else None
    answer = decision.decide(snapshot, ask_of(org, pod), identity, usage)
    if isinstance(answer, decision.Denial):
        return Decision(
            allowed=False, reason=answer.reason, message=f"{pod.name}: {answer.message}"
        )
    return Decision(allowed=True, scopes=answer.plan.demand.path.locked, amount=answer.plan.amount)


def admission(snapshot: Snapshot) -> Admission:
    """The replay's admission: :func:`decide` against ``snapshot``."""

    def admit(pod: Pod, usage: Usage) -> Decision:
        return decide(snapshot, pod, usage.scopes)

    return admit


# -- the report ------------------------------------------------------------------------


def _use(limits: Limits, use: ScopeUse | None, *, label: str = "limit") -> dict[str, Any]:
    """Per resource with a limit: the limit, mean and peak use, peak as % of the limit."""
    found: dict[str, Any] = {}
    for name in RESOURCE_NAMES:
        limit = limits.get(name).value
        mean = use.mean[name] if use is not None else 0.0
        peak = use.peak.get(name) if use is not None else 0
        if limit is None and not peak:
            continue
        found[name] = {
            label: limit,
            "mean": mean,
            "peak": peak,
            "peak_pct": round(100 * peak / limit, 1) if limit else None,
        }
    return found


def departments(result: ReplayResult, org: Org) -> dict[str, Any]:
    """Per department of the configuration: its pods' counts (admitted, denied by
    reason, queued), and its quota use (mean and peak against the limit), with its
    queues' use against their nominal quota and their ceiling with borrowing."""
    found: dict[str, Any] = {}
    for name in sorted(org.departments):
        dept = org.departments[name]
        counts = result.departments.get(name, DepartmentCounts())
        queued = counts.started_after_waiting + counts.still_waiting
        found[name] = {
            "pods": counts.pods,
            "admitted": counts.admitted,
            "denied": dict(counts.denied),
            "denied_total": sum(counts.denied.values()),
            "started_on_arrival": counts.started_on_arrival,
            "queued": queued,
            "still_waiting": counts.still_waiting,
            "quota": _use(dept.quota.total, result.scope_use.get(scopes.department(name))),
            "queues": {
                queue.name: {
                    "nominal": _use(
                        queue.nominal.total,
                        result.scope_use.get(scopes.queue(name, queue.name)),
                        label="nominal",
                    ),
                    "ceiling": _ceiling(queue),
                }
                for queue in org.queues_of(name)
            },
        }
    return found


def _ceiling(queue: Queue) -> dict[str, int]:
    """What the queue may reach with borrowing, per resource that is bounded."""
    ceiling = quotas.borrowing_ceiling(queue)
    return {
        name: value for name in RESOURCE_NAMES if (value := ceiling.get(name).value) is not None
    }


__all__ = [
    "CPU_MILLI_PER_GPU",
    "GPUS_PER_NODE",
    "MEMORY_MIB_PER_GPU",
    "admission",
    "ask_of",
    "assign",
    "choose_sku",
    "decide",
    "departments",
    "fleet",
    "holds_milli",
    "load",
    "occupies_milli",
]
