"""Admission throughput and latency over HTTPS, against the floor of a trivial endpoint.

One webhook process (``gpupool webhook``: one uvicorn worker, uvloop + httptools) on a
store holding a large organisation (1,000 departments, 5,000 queues, 20,000 role-binding
policies, 30,000 live allocations; quotas large enough that every request is admitted),
driven by wrk with ``bench/admission.lua``. The script cycles through pre-built
AdmissionReviews and gives every request a uid of its own (run, wrk thread, counter), so
every GPU request of a run is a fresh admission and a new reservation, never a replay
of a uid the ledger already holds. The floor is a trivial FastAPI endpoint served the
same way (uvicorn, HTTPS, same wrk settings) that echoes the request's uid in an answer
of the same size as the webhook's GPU answer. The machine is shared and noisy: compare
the ratios, each measured beside its floor in the same run.

Two kinds of load:

* closed loop: wrk keeps every connection waiting for an answer (32 by default), which
  measures throughput; the latency it gives is the queue wrk builds (connections /
  throughput, Little's law). GPU pods and non-GPU pods are measured separately, the
  floor before and after; full runs also drive the GPU path with 8 and 16 connections.
* open loop: requests go out at a fixed offered rate whatever the answers do (each wrk
  thread keeps a schedule of send times; a late request's latency counts from its slot),
  which measures what an API server creating pods at that rate sees: GPU pods on SQLite
  at 500/s and on PostgreSQL at 300/s, each beside the floor at the same rate. The
  achieved rate is reported beside the offered one; the first 0.25 s (connections
  being set up) is left out.

Every run checks its outcome and the bench fails loudly when it is wrong: every answer
is HTTP 200 and carries the uid of a request of this run; GPU pods are allowed with a
patch, non-GPU pods allowed without one; the ledger holds exactly one reservation for
each GPU request answered allowed (and at most one for each request still in flight when
the run stopped), in the namespace, queue and number of slices its body asked for; and
a sample of the GPU answers, patched onto their pods, carries the labels of that
department and queue and the allocation id of that reservation.

PostgreSQL: with ``--pg URL`` (full runs default to ``$GPUPOOL_BENCH_PG_URL``, else
``$GPUPOOL_TEST_PG_URL``; ``--quick`` only with ``--pg``, since a second store and four
more runs do not fit in its 30 s) a fresh database is created on that server for the
run, the same organisation loaded (in a process of its own, beside SQLite's), a second
webhook started on it, and its GPU path measured closed loop (``pg_floor_ratio``) and
open loop; the database is dropped afterwards.

Then (full runs, or ``--profile``) the handler alone is profiled in-process with
pyinstrument (parse, decide, reserve, patch, render), and the top of the profile is
printed.

Targets (issue 12): open-loop p99 <= 10 ms at 500/s on SQLite and <= 20 ms at 300/s on
PostgreSQL; closed-loop GPU floor ratio >= 0.3 (goal 0.5), on PostgreSQL >= 0.25.

Usage: python -m bench.admission [--quick] [--pg URL | --no-pg] [--connections 32]
Prints a table, then one JSON object as the last line (``samples`` says how many
answers each percentile rests on).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import multiprocessing as mp
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
from governance import contract, quotas, scopes  # noqa: E402
from governance.resources import Resources  # noqa: E402
from governance.storage import revisions, schema  # noqa: E402
from governance.storage.source import SnapshotSource  # noqa: E402
from governance.storage.store import Store, utcnow  # noqa: E402
from tests.support import admission as A  # noqa: E402
from tests.support.databases import fresh_database  # noqa: E402

LUA = ROOT / "bench" / "admission.lua"
CURVE_CONNECTIONS = (8, 16)
"""Full runs also drive the webhook's GPU path with these many connections."""
CURVE_SECONDS = 5
OPEN_RATES = {"sqlite": 500, "pg": 300}
"""Offered rates of the open-loop runs, per store (requests a second)."""
WARMUP_S = 0.25
"""Left out of each run: the connections' TLS handshakes happen then."""
RATE_KEPT = 0.97
"""An open-loop run kept its rate when it achieved at least this share of it."""
TARGETS = {
    "open_p99_ms_sqlite_500": ("<=", 10.0),
    "open_p99_ms_pg_300": ("<=", 20.0),
    "floor_ratio": (">=", 0.3),
    "pg_floor_ratio": (">=", 0.25),
}
WRK = shutil.which("wrk") or "/usr/bin/wrk"
PG_URL_ENVS = ("GPUPOOL_BENCH_PG_URL", "GPUPOOL_TEST_PG_URL")


# -- the large organisation ------------------------------------------------------------


def large_org(
    departments: int = 1000, queues_per: int = 5, bindings_per: int = 20
) -> dict[str, Any]:
    pools = [
        {
            "name": f"pool-{i}",
            "vendor": "nvidia",
            "model": "A100-SXM4-80GB",
            "backend": "hami",
            "gpus": 100_000,
            "memory_per_gpu": 81920,
        }
        for i in range(4)
    ]
    skus = [
        {"name": "small", "compute": 25, "memory": "20Gi", "pools": [p["name"] for p in pools]},
        {"name": "large", "compute": 50, "memory": "40Gi", "pools": [p["name"] for p in pools]},
        {"name": "whole", "compute": 100, "memory_pct": 100, "pools": [p["name"] for p in pools]},
    ]
    depts = []
    bindings = []
    for d in range(departments):
        name = f"dept-{d:04d}"
        depts.append(
            {
                "name": name,
                "namespaces": [f"ns-{d:04d}"],
                "default_queue": "q0",
                "quota": {"slices": 1_000_000, "memory": "100000Ti", "compute": 100_000_000},
                "queues": [
                    {
                        "name": f"q{q}",
                        "pool": f"pool-{(d + q) % 4}",
                        "default_sku": "small",
                        "quota": {"slices": 100_000, "memory": "10000Ti", "compute": 10_000_000},
                    }
                    for q in range(queues_per)
                ],
            }
        )
        bindings.append(
            {
                "role": "member",
                "department": name,
                "subjects": [f"system:serviceaccount:ns-{d:04d}:runner"],
            }
        )
        for b in range(bindings_per - 2):
            bindings.append(
                {"role": "member", "department": name, "subjects": [f"user:u{d:04d}-{b}"]}
            )
        bindings.append(
            {"role": "dept-admin", "department": name, "subjects": [f"group:admins-{d:04d}"]}
        )
    return {"pools": pools, "skus": skus, "departments": depts, "role_bindings": bindings}


def seed_allocations(store: Store, org_doc: dict[str, Any], count: int) -> None:
    """``count`` live allocations spread over the queues, then the usage rows rebuilt."""
    now = utcnow()
    rng = random.Random(1)
    depts = org_doc["departments"]
    rows = []
    for i in range(count):
        dept = depts[rng.randrange(len(depts))]
        queue = dept["queues"][rng.randrange(len(dept["queues"]))]
        rows.append(
            {
                "id": f"alloc-seed-{i:06d}",
                "request_uid": f"seed-{i:06d}",
                "state": "bound" if i % 3 else "reserved",
                "namespace": dept["namespaces"][0],
                "pod_name": f"seed-{i}",
                "pod_uid": f"uid-{i}" if i % 3 else "",
                "department": dept["name"],
                "queue": queue["name"],
                "sku": "small",
                "pool": queue["pool"],
                "slices": 1,
                "memory_mib": 20480,
                "compute_pct": 25,
                "borrowed_slices": 0,
                "borrowed_memory_mib": 0,
                "borrowed_compute_pct": 0,
                "subject": "seed",
                "created_at": now,
                "expires_at": now + timedelta(hours=1),
                "bound_at": now if i % 3 else None,
                "ended_at": None,
                "grants": {
                    "main": {
                        "count": 1,
                        "memory_mib": 20480,
                        "compute_pct": 25,
                        "backend": "hami",
                        "pool": queue["pool"],
                        "sku": "small",
                        "gpus_per_slice": 1,
                    }
                },
            }
        )
    usage: dict[scopes.Scope, list[int]] = {}
    for row in rows:
        demand = quotas.Demand(
            department=row["department"],
            queue=row["queue"],
            sku=row["sku"],
            pool=row["pool"],
            amount=Resources(slices=1),
        )
        for scope in demand.path.locked:
            totals = usage.setdefault(scope, [0, 0, 0])
            totals[0] += 1
            totals[1] += 20480
            totals[2] += 25
    with store.write() as conn:
        conn.execute(schema.allocations.insert(), rows)
        conn.execute(schema.usage.delete())
        conn.execute(
            schema.usage.insert(),
            [
                {"scope": k.key, "slices": v[0], "memory_mib": v[1], "compute_pct": v[2]}
                for k, v in usage.items()
            ],
        )


# -- request bodies --------------------------------------------------------------------

UID_PLACEHOLDER = "@@UID@@"
"""Where admission.lua writes each request's own uid."""


def gpu_review(rng: random.Random, departments: int) -> dict[str, Any]:
    d = rng.randrange(departments)
    pod = A.deployment_pod(
        A.container("main", limits=A.gpu(rng.choice([1, 1, 2]))),
        A.container("sidecar", limits={"cpu": "100m", "memory": "64Mi"}),
        namespace=f"ns-{d:04d}",
        service_account="runner",
        labels={"app": "bench", "gpupool.io/queue": f"q{rng.randrange(5)}"},
    )
    return A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))


def cpu_review(rng: random.Random, departments: int) -> dict[str, Any]:
    d = rng.randrange(departments)
    pod = A.deployment_pod(
        A.container("main", limits={"cpu": "1", "memory": "1Gi"}),
        A.container("sidecar", limits={"cpu": "100m", "memory": "64Mi"}),
        namespace=f"ns-{d:04d}",
        service_account="runner",
        labels={"app": "bench"},
    )
    return A.review(pod, user=A.REPLICASET_CONTROLLER, groups=("system:serviceaccounts",))


def reviews(
    template: dict[str, Any], rng: random.Random, count: int, departments: int
) -> list[dict[str, Any]]:
    """``count`` copies of ``template``, each in a namespace drawn at random and, for a
    GPU pod, a queue and a GPU count drawn at random; the uid is the placeholder that
    the wrk script replaces per request (a fresh uuid for in-process use)."""
    text = json.dumps(template)
    out = []
    for _ in range(count):
        body = json.loads(text)
        request = body["request"]
        request["uid"] = str(uuid.uuid4())
        ns = f"ns-{rng.randrange(departments):04d}"
        request["namespace"] = request["object"]["metadata"]["namespace"] = ns
        labels = request["object"]["metadata"]["labels"]
        if "gpupool.io/queue" in labels:
            labels["gpupool.io/queue"] = f"q{rng.randrange(5)}"
            limits = request["object"]["spec"]["containers"][0]["resources"]["limits"]
            limits["nvidia.com/gpu"] = str(rng.choice([1, 1, 2]))
        out.append(body)
    return out


@dataclass(frozen=True, kw_only=True)
class Asked:
    """What a GPU body asks for: the reservation and the labels its answer must give."""

    namespace: str
    department: str
    queue: str
    slices: int


def asked(body: dict[str, Any]) -> Asked:
    pod = body["request"]["object"]
    ns = pod["metadata"]["namespace"]
    gpus = pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    return Asked(
        namespace=ns,
        department="dept-" + ns.removeprefix("ns-"),  # as large_org maps them
        queue=pod["metadata"]["labels"]["gpupool.io/queue"],
        slices=int(gpus),  # the default SKU is one slice per GPU asked
    )


def write_bodies(path: Path, bodies: list[dict[str, Any]]) -> None:
    lines = []
    for body in bodies:
        body = {**body, "request": {**body["request"], "uid": UID_PLACEHOLDER}}
        lines.append(json.dumps(body, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")


# -- servers ---------------------------------------------------------------------------

FLOOR_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
size_file = sys.argv[1]
size = 0
HEAD = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"'
async def mutate(request: Request) -> Response:
    # Echo the request's uid, as any admission webhook must, in an answer as long as
    # the webhook's GPU answer (its size is known once the webhook is up).
    global size
    body = await request.body()
    start = body.find(b'"uid":"') + 7
    uid = body[start:body.find(b'"', start)]
    if not size:
        with open(size_file) as f:
            size = int(f.read())
    tail = b'","x":"' + b"x" * max(0, size - len(HEAD) - len(uid) - 10) + b'"}}'
    return Response(HEAD + uid + tail, media_type="application/json")
app = FastAPI()
if sys.argv[5] == "lean":  # a plain Starlette route, as the webhook's /mutate is
    app.add_route("/mutate", mutate, methods=["POST"])
else:  # FastAPI's own route (dependency solving and its exit stack per request)
    app.post("/mutate")(mutate)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), ssl_certfile=sys.argv[3],
            ssl_keyfile=sys.argv[4], log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
"""


def start_floor(
    size_file: Path, cert: Path, key: Path, port: int, route: str = "fastapi"
) -> subprocess.Popen[bytes]:
    """The floor: a trivial FastAPI app over HTTPS answering as many bytes as the
    webhook. ``route="lean"`` serves it through a plain Starlette route, as the
    webhook serves ``/mutate``: the ratio to it shows what the webhook's own work
    costs, without the difference between the two kinds of route."""
    return subprocess.Popen(
        [sys.executable, "-c", FLOOR_APP, str(size_file), str(port), str(cert), str(key), route],
        cwd=ROOT,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(*pids: int, timeout_s: float = 5.0) -> None:
    """Until the processes use under a tenth of a core each over 0.15 s (Linux /proc)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        used = [cpu_seconds(pid) for pid in pids]
        time.sleep(0.15)
        if all(cpu_seconds(pid) - u < 0.015 for pid, u in zip(pids, used, strict=True)):
            return


def wait_up(url: str, proc: subprocess.Popen[bytes], body: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            r = httpx.post(url, json=body, verify=False, timeout=5)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


# -- wrk -------------------------------------------------------------------------------


class OutcomeError(SystemExit):
    """A run's answers or reservations are not what its requests should get."""


@dataclass(kw_only=True)
class Run:
    """One wrk run: its rate, the latency of every answer, and what the answers were."""

    name: str
    rate: float
    """Answers a second: wrk's figure (closed loop), or achieved (open loop)."""
    latencies_ms: list[float]
    """One per answer counted (open loop: after the warm-up)."""
    sent: int
    answered: list[str]
    """The uids of the answers, every one checked (HTTP 200, its own uid, as expected)."""
    kept: list[dict[str, Any]]
    """A few GPU answers in full."""
    run_id: str
    cpu_ms: float
    """Server CPU time per answer."""
    offered: float | None = None
    send_lag_ms: list[float] = field(default_factory=list)
    """Open loop: how late each request went out after its slot."""
    mean_group: float | None = None
    """GPU runs: reservations per ledger transaction (the group commit)."""

    @property
    def p50_ms(self) -> float:
        return stats.percentile(self.latencies_ms, 0.50)

    @property
    def p99_ms(self) -> float:
        return stats.percentile(self.latencies_ms, 0.99)

    @property
    def samples(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate_kept(self) -> bool:
        return self.offered is None or self.rate >= RATE_KEPT * self.offered


def run_wrk(
    name: str,
    url: str,
    bodies: Path,
    *,
    seconds: int,
    connections: int,
    threads: int,
    pid: int,
    expect: str,
    rate: float | None = None,
) -> Run:
    """wrk with admission.lua; every answer checked as ``expect`` says (see the script),
    and the server's CPU time per answer (``pid``): unlike the rate, CPU time hardly
    depends on what else the machine runs."""
    run_id = secrets.token_hex(4)
    out_file = bodies.with_name(f"answers-{run_id}.txt")
    env = {
        **os.environ,
        "BODIES": str(bodies),
        "THREADS": str(threads),
        "RUN": run_id,
        "EXPECT": expect,
        "OUT": str(out_file),
    }
    if rate is not None:
        env["RATE"] = str(rate)
    cpu0 = cpu_seconds(pid)
    done = subprocess.run(
        [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), url],
        env=env,
        capture_output=True,
        text=True,
    )
    cpu = cpu_seconds(pid) - cpu0
    if done.returncode != 0 or not out_file.exists():
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    counts: dict[str, int] = {}
    answers: list[tuple[str, int, int, int]] = []
    kept: list[dict[str, Any]] = []
    wrong_examples: list[str] = []
    for line in out_file.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "C":
            key, value = rest.split()
            counts[key] = int(value)
        elif kind == "A":
            uid, start, send, end = rest.split()
            answers.append((uid, int(start), int(send), int(end)))
        elif kind == "B":
            kept.append(json.loads(rest))
        elif kind == "X":
            wrong_examples.append(rest)
    out_file.unlink()
    problems = {k: counts[k] for k in ("non200", "wrong", "unmatched") if counts[k]}
    errors = re.search(r"Socket errors: (.*)", done.stdout)
    if problems or errors:
        raise OutcomeError(
            f"{name}: {problems or ''} {errors.group(1) if errors else ''}; "
            f"for example: {wrong_examples[:1]}"
        )
    # The rate and the latencies count the answers to requests sent after the warm-up.
    begin = min(a[1] for a in answers) + WARMUP_S * 1e6
    counted = [a for a in answers if a[1] >= begin]
    rps = len(counted) / ((max(a[3] for a in counted) - begin) / 1e6)
    return Run(
        name=name,
        rate=rps,
        latencies_ms=[(a[3] - (a[1] if rate else a[2])) / 1000 for a in counted],
        send_lag_ms=[(a[2] - a[1]) / 1000 for a in counted] if rate else [],
        sent=counts["sent"],
        answered=[a[0] for a in answers],
        kept=kept,
        run_id=run_id,
        cpu_ms=cpu * 1000 / max(1, len(answers)),
        offered=rate,
    )


# -- outcome ---------------------------------------------------------------------------


def check_gpu_outcome(store: Store, run: Run, bodies: list[dict[str, Any]]) -> dict[str, int]:
    """Every GPU request of ``run`` answered allowed has exactly one reservation, for
    what its body asked; requests unanswered when wrk stopped have at most one; the
    kept answers, patched onto their pods, name that reservation and its department
    and queue. Raises OutcomeError otherwise; returns the counts."""
    t = schema.allocations
    with store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.id, t.c.request_uid, t.c.namespace, t.c.department, t.c.queue)
            .add_columns(t.c.slices)
            .where(t.c.request_uid.like(f"{run.run_id}-%"))
        ).all()
    by_uid = {r.request_uid: r for r in rows}
    answered = set(run.answered)
    missing = answered - by_uid.keys()
    extra = by_uid.keys() - answered
    unanswered = run.sent - len(answered)
    problems = []
    if len(rows) != len(by_uid):
        problems.append(f"{len(rows) - len(by_uid)} request uids reserved twice")
    if missing:
        problems.append(f"{len(missing)} allowed answers without a reservation")
    if len(extra) > unanswered:
        problems.append(f"{len(extra)} reservations unanswered, {unanswered} requests were")
    for uid, row in by_uid.items():
        want = asked(bodies[int(uid.rsplit("-", 1)[1], 16)])
        got = Asked(
            namespace=row.namespace, department=row.department, queue=row.queue, slices=row.slices
        )
        if got != want:
            problems.append(f"{uid}: reserved {got}, its body asked {want}")
            break
    for review in run.kept:
        answer = review["response"]
        row = by_uid.get(answer["uid"])
        body = bodies[int(answer["uid"].rsplit("-", 1)[1], 16)]
        pod = A.apply_patch(body["request"]["object"], answer)
        meta = pod["metadata"]
        want = asked(body)
        labels = meta.get("labels", {})
        seen = (
            labels.get(contract.LABEL_DEPARTMENT),
            labels.get(contract.LABEL_QUEUE),
            meta.get("annotations", {}).get(contract.ANNOTATION_ALLOCATION_ID),
        )
        if row is None or seen != (want.department, want.queue, row.id):
            problems.append(
                f"{answer['uid']}: the patched pod says {seen}, expected "
                f"{(want.department, want.queue, row.id if row else None)}"
            )
            break
    if problems:
        raise OutcomeError(f"{run.name}: " + "; ".join(problems))
    return {
        "answered_allowed": len(answered),
        "reserved": len(rows),
        "reserved_in_flight_at_stop": len(extra),
        "answers_decoded": len(run.kept),
    }


# -- profile ---------------------------------------------------------------------------


def profile(store: Store, bodies: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The handler as the server runs it, without HTTP (parse, decide, group-committed
    reservation, render), with the policy enforcers warmed first as the webhook does
    before its first requests. First its CPU time per GPU admission (no profiler) one
    at a time, as at a moderate offered rate where every reservation is a transaction
    of its own, and 32 at a time, as in the closed-loop run; then a pyinstrument
    profile of 32 at a time. Returns the text and the two CPU figures."""
    import asyncio

    from pyinstrument import Profiler

    from admission import review
    from admission.admitter import Admitter, Settings

    source = SnapshotSource(store)
    admitter = Admitter(store=store, snapshot=source.get, settings=Settings(warm_rbac=False))
    admitter.warm_up()
    raw = [json.dumps(b).encode() for b in bodies]

    async def handle(body: bytes) -> bytes:
        req = review.parse_review(body)
        answer, pod = admitter.quick(req)
        if answer is None:
            assert pod is not None
            answer = await admitter.admit_async(req, pod)
        return review.render(req.uid, answer)

    async def run(chunk: list[bytes], concurrency: int) -> None:
        pending = iter(chunk)

        async def worker() -> None:
            for body in pending:
                await handle(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    quarter = len(raw) // 4
    asyncio.run(run(raw[:quarter], 32))  # caches, connections, usage rows
    cpu_ms: dict[str, float] = {}
    for concurrency, chunk in (
        (1, raw[quarter : 2 * quarter]),
        (32, raw[2 * quarter : 3 * quarter]),
    ):
        started = time.thread_time()  # on SQLite the reservation runs on this thread too
        asyncio.run(run(chunk, concurrency))
        cpu_ms[str(concurrency)] = (time.thread_time() - started) / len(chunk) * 1000
    measured = raw[3 * quarter :]
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    profiler.start()
    asyncio.run(run(measured, 32))
    profiler.stop()
    per = (time.perf_counter() - started) / max(1, len(measured)) * 1000
    admitter.close()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    lines = [line for line in text.splitlines() if line.strip()]
    shown = int(os.environ.get("PROFILE_LINES", "60"))
    return (
        f"in-process handler, CPU per GPU admission: {cpu_ms['1']:.3f} ms one at a time, "
        f"{cpu_ms['32']:.3f} ms 32 at a time on one event loop\n"
        f"profile of 32 at a time: {per:.2f} ms per GPU admission (under the profiler)\n"
        + "\n".join(lines[:shown])
    ), cpu_ms


def group_counts(metrics_url: str) -> tuple[float, float]:
    """(ledger transactions, writes) of the webhook's group commit, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, verify=False).text
    totals = {"commits": 0.0, "writes": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gpupool_admission_ledger_commits_total":
                totals["commits"] += sample.value
            elif sample.name == "gpupool_admission_ledger_writes_total":
                totals["writes"] += sample.value
    return totals["commits"], totals["writes"]


# -- main ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Webhook:
    """A webhook process on one store, and what the bench knows of it."""

    store: Store
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def metrics_url(self) -> str:
        return self.url.replace("/mutate", "/metrics")


def start_webhook(url: str, cert: Path, key: Path) -> Webhook:
    port = A.free_port()
    return Webhook(
        store=Store(url),
        proc=A.start_webhook_process(url, cert, key, port),
        url=f"https://127.0.0.1:{port}/mutate",
    )


def load_store(url: str) -> None:
    """The large organisation and its allocations in the (empty) store at ``url``; run
    in a process of its own for PostgreSQL, beside the SQLite store's setup."""
    store = Store(url)
    doc = large_org()
    revisions.apply(store, doc, source="bench")
    seed_allocations(store, doc, 30_000)
    store.close()


def pg_server_url(args: argparse.Namespace) -> tuple[str | None, str]:
    """The PostgreSQL server to measure on, or None and why not."""
    if args.no_pg:
        return None, "--no-pg"
    if args.pg:
        return args.pg, ""
    if args.quick:  # its setup and four runs do not fit in 30 s beside SQLite's
        return None, "--quick measures PostgreSQL only when --pg names a server"
    url = next((os.environ[e] for e in PG_URL_ENVS if os.environ.get(e)), None)
    return url, "" if url else f"no --pg, ${PG_URL_ENVS[0]} or ${PG_URL_ENVS[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (within 30 s)")
    parser.add_argument(
        "--pg",
        metavar="URL",
        help="a PostgreSQL server to measure on too (a fresh database is created there); "
        f"full runs default to ${PG_URL_ENVS[0]}, else ${PG_URL_ENVS[1]}",
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=None, help="per closed-loop run")
    parser.add_argument("--open-seconds", type=int, default=None, help="per open-loop run")
    profile_group = parser.add_mutually_exclusive_group()
    profile_group.add_argument("--profile", action="store_true", help="profile quick runs too")
    profile_group.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    pg_url, pg_skipped = pg_server_url(args)
    with ExitStack() as cleanup:  # the database and the files go whatever happens
        pg_store_url = (
            cleanup.enter_context(fresh_database(pg_url, prefix="gpupool_bench_"))
            if pg_url
            else None
        )
        work = Path(tempfile.mkdtemp(prefix="bench-admission-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        measure(args, work, pg_store_url, pg_skipped)


def measure(
    args: argparse.Namespace, work: Path, pg_store_url: str | None, pg_skipped: str
) -> None:
    """Every run, then the table and the JSON (see the module docstring)."""
    quick = args.quick
    seconds = args.seconds or (1 if quick else 10)
    open_seconds = {  # enough answers for a p99 at each rate
        rate: args.open_seconds
        or (max(2, math.ceil(1.2 * stats.min_samples(0.99) / rate + WARMUP_S)) if quick else 10)
        for rate in OPEN_RATES.values()
    }
    do_profile = args.profile or not (quick or args.no_profile)
    t0 = time.perf_counter()
    doc = large_org()
    cert, key = A.self_signed(work)
    floor_port, lean_port = A.free_port(), A.free_port()
    size_file = work / "floor-size"
    floor = start_floor(size_file, cert, key, floor_port)
    lean = start_floor(size_file, cert, key, lean_port, route="lean")
    floor_url = f"https://127.0.0.1:{floor_port}/mutate"
    lean_url = f"https://127.0.0.1:{lean_port}/mutate"
    hooks: list[Webhook] = []
    results: dict[str, Any] = {}
    outcomes: dict[str, dict[str, int]] = {}
    runs: list[Run] = []
    pg_samples: dict[str, int] = {}
    try:
        # PostgreSQL's store is loaded in a process of its own while this one loads
        # SQLite's (the setup is not measured; --quick must end within 30 s).
        pg_loader = None
        if pg_store_url is not None:
            pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("fork"))
            pg_loader = pool.submit(load_store, pg_store_url)
            pool.shutdown(wait=False)
        sqlite_url = f"sqlite:///{work / 'gpupool.db'}"
        store = Store(sqlite_url)
        revisions.apply(store, doc, source="bench")
        store.close()
        sqlite_hook = start_webhook(sqlite_url, cert, key)  # starts while seeding
        hooks.append(sqlite_hook)
        seed_allocations(sqlite_hook.store, doc, 30_000)
        pg_hook = None
        if pg_loader is not None and pg_store_url is not None:
            pg_loader.result()
            pg_hook = start_webhook(pg_store_url, cert, key)
            hooks.append(pg_hook)
        setup_s = time.perf_counter() - t0
        print(f"[setup] organisation and allocations in {setup_s:.1f} s", flush=True)
        rng = random.Random(7)
        gpu_bodies = reviews(gpu_review(rng, 1), rng, 2000 if quick else 5000, 1000)
        cpu_bodies = reviews(cpu_review(rng, 1), rng, 1000, 1000)
        write_bodies(work / "gpu.jsonl", gpu_bodies)
        write_bodies(work / "cpu.jsonl", cpu_bodies)
        t1 = time.perf_counter()
        probe = gpu_review(rng, 1000)
        for hook in hooks:
            wait_up(hook.url, hook.proc, probe)
        sample = httpx.post(sqlite_hook.url, json=gpu_review(rng, 1000), verify=False).content
        size_file.write_text(str(len(sample)))
        wait_up(floor_url, floor, probe)
        wait_up(lean_url, lean, probe)
        # each webhook warms its policy enforcers in the background
        wait_idle(*(h.proc.pid for h in hooks))
        print(f"[setup] servers up and idle in {time.perf_counter() - t1:.1f} s", flush=True)

        def wrk(
            name: str,
            url: str,
            bodies: str,
            pid: int,
            expect: str,
            *,
            rate: float | None = None,
            connections: int = args.connections,
        ) -> Run:
            wait_idle(*(h.proc.pid for h in hooks), pid, timeout_s=2.0)
            run = run_wrk(
                name,
                url,
                work / bodies,
                seconds=open_seconds[rate] if rate else seconds,
                connections=connections,
                threads=min(args.threads, connections),
                pid=pid,
                expect=expect,
                rate=rate,
            )
            runs.append(run)
            return run

        def gpu_run(name: str, hook: Webhook, **kw: Any) -> Run:
            commits0, writes0 = group_counts(hook.metrics_url)
            run = wrk(name, hook.url, "gpu.jsonl", hook.proc.pid, "patch", **kw)
            commits1, writes1 = group_counts(hook.metrics_url)
            run.mean_group = (writes1 - writes0) / max(1.0, commits1 - commits0)
            outcomes[name] = check_gpu_outcome(hook.store, run, gpu_bodies)
            return run

        # Closed loop. Floor and webhook alternate, so that both see the same noise from
        # the machine's other tenants; the floor figure is the mean of its two runs.
        floor_a = wrk("floor, run 1", floor_url, "gpu.jsonl", floor.pid, "echo")
        cpu_r = wrk(
            "webhook, non-GPU pods", sqlite_hook.url, "cpu.jsonl", sqlite_hook.proc.pid, "allow"
        )
        lean_r = wrk("floor, plain Starlette route", lean_url, "gpu.jsonl", lean.pid, "echo")
        floor_b = wrk("floor, run 2", floor_url, "gpu.jsonl", floor.pid, "echo")
        gpu_r = gpu_run("webhook, GPU pods", sqlite_hook)
        floor_rps = (floor_a.rate + floor_b.rate) / 2
        floor_cpu = (floor_a.cpu_ms + floor_b.cpu_ms) / 2
        # Full runs: the same GPU load at fewer connections: how the p99 follows the
        # number of admissions the API server keeps in flight.
        curve: dict[int, Run] = {}
        for conns in () if quick else CURVE_CONNECTIONS:
            if conns != args.connections:
                curve[conns] = gpu_run(
                    f"webhook, GPU pods, {conns} connections", sqlite_hook, connections=conns
                )

        # Open loop on SQLite, the floor at the same rate just before.
        rate = OPEN_RATES["sqlite"]
        open_floor = wrk(f"floor at {rate}/s", floor_url, "gpu.jsonl", floor.pid, "echo", rate=rate)
        open_gpu = gpu_run(f"webhook, GPU pods, SQLite, {rate}/s", sqlite_hook, rate=rate)

        if pg_hook is not None:
            pg_floor = wrk("floor, beside PostgreSQL", floor_url, "gpu.jsonl", floor.pid, "echo")
            pg_gpu = gpu_run("webhook, GPU pods, PostgreSQL", pg_hook)
            pg_rate = OPEN_RATES["pg"]
            pg_open_floor = wrk(
                f"floor at {pg_rate}/s", floor_url, "gpu.jsonl", floor.pid, "echo", rate=pg_rate
            )
            pg_open = gpu_run(f"webhook, GPU pods, PostgreSQL, {pg_rate}/s", pg_hook, rate=pg_rate)
            pg_samples.update(
                {
                    "pg_p99_ms": pg_gpu.samples,
                    f"open_p99_ms_pg_{pg_rate}": pg_open.samples,
                    f"open_floor_p99_ms_{pg_rate}": pg_open_floor.samples,
                }
            )
            results.update(
                {
                    "pg_admissions_per_s": round(pg_gpu.rate, 1),
                    "pg_p99_ms": round(pg_gpu.p99_ms, 2),
                    "pg_floor_per_s": round(pg_floor.rate, 1),
                    "pg_floor_ratio": round(pg_gpu.rate / pg_floor.rate, 3),
                    "pg_cpu_ms_per_admission": round(pg_gpu.cpu_ms, 3),
                    "pg_mean_group": round(pg_gpu.mean_group or 0, 1),
                    f"open_mean_group_pg_{pg_rate}": round(pg_open.mean_group or 0, 2),
                    f"open_p50_ms_pg_{pg_rate}": round(pg_open.p50_ms, 2),
                    f"open_p99_ms_pg_{pg_rate}": round(pg_open.p99_ms, 2),
                    f"open_rate_pg_{pg_rate}": round(pg_open.rate, 1),
                    f"open_floor_p50_ms_{pg_rate}": round(pg_open_floor.p50_ms, 2),
                    f"open_floor_p99_ms_{pg_rate}": round(pg_open_floor.p99_ms, 2),
                    f"open_floor_rate_{pg_rate}": round(pg_open_floor.rate, 1),
                }
            )
    finally:
        for proc in (floor, lean, *(h.proc for h in hooks)):
            proc.terminate()
            proc.wait()

    answer = json.loads(sample)["response"]
    assert answer["allowed"], answer
    ops = json.loads(base64.b64decode(answer["patch"]))
    profile_text, handler_cpu_ms = (
        profile(sqlite_hook.store, reviews(gpu_review(rng, 1), rng, 1200 if quick else 6000, 1000))
        if do_profile
        else ("", {})
    )
    for hook in hooks:
        hook.store.close()

    print(
        f"setup: large organisation + 30,000 allocations in {setup_s:.1f} s"
        f"{' per store' if len(hooks) > 1 else ''}; response {len(sample)} bytes, patch of "
        f"{len(ops)} operations; wrk -t{args.threads} -c{args.connections}, closed-loop runs "
        f"{seconds} s, open-loop runs "
        + ", ".join(f"{v} s at {k}/s" for k, v in open_seconds.items())
    )
    print(
        f"{'run':40} {'offered':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'samples':>8} "
        f"{'lag p99':>8} {'CPU ms/req':>10} {'group':>6}"
    )
    for r in runs:
        offered = f"{r.offered:8.0f}" if r.offered else f"{'closed':>8}"
        lag = f"{stats.percentile(r.send_lag_ms, 0.99):8.2f}" if r.send_lag_ms else f"{'':8}"
        kept = "" if r.rate_kept else "  (rate not kept)"
        group = f"{r.mean_group:6.1f}" if r.mean_group is not None else f"{'':6}"
        print(
            f"{r.name:40} {offered} {r.rate:8.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
            f"{r.samples:8d} {lag} {r.cpu_ms:10.3f} {group}{kept}"
        )
    print("outcome, every GPU run (answers allowed, reservations, in flight at the stop):")
    for name, o in outcomes.items():
        print(
            f"  {name}: {o['answered_allowed']} answered allowed, {o['reserved']} reserved "
            f"({o['reserved_in_flight_at_stop']} of them in flight at the stop), "
            f"{o['answers_decoded']} answers patched onto their pods and matched"
        )
    # wrk keeps every connection's request in flight, so by Little's law the mean
    # latency is connections / throughput whatever the server does.
    bound_ms = args.connections / max(1.0, gpu_r.rate) * 1000
    print(
        f"closed loop, {args.connections} requests always in flight: mean latency = "
        f"{args.connections} / throughput = {bound_ms:.1f} ms for GPU pods (floor: "
        f"{args.connections / max(1.0, floor_rps) * 1000:.1f} ms); the open-loop runs give "
        "the latency at a rate of pod creations"
    )
    if profile_text:
        print(profile_text)
    # How many answers each percentile of the JSON rests on (a mean of two runs' p99:
    # the smaller run's count).
    samples = {
        "p50_ms": gpu_r.samples,
        "p99_ms": gpu_r.samples,
        "floor_p99_ms": min(floor_a.samples, floor_b.samples),
        "non_gpu_p99_ms": cpu_r.samples,
        "lean_floor_p99_ms": lean_r.samples,
        **{f"gpu_p99_ms_by_connections.{c}": r.samples for c, r in curve.items()},
        f"open_p99_ms_sqlite_{rate}": open_gpu.samples,
        f"open_floor_p99_ms_{rate}": open_floor.samples,
        **pg_samples,
    }
    results = {
        "admissions_per_s": round(gpu_r.rate, 1),
        "p50_ms": round(gpu_r.p50_ms, 2),
        "p99_ms": round(gpu_r.p99_ms, 2),
        "floor_per_s": round(floor_rps, 1),
        "floor_p99_ms": round((floor_a.p99_ms + floor_b.p99_ms) / 2, 2),
        "little_mean_ms": round(bound_ms, 2),
        "floor_ratio": round(gpu_r.rate / floor_rps, 3),
        "non_gpu_per_s": round(cpu_r.rate, 1),
        "non_gpu_p99_ms": round(cpu_r.p99_ms, 2),
        "non_gpu_floor_ratio": round(cpu_r.rate / floor_rps, 3),
        "lean_floor_per_s": round(lean_r.rate, 1),
        "lean_floor_p99_ms": round(lean_r.p99_ms, 2),
        "lean_floor_ratio": round(gpu_r.rate / lean_r.rate, 3),
        "non_gpu_lean_floor_ratio": round(cpu_r.rate / lean_r.rate, 3),
        "cpu_ms_per_admission": round(gpu_r.cpu_ms, 3),
        "floor_cpu_ms": round(floor_cpu, 3),
        "cpu_ratio": round(floor_cpu / gpu_r.cpu_ms, 3),
        "non_gpu_cpu_ratio": round(floor_cpu / cpu_r.cpu_ms, 3),
        "lean_floor_cpu_ms": round(lean_r.cpu_ms, 3),
        "lean_cpu_ratio": round(lean_r.cpu_ms / gpu_r.cpu_ms, 3),
        "non_gpu_lean_cpu_ratio": round(lean_r.cpu_ms / cpu_r.cpu_ms, 3),
        "reserved": outcomes["webhook, GPU pods"]["reserved"],
        "answered_allowed": outcomes["webhook, GPU pods"]["answered_allowed"],
        "mean_group": round(gpu_r.mean_group or 0, 1),
        f"open_mean_group_sqlite_{rate}": round(open_gpu.mean_group or 0, 2),
        "connections": args.connections,
        "gpu_p99_ms_by_connections": {
            str(c): round(r.p99_ms, 2)
            for c, r in sorted({**curve, args.connections: gpu_r}.items())
        },
        f"open_p50_ms_sqlite_{rate}": round(open_gpu.p50_ms, 2),
        f"open_p99_ms_sqlite_{rate}": round(open_gpu.p99_ms, 2),
        f"open_rate_sqlite_{rate}": round(open_gpu.rate, 1),
        f"open_floor_p50_ms_{rate}": round(open_floor.p50_ms, 2),
        f"open_floor_p99_ms_{rate}": round(open_floor.p99_ms, 2),
        f"open_floor_rate_{rate}": round(open_floor.rate, 1),
        **{k: None for k in ("pg_floor_ratio", f"open_p99_ms_pg_{OPEN_RATES['pg']}")},
        **results,
        "open_rates_kept": all(r.rate_kept for r in runs),
        "handler_cpu_ms_by_concurrency": {k: round(v, 3) for k, v in handler_cpu_ms.items()},
        "outcome_checked": True,
        "samples": samples,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
        "seconds": seconds,
        "open_seconds": open_seconds,
        "skipped": {"postgresql": pg_skipped} if pg_skipped else {},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    met = {}
    for k, (op, v) in TARGETS.items():
        got = results.get(k)
        met[k] = None if got is None else (got <= v if op == "<=" else got >= v)
    results["targets_met"] = met
    print(
        "targets: "
        + ", ".join(f"{k} {TARGETS[k][0]} {TARGETS[k][1]:g}: {m}" for k, m in met.items())
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
