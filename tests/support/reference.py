"""Generated organisations and request sequences, and the harness that runs them through
gpupool's public edges: the webhook's admitter (an AdmissionReview in, the answer out),
``gpupool check``, ``gpupool set quota --dry-run`` and ``gpupool get quotas``.

The generator is seeded (``random.Random``), not Hypothesis: the same seed gives the
same cases in every run, so the answers of one version of gpupool can be recorded
(``tests/data/decisions_reference.jsonl``) and compared with another's
(``tests/property/test_decisions_reference.py``). Hypothesis would shrink and vary its
inputs from run to run, and there would be nothing recorded to compare with.

What a case records is what a user sees: allowed or not, the reason code, the message,
the warnings, what the patched pod carries (gpupool's labels, the slices annotation,
each container's limits) and how much the queue borrowed (from the ledger). Allocation
ids are random, so they are written as ``alloc-X``.
"""

from __future__ import annotations

import copy
import json
import random
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from kubernetes import client as k8s

from tests.support import admission as A

# -- organisations ---------------------------------------------------------------------

POOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "a100",
        "vendor": "nvidia",
        "model": "A100-80GB",
        "backend": "hami",
        "memory_per_gpu": "80Gi",
    },
    {
        "name": "h100",
        "vendor": "nvidia",
        "model": "H100-80GB",
        "backend": "nvidia-whole",
        "memory_per_gpu": 81559,
    },
    {
        "name": "mps",
        "vendor": "nvidia",
        "model": "A100-40GB",
        "backend": "nvidia-mps",
        "memory_per_gpu": "40Gi",
        "backend_options": {"replicas": 4},
    },
    {
        "name": "l40s",
        "vendor": "nvidia",
        "model": "L40S",
        "backend": "kai",
        "memory_per_gpu": "48Gi",
    },
    {
        "name": "ts",
        "vendor": "nvidia",
        "model": "A10",
        "backend": "nvidia-timeslice",
        "memory_per_gpu": "24Gi",
        "backend_options": {"replicas": 4},
    },
)
"""Pool templates; each organisation takes some of them."""

SKU_SHAPES: dict[str, tuple[tuple[str, Any, Any, int], ...]] = {
    # name suffix, memory, compute, gpus per slice
    "a100": (("1g", "10Gi", "15%", 1), ("half", "40Gi", 50, 1), ("whole", None, "100%", 1)),
    "h100": (("whole", None, "100%", 1), ("2x", None, "100%", 2)),
    "mps": (("q", "10Gi", "25%", 1), ("e", "5Gi", 12, 1)),
    "l40s": (("q", "12Gi", "25%", 1), ("half", "24Gi", "50%", 1), ("whole", None, 100, 1)),
    "ts": (("q", "6Gi", "25%", 1), ("whole", None, "100%", 1)),
}
DEPARTMENTS = ("ml", "vision", "nlp")
QUEUES = ("train", "serve", "batch")


def _maybe(rng: random.Random, p: float, value: Any) -> Any:
    return value if rng.random() < p else None


def _limits(rng: random.Random, scale: int) -> dict[str, Any]:
    """A quota or borrowing limit: each resource unlimited (left out) or small."""
    out: dict[str, Any] = {}
    if rng.random() < 0.6:
        out["slices"] = rng.randint(0, 5 * scale)
    if rng.random() < 0.5:
        out["memory"] = f"{rng.choice((20, 40, 80, 120, 160, 240)) * scale}Gi"
    if rng.random() < 0.4:
        out["compute"] = f"{rng.choice((50, 100, 200, 300, 400)) * scale}%"
    if rng.random() < 0.05:
        out["compute"] = "unlimited"
    return out


def organisation(rng: random.Random) -> dict[str, Any]:
    """One candidate organisation document (it may not validate: see :func:`valid_org`)."""
    pools = []
    for template in rng.sample(POOLS, rng.randint(1, 3)):
        pool = copy.deepcopy(template)
        pool["gpus"] = rng.randint(2, 12)
        if pool["backend"] == "hami" and rng.random() < 0.4:
            pool["compute_oversubscription"] = rng.choice((1.5, 2.0))
        if pool["backend"] == "hami" and rng.random() < 0.3:
            pool["memory_oversubscription"] = 1.25
        pools.append(pool)
    pool_names = [p["name"] for p in pools]
    skus: list[dict[str, Any]] = []
    for pool in pool_names:
        for suffix, memory, compute, gpus in SKU_SHAPES[pool]:
            if rng.random() < 0.25 and suffix != "whole":
                continue
            sku: dict[str, Any] = {"name": f"{pool}-{suffix}", "compute": compute, "pools": [pool]}
            if memory is not None:
                sku["memory"] = memory
            if gpus != 1:
                sku["gpus"] = gpus
            skus.append(sku)
    sku_names = [s["name"] for s in skus]
    departments = []
    bindings: list[dict[str, Any]] = [{"role": "platform-admin", "subjects": ["user:root"]}]
    if rng.random() < 0.5:
        bindings.append({"role": "viewer", "department": "*", "subjects": ["group:auditors"]})
    for d in DEPARTMENTS[: rng.randint(1, 3)]:
        queues = []
        quota = _limits(rng, 2)
        for q in QUEUES[: rng.randint(1, 3)]:
            pool = rng.choice(pool_names)
            offered = [s for s in sku_names if s.startswith(f"{pool}-")]
            queue: dict[str, Any] = {"name": q, "pool": pool}
            nominal = _limits(rng, 1)
            if nominal:
                queue["quota"] = nominal
            if rng.random() < 0.3 and offered:
                queue["skus"] = rng.sample(offered, rng.randint(1, len(offered)))
            choices = queue.get("skus", offered)
            if rng.random() < 0.5 and choices:
                queue["default_sku"] = rng.choice(choices)
            borrowing = {
                key: value
                for key, value in _limits(rng, 1).items()
                if key in nominal and key in quota and value != "unlimited"
                if nominal[key] != "unlimited" and quota[key] != "unlimited"
            }
            if borrowing and rng.random() < 0.2:
                borrowing = {key: 0 for key in borrowing}
            if borrowing and rng.random() < 0.7:
                queue["borrowing_limit"] = borrowing
            if rng.random() < 0.15 and choices:
                queue.setdefault("quota", {})["per_sku"] = {
                    rng.choice(choices): {"slices": rng.randint(0, 2)}
                }
            queues.append(queue)
        if rng.random() < 0.2:
            quota["per_pool"] = {rng.choice(pool_names): _limits(rng, 1) or {"slices": 2}}
        if rng.random() < 0.2 and sku_names:
            quota["per_sku"] = {rng.choice(sku_names): {"slices": rng.randint(1, 3)}}
        department: dict[str, Any] = {
            "name": d,
            "namespaces": [d, f"{d}-*"] if rng.random() < 0.7 else [d],
            "default_queue": rng.choice(queues)["name"],
            "queues": queues,
        }
        if quota:
            department["quota"] = quota
        departments.append(department)
        bindings.append({"role": "dept-admin", "department": d, "subjects": [f"user:{d}-admin"]})
        bindings.append({"role": "member", "department": d, "subjects": [f"group:{d}-team"]})
        if rng.random() < 0.6:
            bindings.append(
                {
                    "role": "member",
                    "department": d,
                    "subjects": [f"system:serviceaccount:{d}:runner"],
                }
            )
        if rng.random() < 0.5:
            bindings.append({"role": "viewer", "department": d, "subjects": [f"group:{d}-view"]})
        if rng.random() < 0.7:
            narrowed: dict[str, Any] = {
                "role": "member",
                "department": d,
                "subjects": [f"user:{d}-intern"],
            }
            names = [q["name"] for q in queues]
            if rng.random() < 0.7:
                narrowed["queues"] = rng.sample(names, rng.randint(1, len(names)))
            if rng.random() < 0.5 and sku_names:
                narrowed["skus"] = rng.sample(sku_names, rng.randint(1, min(2, len(sku_names))))
            bindings.append(narrowed)
    return {
        "pools": pools,
        "skus": skus,
        "departments": departments,
        "role_bindings": bindings,
    }


def valid_org(rng: random.Random) -> dict[str, Any]:
    """The first generated document that the configuration builder accepts."""
    from governance.errors import ConfigError

    build = _build_org()
    while True:
        document = organisation(rng)
        try:
            build(document, source="generated")
        except ConfigError:
            continue
        return document


def _build_org() -> Any:
    import governance.config as config

    return config.build_org


# -- requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """The requester (userInfo) and the pod's service account."""

    user: str
    groups: tuple[str, ...] = ()
    service_account: str | None = None
    owner_kind: str | None = None
    department: str | None = None
    """Where this requester creates pods (None: anywhere)."""


def _people(document: Mapping[str, Any]) -> list[Who]:
    departments = [d["name"] for d in document["departments"]]
    people = [
        Who("root"),
        Who("eve", ("guests", "system:authenticated")),
        Who("sam", ("auditors",)),
        Who("ci-bot", ("system:authenticated",), service_account="runner", owner_kind="Job"),
    ]
    for d in departments:
        people += [
            Who(f"{d}-admin", department=d),
            Who(f"dev-{d}", (f"{d}-team", "system:authenticated"), department=d),
            Who(f"dev-{d}", (f"{d}-team", "system:authenticated"), department=d),
            Who(f"ops-{d}", (f"{d}-team",), department=d),
            Who(f"ops-{d}", (f"{d}-team",), department=d),
            Who(f"{d}-intern", ("system:authenticated",), department=d),
            Who(f"view-{d}", (f"{d}-view",)),
            Who(
                A.REPLICASET_CONTROLLER,
                service_account="runner",
                owner_kind="ReplicaSet",
                department=d,
            ),
            Who(A.JOB_CONTROLLER, service_account="default", owner_kind="Job"),
        ]
    return people


def _sku(rng: random.Random, skus: Sequence[str]) -> str:
    return rng.choice(skus) if skus and rng.random() < 0.9 else "no-such-sku"


def _container_limits(
    rng: random.Random, skus: Sequence[str], form: str
) -> tuple[dict[str, str], str | None]:
    """(limits, the pod's gpupool.io/sku label when the form needs one)."""
    count = str(rng.choice((1, 1, 1, 2, 3)))
    limits = {"cpu": "1", "memory": "1Gi"}
    if form == "sku-resource":
        limits[f"gpupool.io/{_sku(rng, skus)}"] = count
        return limits, None
    if form == "sku-label":
        limits["nvidia.com/gpu"] = count
        return limits, _sku(rng, skus)
    if form == "hami":
        limits["nvidia.com/gpu"] = count
        which = rng.random()
        if which < 0.4:
            limits["nvidia.com/gpumem"] = str(rng.choice((2048, 4000, 10240, 20480, 90000)))
        elif which < 0.7:
            limits["nvidia.com/gpumem-percentage"] = str(rng.choice((10, 25, 50, 100, 120)))
        if rng.random() < 0.6:
            limits["nvidia.com/gpucores"] = str(rng.choice((10, 25, 30, 50, 100)))
        return limits, None
    if form == "plain":
        limits["nvidia.com/gpu"] = count
        return limits, None
    if form == "bad":
        limits["nvidia.com/gpu"] = rng.choice(("500m", "0"))
        return limits, None
    return limits, None  # "cpu": no GPU


def _pod(rng: random.Random, document: Mapping[str, Any], who: Who, index: int) -> k8s.V1Pod:
    departments = [d["name"] for d in document["departments"]]
    skus = [s["name"] for s in document["skus"]]
    queues = sorted({q["name"] for d in document["departments"] for q in d["queues"]})
    d = who.department or rng.choice(departments)
    namespace = rng.choices((d, f"{d}-dev", "default"), (8, 1, 1))[0]
    mine = [q for dd in document["departments"] if dd["name"] == d for q in dd["queues"]]
    own = [q["name"] for q in mine]
    pools = {q["pool"] for q in mine}
    near = [s["name"] for s in document["skus"] if set(s["pools"]) & pools]
    skus = [*near, *near, *near, *skus]
    labels: dict[str, str] = {}
    if rng.random() < 0.4:
        labels["gpupool.io/queue"] = rng.choice([*own, *own, *own, *queues, "no-such-queue"])
    forms = ("sku-resource", "sku-label", "hami", "plain", "bad", "cpu")
    weights = (3, 3, 3, 6, 0.3, 0.5)
    containers = []
    for i in range(rng.choice((1, 1, 1, 1, 2))):
        form = rng.choices(forms, weights)[0]
        limits, sku = _container_limits(rng, skus, form)
        if sku is not None:
            labels["gpupool.io/sku"] = sku
        containers.append(A.container(f"c{i}", limits=limits))
    init = []
    if rng.random() < 0.2:
        limits, sku = _container_limits(rng, skus, rng.choice(("plain", "sku-resource", "hami")))
        if sku is not None:
            labels["gpupool.io/sku"] = sku
        restart = "Always" if rng.random() < 0.5 else None
        init.append(A.container("init", limits=limits, restart_policy=restart))
    if rng.random() < 0.1:
        labels["gpupool.io/department"] = "forged"
    return A.pod(
        *containers,
        namespace=namespace,
        name=f"pod-{index}",
        labels=labels or None,
        init_containers=init or None,
        service_account=who.service_account,
        owner_kind=who.owner_kind,
    )


@dataclass(frozen=True)
class Step:
    """One admission request of a sequence: a new pod, the same request sent again (the
    API server's retry), or the admitted pod sent again under a new uid (a
    reinvocation after another webhook's change)."""

    kind: str
    review: dict[str, Any]


def sequence(rng: random.Random, document: Mapping[str, Any], length: int) -> list[Step]:
    """``length`` requests: new pods, and now and then a retry or a reinvocation of an
    earlier one (its body then comes from the earlier answer, see :func:`run_org`)."""
    people = _people(document)
    steps: list[Step] = []
    for index in range(length):
        roll = rng.random()
        if steps and roll < 0.06:
            steps.append(Step("retry", rng.choice(steps).review))
            continue
        if steps and roll < 0.12:
            steps.append(Step("reinvoke", rng.choice(steps).review))
            continue
        who = rng.choice(people)
        body = A.review(
            _pod(rng, document, who, index),
            user=who.user,
            groups=who.groups,
            uid=str(uuid.UUID(int=rng.getrandbits(128))),
        )
        steps.append(Step("new", body))
    return steps


def checks(rng: random.Random, document: Mapping[str, Any], count: int) -> list[list[str]]:
    """``gpupool check`` argument lists."""
    people = _people(document)
    departments = [d["name"] for d in document["departments"]]
    skus = [s["name"] for s in document["skus"]]
    queues = sorted({q["name"] for d in document["departments"] for q in d["queues"]})
    out = []
    for _ in range(count):
        who = rng.choice(people)
        d = who.department or rng.choice(departments)
        args = ["check", "-n", rng.choices((d, f"{d}-x", "default"), (8, 1, 1))[0], "-o", "json"]
        if rng.random() < 0.4:
            args += ["-q", rng.choice([*queues, "nope"])]
        if rng.random() < 0.7:
            args += ["--sku", _sku(rng, skus)]
        args += ["--count", str(rng.choice((1, 1, 2, 4, 0)))]
        if rng.random() < 0.8:
            args += ["--as", who.user]
            for group in who.groups:
                args += ["--as-group", group]
        out.append(args)
    return out


def quota_changes(rng: random.Random, document: Mapping[str, Any], count: int) -> list[list[str]]:
    """``gpupool set quota --dry-run`` argument lists."""
    people = _people(document)
    out = []
    for _ in range(count):
        d = rng.choice(document["departments"])
        args = ["set", "quota", "-d", d["name"], "--dry-run", "-o", "json"]
        if rng.random() < 0.7:
            args += ["-q", rng.choice([q["name"] for q in d["queues"]])]
        who = rng.choice([Who("root"), Who(f"{d['name']}-admin"), *rng.sample(people, 2)])
        key, value = rng.choice(
            (
                ("--slices", str(rng.randint(0, 6))),
                ("--memory", f"{rng.choice((20, 80, 400))}Gi"),
                ("--compute", rng.choice(("100%", "300%", "unlimited"))),
                ("--slices", "unlimited"),
            )
        )
        args += [key, value, "--as", who.user]
        for group in who.groups:
            args += ["--as-group", group]
        out.append(args)
    return out


# -- the harness -----------------------------------------------------------------------

_ALLOC = re.compile(r"alloc-[0-9a-f]{32}")


def _scrub(value: Any) -> Any:
    """``value`` with every allocation id written as ``alloc-X`` (they are random)."""
    if isinstance(value, str):
        return _ALLOC.sub("alloc-X", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _outcome(
    body: Mapping[str, Any], response: Mapping[str, Any], reason: str, borrowed: Any
) -> dict[str, Any]:
    status = response.get("status") or {}
    out: dict[str, Any] = {
        "allowed": response["allowed"],
        "reason": reason,
        "code": status.get("code"),
        "message": status.get("message", ""),
        "warnings": response.get("warnings") or [],
    }
    if response.get("patch"):
        patched = A.apply_patch(body["request"]["object"], response)
        meta = patched["metadata"]
        out["labels"] = {
            k: v for k, v in (meta.get("labels") or {}).items() if k.startswith("gpupool.io/")
        }
        annotations = meta.get("annotations") or {}
        if "gpupool.io/slices" in annotations:
            out["slices"] = json.loads(annotations["gpupool.io/slices"])
        out["annotations"] = sorted(annotations)
        out["limits"] = {
            c["name"]: (c.get("resources") or {}).get("limits") or {}
            for key in ("initContainers", "containers")
            for c in patched["spec"].get(key) or []
        }
    out["borrowed"] = borrowed
    return _scrub(out)


def _reinvoked(body: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """The pod the earlier answer produced, under a new uid (derived from the old one)."""
    again = copy.deepcopy(dict(body))
    again["request"]["object"] = A.apply_patch(body["request"]["object"], answer)
    again["request"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_OID, body["request"]["uid"]))
    return again


def run_org(seed: int, tmp: Path, *, length: int = 40) -> Iterator[dict[str, Any]]:
    """Every recorded outcome of organisation ``seed``: its admissions in order, then
    its checks, quota changes and quota report, each a JSON-able dict."""
    rng = random.Random(seed)
    document = valid_org(rng)
    steps = sequence(rng, document, length)
    check_args = checks(rng, document, 5)
    change_args = quota_changes(rng, document, 3)
    url = f"sqlite:///{tmp / f'org-{seed}.db'}"
    yield {"org": seed, "document": document}
    for i, (body, response, reason, borrowed) in enumerate(_admit_all(url, document, steps)):
        yield {"org": seed, "step": i, **_outcome(body, response, reason, borrowed)}
    runner = CliRunner()
    for i, args in enumerate(check_args):
        result = runner.invoke(_cli(), ["--store", url, *args])
        yield {
            "org": seed,
            "check": i,
            "args": args,
            "exit": result.exit_code,
            "stdout": json.loads(result.stdout) if result.stdout.strip() else None,
            "stderr": result.stderr,
        }
    for i, args in enumerate(change_args):
        result = runner.invoke(_cli(), ["--store", url, *args])
        yield _scrub(
            {
                "org": seed,
                "set_quota": i,
                "args": args,
                "exit": result.exit_code,
                "stdout": json.loads(result.stdout) if result.stdout.strip() else None,
                "stderr": result.stderr,
            }
        )
    result = runner.invoke(_cli(), ["--store", url, "get", "quotas", "-o", "json"])
    yield {"org": seed, "quotas": json.loads(result.stdout), "exit": result.exit_code}


def _cli() -> Any:
    from governance import cli

    return cli.cli


def _admit_all(
    url: str, document: Mapping[str, Any], steps: Sequence[Step]
) -> Iterator[tuple[dict[str, Any], dict[str, Any], str, Any]]:
    """(review, response, reason code, borrowed) of each step, through one webhook
    admitter (the reason of an allowed answer is not in the AdmissionReview)."""
    from admission.review import parse_review

    with A.organised_store(url, document) as store, closing(_admitter(store)) as admitter:
        answers: dict[str, dict[str, Any]] = {}
        for step in steps:
            body = step.review
            if step.kind == "reinvoke":
                earlier = answers[body["request"]["uid"]]
                if not earlier.get("patch"):
                    body = copy.deepcopy(body)  # nothing was patched: the same pod again
                    body["request"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(body)))
                else:
                    body = _reinvoked(body, earlier)
            answer = admitter.admit(parse_review(A.json_bytes(body)))
            response = A.response_of(body, answer)
            answers.setdefault(body["request"]["uid"], response)
            yield body, response, answer.reason.value, _borrowed(store, body["request"]["uid"])


def _admitter(store: Any) -> Any:
    from admission.server import build

    return build(store).admitter


def _borrowed(store: Any, uid: str) -> dict[str, int] | None:
    from governance.storage import ledger

    found = ledger.by_request(store, uid)
    return None if found is None else dict(found.borrowed.as_dict())


SEEDS = range(1, 31)
"""The organisations recorded in the fixture."""
