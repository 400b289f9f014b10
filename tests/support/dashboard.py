"""Builders for the console's tests and benchmark: an organisation, a fleet of GPUs
with slices on them, the exporter text those GPUs would produce, and a ledger.

* :func:`make_org` — departments with two queues each, three pools, role bindings:
  ``group:platform`` is platform-admin, ``group:<dept>-admins`` dept-admin of <dept>,
  ``user:<dept>-viewer`` viewer of <dept>.
* :func:`make_fleet` — nodes of 8 GPUs filled with slices of the pools' SKUs; a
  quarter of the slices idle. Deterministic for a seed.
* :func:`exposition` — the exporter's ``/metrics`` text for some nodes (rendered by
  prometheus_client, the way the exporter renders it).
* :func:`openmetrics` — the same series at several instants, for
  ``promtool tsdb create-blocks-from openmetrics``.
* :func:`seed_ledger` — the fleet's pods as ledger allocations (through
  ``ledger.reserve`` and ``ledger.bind``, or in bulk for large fleets), plus denials.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dashboard.access import ProxyHeaders, Trust
from dashboard.direct import DirectSource
from dashboard.model import SliceSample
from dashboard.shared import Console
from dashboard.sources import Source
from governance import contract
from governance.model import Department, Org, Pool, Queue, Quota, RoleBinding, Sku
from governance.quotas import Demand
from governance.resources import Limits
from governance.storage import ledger
from governance.storage.store import Store

GIB = 1024**3
MIB = 1024**2
NICE_NAMES = (
    "vision",
    "nlp",
    "speech",
    "recsys",
    "robotics",
    "fraud",
    "search",
    "genomics",
    "ads",
    "forecasting",
    "safety",
    "maps",
)


def department_names(n: int) -> list[str]:
    names = list(NICE_NAMES[:n])
    names += [f"team-{i:03d}" for i in range(len(names), n)]
    return names


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    name: str
    model: str
    memory_gib: int
    share: float
    skus: tuple[tuple[str, int, int], ...]
    """(name, memory GiB per GPU, compute percent)."""


POOLS = (
    PoolSpec(
        name="a100",
        model="NVIDIA A100-SXM4-80GB",
        memory_gib=80,
        share=0.5,
        skus=(("a100-1g", 10, 15), ("a100-half", 40, 50), ("a100-whole", 80, 100)),
    ),
    PoolSpec(
        name="h100",
        model="NVIDIA H100 80GB HBM3",
        memory_gib=80,
        share=0.33,
        skus=(("h100-quarter", 20, 25), ("h100-whole", 80, 100)),
    ),
    PoolSpec(
        name="l40s",
        model="NVIDIA L40S",
        memory_gib=48,
        share=0.17,
        skus=(("l40s-half", 24, 50), ("l40s-whole", 48, 100)),
    ),
)


def make_org(departments: int = 4, gpus: int = 64, *, quota_fraction: float = 1.0) -> Org:
    """``departments`` departments sharing ``gpus`` GPUs across three pools."""
    pools = []
    for spec in POOLS:
        n = max(8, round(gpus * spec.share / 8) * 8)
        pools.append(
            Pool(
                name=spec.name,
                vendor="nvidia",
                model=spec.model,
                backend="hami",
                gpus=n,
                memory_mib_per_gpu=spec.memory_gib * 1024,
                memory_oversubscription=1.5 if spec.name == "a100" else 1.0,
                compute_oversubscription=1.5 if spec.name == "a100" else 1.0,
            )
        )
    skus = [
        Sku(name=name, compute_pct=pct, memory_mib=mem * 1024, pools=(spec.name,))
        for spec in POOLS
        for name, mem, pct in spec.skus
    ]
    names = department_names(departments)
    total_slices = gpus * 3
    per_dept = max(4, int(total_slices * quota_fraction / max(1, departments) * 2))
    depts = []
    queues = []
    bindings = [RoleBinding(role="platform-admin", department="*", subjects=("group:platform",))]
    for i, name in enumerate(names):
        depts.append(
            Department(
                name=name,
                namespaces=(name, f"{name}-*"),
                default_queue="train",
                quota=Quota(total=Limits.of(slices=per_dept)),
            )
        )
        pool = POOLS[i % len(POOLS)].name
        queues.append(
            Queue(
                name="train",
                department=name,
                pool=pool,
                nominal=Quota(total=Limits.of(slices=max(2, per_dept // 3))),
            )
        )
        queues.append(Queue(name="infer", department=name, pool=pool))
        bindings.append(
            RoleBinding(role="dept-admin", department=name, subjects=(f"group:{name}-admins",))
        )
        bindings.append(
            RoleBinding(role="viewer", department=name, subjects=(f"user:{name}-viewer",))
        )
    return Org(
        skus={s.name: s for s in skus},
        pools={p.name: p for p in pools},
        departments={d.name: d for d in depts},
        queues={(q.department, q.name): q for q in queues},
        role_bindings=tuple(bindings),
    )


@dataclass(frozen=True, kw_only=True)
class FleetGpu:
    hostname: str
    index: int
    uuid: str
    model: str
    memory_bytes: float
    pool: str


@dataclass(frozen=True, kw_only=True)
class Fleet:
    gpus: tuple[FleetGpu, ...]
    slices: tuple[SliceSample, ...]

    @property
    def hostnames(self) -> list[str]:
        return sorted({g.hostname for g in self.gpus})

    def on_hosts(self, hosts: Iterable[str]) -> Fleet:
        wanted = set(hosts)
        return Fleet(
            gpus=tuple(g for g in self.gpus if g.hostname in wanted),
            slices=tuple(s for s in self.slices if s.hostname in wanted),
        )

    def at(self, factor: float) -> Fleet:
        """The fleet with every slice's use scaled by ``factor`` (history)."""
        return Fleet(
            gpus=self.gpus,
            slices=tuple(
                replace(
                    s,
                    compute_used_ratio=min(1.0, s.compute_used_ratio * factor),
                    memory_used_bytes=s.memory_used_bytes * min(1.0, factor),
                )
                for s in self.slices
            ),
        )


def make_fleet(org: Org, *, seed: int = 7, idle_share: float = 0.25) -> Fleet:
    rng = random.Random(seed)
    departments = sorted(org.departments)
    weights = [1.0 / (1 + i % 7) for i in range(len(departments))]
    gpus: list[FleetGpu] = []
    slices: list[SliceSample] = []
    serial = 0
    for spec in POOLS:
        pool = org.pools.get(spec.name)
        if pool is None:
            continue
        for n in range(pool.gpus):
            host = f"{spec.name}-node-{n // 8 + 1:03d}"
            uuid = f"GPU-{spec.name}-{n // 8 + 1:03d}-{n % 8}"
            gpus.append(
                FleetGpu(
                    hostname=host,
                    index=n % 8,
                    uuid=uuid,
                    model=spec.model,
                    memory_bytes=spec.memory_gib * GIB,
                    pool=spec.name,
                )
            )
            target = rng.uniform(0.35, 1.0)
            used_pct = 0
            while True:
                name, mem_gib, pct = rng.choice(spec.skus)
                if used_pct + pct > 100 or used_pct >= target * 100:
                    break
                used_pct += pct
                dept = rng.choices(departments, weights)[0]
                queue = "train" if rng.random() < 0.7 else "infer"
                idle = rng.random() < idle_share
                busy = rng.uniform(0.0, 0.03) if idle else rng.uniform(0.3, 1.0)
                serial += 1
                slices.append(
                    SliceSample(
                        namespace=dept,
                        pod=f"{dept}-{queue}-{serial:05d}",
                        container="main",
                        department=dept,
                        queue=queue,
                        sku=name,
                        uuid=uuid,
                        hostname=host,
                        memory_used_bytes=round(mem_gib * GIB * (0.1 if idle else busy)),
                        memory_limit_bytes=float(mem_gib * GIB),
                        compute_used_ratio=round(pct / 100.0 * busy, 4),
                        compute_limit_ratio=pct / 100.0,
                        processes=0.0 if idle and rng.random() < 0.5 else 1.0,
                    )
                )
    return Fleet(gpus=tuple(gpus), slices=tuple(slices))


# -- exporter text ---------------------------------------------------------------------


class _FleetCollector(Collector):
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from families(self.fleet)


def families(fleet: Fleet) -> list[GaugeMetricFamily]:
    dcgm_labels = list(contract.DCGM_LABELS)
    util = GaugeMetricFamily(
        contract.DCGM_FI_DEV_GPU_UTIL, "GPU utilization (in %).", labels=dcgm_labels
    )
    fb_used = GaugeMetricFamily(
        contract.DCGM_FI_DEV_FB_USED, "Framebuffer memory used (in MiB).", labels=dcgm_labels
    )
    fb_free = GaugeMetricFamily(
        contract.DCGM_FI_DEV_FB_FREE, "Framebuffer memory free (in MiB).", labels=dcgm_labels
    )
    alloc_labels = [contract.DCGM_LABEL_GPU, contract.DCGM_LABEL_UUID, contract.DCGM_LABEL_HOSTNAME]
    a_mem = GaugeMetricFamily(
        contract.METRIC_GPU_ALLOCATED_MEMORY_BYTES, "Allocated memory.", labels=alloc_labels
    )
    a_comp = GaugeMetricFamily(
        contract.METRIC_GPU_ALLOCATED_COMPUTE_RATIO, "Allocated compute.", labels=alloc_labels
    )
    a_n = GaugeMetricFamily(
        contract.METRIC_GPU_ALLOCATED_SLICES, "Allocated slices.", labels=alloc_labels
    )
    slice_labels = list(contract.SLICE_LABELS)
    s_used = GaugeMetricFamily(
        contract.METRIC_SLICE_MEMORY_USED_BYTES, "Slice memory used.", labels=slice_labels
    )
    s_limit = GaugeMetricFamily(
        contract.METRIC_SLICE_MEMORY_LIMIT_BYTES, "Slice memory limit.", labels=slice_labels
    )
    s_util = GaugeMetricFamily(
        contract.METRIC_SLICE_COMPUTE_UTILIZATION_RATIO, "Slice utilisation.", labels=slice_labels
    )
    s_climit = GaugeMetricFamily(
        contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO, "Slice compute limit.", labels=slice_labels
    )
    s_procs = GaugeMetricFamily(
        contract.METRIC_SLICE_PROCESSES, "Slice processes.", labels=slice_labels
    )
    by_gpu: dict[str, list[SliceSample]] = {}
    for s in fleet.slices:
        by_gpu.setdefault(s.uuid, []).append(s)
    for g in fleet.gpus:
        on = by_gpu.get(g.uuid, [])
        used_mib = sum(s.memory_used_bytes for s in on) / MIB
        total_mib = g.memory_bytes / MIB
        labels = [str(g.index), g.uuid, f"nvidia{g.index}", g.model, g.hostname]
        util.add_metric(labels, round(min(100.0, 100 * sum(s.compute_used_ratio for s in on))))
        fb_used.add_metric(labels, round(used_mib))
        fb_free.add_metric(labels, round(total_mib - used_mib))
        alabels = [str(g.index), g.uuid, g.hostname]
        a_mem.add_metric(alabels, sum(s.memory_limit_bytes or 0.0 for s in on))
        a_comp.add_metric(alabels, round(sum(s.compute_limit_ratio or 0.0 for s in on), 4))
        a_n.add_metric(alabels, len(on))
    for s in fleet.slices:
        labels = [s.namespace, s.pod, s.container, s.department, s.queue, s.sku, s.uuid, s.hostname]
        s_used.add_metric(labels, s.memory_used_bytes)
        if s.memory_limit_bytes is not None:
            s_limit.add_metric(labels, s.memory_limit_bytes)
        s_util.add_metric(labels, s.compute_used_ratio)
        if s.compute_limit_ratio is not None:
            s_climit.add_metric(labels, s.compute_limit_ratio)
        s_procs.add_metric(labels, s.processes)
    return [util, fb_used, fb_free, a_mem, a_comp, a_n, s_used, s_limit, s_util, s_climit, s_procs]


def exposition(fleet: Fleet) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FleetCollector(fleet))
    return generate_latest(registry).decode()


def recorded_families(fleet: Fleet) -> list[GaugeMetricFamily]:
    """The series ``dashboard/recording-rules.yaml`` would record for the fleet,
    computed with the direct source's aggregation (the integration tests check that
    the rules and this aggregation agree)."""
    from dashboard import model, queries
    from dashboard.direct import scoped_gpus

    rows = model.usage_rows(fleet.slices)
    out = []
    value_of = {
        "slices": lambda r: r.slices,
        "memory_limit": lambda r: r.memory_limit_bytes,
        "memory_used": lambda r: r.memory_used_bytes,
        "compute_limit": lambda r: r.compute_limit_ratio,
        "compute_used": lambda r: r.compute_used_ratio,
        "idle_slices": lambda r: r.idle_slices,
        "idle_memory": lambda r: r.idle_memory_bytes,
        "idle_compute": lambda r: r.idle_compute_ratio,
    }
    for rule in queries.QUEUE_RULES:
        fam = GaugeMetricFamily(rule.record, "recorded", labels=["department", "queue", "sku"])
        for r in rows:
            if rule.key.startswith("idle") and r.idle_slices == 0:
                continue  # count/sum over an empty filter records nothing
            fam.add_metric([r.department, r.queue, r.sku], value_of[rule.key](r))
        out.append(fam)
    per_dept: dict[str, list[SliceSample]] = {}
    for s in fleet.slices:
        per_dept.setdefault(s.department, []).append(s)
    gpu_value = {
        "slices": lambda g: g.slices,
        "memory_limit": lambda g: g.memory_limit_bytes,
        "memory_used": lambda g: g.memory_used_bytes,
        "compute_limit": lambda g: g.compute_limit_ratio,
        "compute_used": lambda g: g.compute_used_ratio,
    }
    for rule in queries.GPU_RULES:
        fam = GaugeMetricFamily(rule.record, "recorded", labels=["department", "UUID", "Hostname"])
        for dept, items in sorted(per_dept.items()):
            for g in scoped_gpus(items):
                fam.add_metric([dept, g.uuid, g.hostname], gpu_value[rule.key](g))
        out.append(fam)
    for rule in queries.DEPARTMENT_RULES:
        fam = GaugeMetricFamily(rule.record, "recorded", labels=["department"])
        for r in model.per_department(rows):
            fam.add_metric([r.department], value_of[rule.key](r))
        out.append(fam)
    idle = GaugeMetricFamily(
        queries.IDLE_SLICE_RULE.record, "recorded", labels=list(contract.SLICE_LABELS)
    )
    for s in fleet.slices:
        if s.idle and s.memory_limit_bytes is not None:
            idle.add_metric(
                [s.namespace, s.pod, s.container, s.department, s.queue, s.sku, s.uuid, s.hostname],
                s.memory_limit_bytes,
            )
    out.append(idle)
    return out


def openmetrics(fleet: Fleet, instants: Sequence[datetime], *, recorded: bool = False) -> str:
    """OpenMetrics text of the fleet at each instant (use varies with a slow wave),
    for ``promtool tsdb create-blocks-from openmetrics``; with ``recorded``, also the
    series the recording rules would have recorded."""
    lines: list[str] = []
    per_family: dict[str, list[str]] = {}
    for i, at in enumerate(instants):
        factor = 0.75 + 0.25 * math.sin(i / 3.0)
        ts = f"{at.timestamp():.3f}"
        now_fleet = fleet.at(factor)
        extra = recorded_families(now_fleet) if recorded else []
        for fam in [*families(now_fleet), *extra]:
            out = per_family.setdefault(fam.name, [])
            for sample in fam.samples:
                labels = ",".join(
                    f'{k}="{_om_escape(v)}"' for k, v in sorted(sample.labels.items())
                )
                out.append(f"{sample.name}{{{labels}}} {sample.value} {ts}")
    for name, samples in per_family.items():
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- ledger ----------------------------------------------------------------------------


def pods_of(fleet: Fleet) -> dict[tuple[str, str], list[SliceSample]]:
    pods: dict[tuple[str, str], list[SliceSample]] = {}
    for s in fleet.slices:
        pods.setdefault((s.namespace, s.pod), []).append(s)
    return pods


def seed_ledger(
    store: Store,
    org: Org,
    fleet: Fleet,
    *,
    now: datetime | None = None,
    denials_per_department: int = 2,
    bulk: bool = False,
) -> int:
    """Record the fleet's pods in the ledger and some denials; returns allocations."""
    now = now or datetime.now(UTC)
    sku_pool = {s.name: s.pools[0] for s in org.skus.values()}
    count = 0
    rows = []
    for (namespace, pod), items in sorted(pods_of(fleet).items()):
        first = items[0]
        sku = org.skus[first.sku]
        pool = org.pools[sku_pool[first.sku]]
        demand = Demand(
            department=first.department,
            queue=first.queue,
            sku=first.sku,
            pool=pool.name,
            amount=sku.demand(len(items), pool),
        )
        grant = contract.SliceGrant(
            count=len(items),
            memory_mib=sku.memory_mib_on(pool),
            compute_pct=sku.compute_pct,
            backend=pool.backend,
            pool=pool.name,
            sku=sku.name,
        )
        created = now - timedelta(minutes=5 + count % 50)
        count += 1
        if bulk:
            rows.append((demand, grant, namespace, pod, created))
            continue
        res = ledger.reserve(
            store,
            org,
            demand=demand,
            request_uid=f"req-{namespace}-{pod}",
            namespace=namespace,
            grants={"main": grant},
            subject=f"system:serviceaccount:{namespace}:runner",
            pod_name=pod,
            now=created,
        )
        if res.allocation is not None:
            ledger.bind(store, res.allocation.id, pod_uid=f"uid-{pod}", now=created)
    if bulk:
        _bulk_insert(store, rows)
    for i, dept in enumerate(sorted(org.departments)):
        for j in range(denials_per_department):
            ledger.record_denial(
                store,
                ledger.Denial(
                    at=now - timedelta(minutes=3 + i % 20 + j),
                    namespace=dept,
                    department=dept,
                    queue="train",
                    sku="a100-whole",
                    subject=f"user:{dept}-dev{j}",
                    reason=contract.Reason.QUEUE_QUOTA_EXCEEDED.value,
                    message=(
                        f"queue {dept}/train: slices limit 4, in use 4, requested 1 more. "
                        "Wait for a running pod to end, or ask a dept-admin to raise the quota."
                    ),
                ),
            )
    return count


def _bulk_insert(
    store: Store, rows: Sequence[tuple[Demand, contract.SliceGrant, str, str, datetime]]
) -> None:
    """Many allocations in one transaction (a benchmark's fleet), usage rebuilt after."""
    from governance.storage import schema

    values = []
    for i, (demand, grant, namespace, pod, created) in enumerate(rows):
        values.append(
            {
                "id": f"alloc-bench-{i:06d}",
                "request_uid": f"req-bench-{i:06d}",
                "state": ledger.State.BOUND.value,
                "namespace": namespace,
                "pod_name": pod,
                "pod_uid": f"uid-{i}",
                "department": demand.department,
                "queue": demand.queue,
                "sku": demand.sku,
                "pool": demand.pool,
                "slices": demand.amount.slices,
                "memory_mib": demand.amount.memory_mib,
                "compute_pct": demand.amount.compute_pct,
                "borrowed_slices": 0,
                "borrowed_memory_mib": 0,
                "borrowed_compute_pct": 0,
                "subject": "",
                "grants": {"main": asdict(grant)},
                "created_at": created,
                "expires_at": created + timedelta(minutes=10),
                "bound_at": created,
                "ended_at": None,
            }
        )
    with store.write() as conn:
        conn.execute(schema.allocations.insert(), values)
    ledger.rebuild_usage(store)


@contextmanager
def exporter_server(text: str) -> Iterator[str]:
    """An HTTP server on loopback answering every GET with ``text`` (an exporter's
    ``/metrics``); yields its base URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = text.encode()

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CONSOLE_CODE = "import sys; from dashboard.cli import dashboard; dashboard(sys.argv[1:])"
"""``gpupool dashboard`` in a process of its own (args after the code)."""


@contextmanager
def console_process(*args: str, timeout_s: float = 60.0) -> Iterator[tuple[str, Any]]:
    """``gpupool dashboard ARGS --host 127.0.0.1 --port P`` as a process (gunicorn, as
    in production), once it answers /healthz; yields (its URL, the process)."""
    import os
    import sys

    import httpx

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", CONSOLE_CODE, *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                out = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"the console exited: {out}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the console did not answer /healthz within {timeout_s} s")
            time.sleep(0.2)
        yield url, process
    finally:
        stop_process(process)
        if process.stdout:
            process.stdout.close()


# -- a real Prometheus loaded with known data -------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_prometheus(
    workdir: Path,
    openmetrics_text: str,
    *,
    rules: Path | None = None,
    timeout_s: float = 30.0,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Backfill ``openmetrics_text`` with promtool into ``workdir`` and start Prometheus
    on a free loopback port over it; returns (base URL, process). The caller stops it
    with :func:`stop_prometheus`. Raises RuntimeError (with Prometheus's log) if it
    does not become ready within ``timeout_s``."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    source = workdir / "series.om"
    source.write_text(openmetrics_text)
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
    config = workdir / "prometheus.yml"
    lines = ["global:", "  scrape_interval: 15s", "  evaluation_interval: 1s"]
    if rules is not None:
        lines += ["rule_files:", f"  - {rules}"]
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    import httpx

    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_prometheus(process)
    raise RuntimeError(
        f"Prometheus did not become ready in {timeout_s}s: "
        + (workdir / "prometheus.log").read_text()[-2000:]
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


stop_prometheus = stop_process


PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def prometheus_missing() -> str | None:
    """Why the Prometheus tests cannot run here, or None."""
    for binary in (PROMETHEUS, PROMTOOL):
        if not shutil.which(binary):
            return f"{binary} is not installed (Debian package prometheus)"
    return None


def instants(now: datetime, count: int, step_s: float) -> list[datetime]:
    """``count`` instants ``step_s`` apart, the last one ``step_s / 2`` before now."""
    return [now - timedelta(seconds=step_s * (count - i) - step_s / 2) for i in range(count)]


# -- a console over a fleet -------------------------------------------------------------

PLATFORM_ADMIN = {"X-Forwarded-User": "pat", "X-Forwarded-Groups": "platform"}


def callback_body(
    outputs: Sequence[tuple[str, str]], inputs: Sequence[tuple[str, str, Any]]
) -> dict[str, Any]:
    """The JSON Dash's renderer posts to /_dash-update-component for the callback with
    these (id, property) outputs, fired by a change of its first input."""
    return {
        "output": (
            f"{outputs[0][0]}.{outputs[0][1]}"
            if len(outputs) == 1
            else ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".."
        ),
        "outputs": (
            {"id": outputs[0][0], "property": outputs[0][1]}
            if len(outputs) == 1
            else [{"id": i, "property": p} for i, p in outputs]
        ),
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": [f"{inputs[0][0]}.{inputs[0][1]}"],
        "state": [],
    }


def dept_admin(department: str) -> dict[str, str]:
    return {"X-Forwarded-User": f"{department}-lead", "X-Forwarded-Groups": f"{department}-admins"}


def make_console(
    store: Store,
    org: Org | None,
    source: Source,
    *,
    trust: Trust | None = None,
) -> Console:
    from governance import rbac

    bindings = org.role_bindings if org is not None else ()
    authorizer = rbac.Policy.compile(bindings)
    return Console(
        source=source,
        store=store,
        org=lambda: org,
        authorizer=lambda: authorizer,
        trust=trust or ProxyHeaders(),
    )


def direct_source(fleet: Fleet) -> DirectSource:
    """A direct source whose one 'exporter' answers with the fleet's text (the HTTP
    boundary replaced; the integration tests scrape over real HTTP)."""
    text = exposition(fleet)
    return DirectSource(["http://fleet.test:9400"], fetch=lambda _: text)


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def have_chromium() -> bool:
    import os

    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def chromium(*, console_log: bool = False) -> Any:
    """Debian's headless Chromium through chromedriver, with the flags this closed
    network needs (no background networking, no component updates, no sync)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1800",
    ):
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    return driver
