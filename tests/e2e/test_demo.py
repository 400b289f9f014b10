"""``gpupool demo`` as README's first command runs it: a process from the ``gpupool``
entry point, on five nodes, with the workload frozen after a while so that the figures
stand still.

While it runs: the URLs come first; the webhook answers (and refuses a caller without
the API server's client certificate); the console draws the overview in headless
Chromium with figures; the quota the console shows is the ledger's, and the ledger's
use is the exporters' slices (plus the slices of pods no node had room for yet);
denials of every kind the workload sends appear, in the record and in the console.
Then Ctrl-C (SIGINT) stops it: exit 0, no process it started left, every port free, the
ledger released everything. A second run with the same seed and a short ``--duration``
stops by itself, as cleanly, having made the same decisions.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from governance import contract, resources, scopes
from governance.storage import ledger, revisions
from governance.storage.store import Store
from simulator import trace
from tests.support import dashboard as sup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TRACE = trace.shared_trace_dir(ROOT) / trace.DEFAULT_POD_LIST
GPUPOOL = Path(sys.executable).with_name("gpupool")
SEED = 1
FREEZE_S = 22
DURATION_S = 300
"""An upper bound: the test stops the first run with Ctrl-C once it has looked."""
NODES = 5
QUOTA_REASONS = {
    contract.Reason.QUEUE_QUOTA_EXCEEDED.value,
    contract.Reason.BORROWING_LIMIT_EXCEEDED.value,
    contract.Reason.DEPARTMENT_QUOTA_EXCEEDED.value,
    contract.Reason.SKU_QUOTA_EXCEEDED.value,
    contract.Reason.POOL_QUOTA_EXCEEDED.value,
    contract.Reason.POOL_CAPACITY_EXCEEDED.value,
}
INTENT_REASONS = {
    "forbidden": {contract.Reason.FORBIDDEN.value},
    "unowned-namespace": {contract.Reason.NAMESPACE_NOT_OWNED.value},
    "sku-not-offered": {contract.Reason.SKU_NOT_OFFERED.value},
    "admit": {contract.Reason.ADMITTED.value, *QUOTA_REASONS},
}

if not GPUPOOL.exists():  # pragma: no cover - the package is always installed for the tests
    pytest.skip(
        f"the gpupool entry point is not installed next to {sys.executable}",
        allow_module_level=True,
    )
if not TRACE.exists():
    pytest.skip(f"the demo replays the Alibaba trace, absent from {TRACE}", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Nothing listens on ``port``, and a server could listen there again (connections
    that the components closed may linger in TIME_WAIT, as after any server)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Run:
    """One ``gpupool demo`` process and what it said."""

    proc: subprocess.Popen[str]
    store_url: str
    workdir: Path
    record: Path
    ports: dict[str, int]
    lines: list[str] = field(default_factory=list)
    children: set[int] = field(default_factory=set)

    def read_until(self, pattern: str, timeout_s: float = 150.0) -> str:
        """Lines of stdout until one matches ``pattern``; that line."""
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"gpupool demo exited ({self.proc.returncode}) before {pattern!r}:\n"
                        + "".join(self.lines)
                    )
                continue
            self.lines.append(line)
            self.children |= descendants(self.proc.pid)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(self.lines))

    def urls(self, name: str) -> list[str]:
        return [
            line.split(": ", 1)[1].strip() for line in self.lines if line.startswith(f"{name}: ")
        ]

    def finish(self, timeout_s: float = 120.0) -> int:
        assert self.proc.stdout is not None
        rest, _ = self.proc.communicate(timeout=timeout_s)
        self.lines.extend(rest.splitlines(keepends=True))
        return self.proc.returncode


def start(tmp: Path, *, duration_s: float, freeze_after_s: float | None = None) -> Run:
    ports = {name: free_port() for name in ("console", "webhook", "api", "reconciler")}
    store_url = f"sqlite:///{tmp / 'demo.db'}"
    args = [
        str(GPUPOOL), "demo", "--duration", str(duration_s), "--nodes", str(NODES),
        "--seed", str(SEED), "--store", store_url, "--scrape-interval", "2",
        "--console-port", str(ports["console"]), "--webhook-port", str(ports["webhook"]),
        "--api-port", str(ports["api"]), "--reconciler-port", str(ports["reconciler"]),
        "--exporter-port", "0", "--workdir", str(tmp / "run"),
        "--record", str(tmp / "record.jsonl"),
    ]  # fmt: skip
    if freeze_after_s is not None:
        args += ["--freeze-after", str(freeze_after_s)]
    proc = subprocess.Popen(
        args,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so that the test can clean up after a failure
    )
    return Run(proc, store_url, tmp / "run", tmp / "record.jsonl", ports)


def stop(run: Run) -> None:
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    if run.proc.stdout is not None:  # else its pipe is closed by the garbage collector,
        run.proc.stdout.close()  # whose ResourceWarning fails whichever test runs then


def decisions(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Seen:
    """The first run, shared by the checks (in file order: while it runs, then after)."""

    run: Run
    exporters: list[str] = field(default_factory=list)
    frozen: bool = False

    def wait_frozen(self) -> None:
        if not self.frozen:
            self.run.read_until(r"\(frozen\)", timeout_s=FREEZE_S + 60)
            self.frozen = True


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seen]:
    tmp = tmp_path_factory.mktemp("demo")
    run = start(tmp, duration_s=DURATION_S, freeze_after_s=FREEZE_S)
    try:
        run.read_until(r"^fleet: ")
        yield Seen(run=run, exporters=run.urls("exporter"))
    finally:
        stop(run)


# -- while it runs ----------------------------------------------------------------------


def test_the_urls_come_first_each_on_its_own_line(seen: Seen) -> None:
    first = [line.split(": ", 1)[0] for line in seen.run.lines if not line.startswith("20")]
    assert first[:2] == ["console", "webhook"]
    assert first[2 : 2 + NODES] == ["exporter"] * NODES
    assert seen.run.urls("console") == [f"http://127.0.0.1:{seen.run.ports['console']}/"]
    assert seen.run.urls("webhook") == [f"https://127.0.0.1:{seen.run.ports['webhook']}/mutate"]
    assert len(set(seen.exporters)) == NODES


def test_the_webhook_answers_the_api_servers_certificate_and_no_one_else(seen: Seen) -> None:
    tls = seen.run.workdir / "tls"
    trust = ssl.create_default_context(cafile=str(tls / "gpupool-demo-webhook-ca.pem"))
    url = seen.run.urls("webhook")[0]
    assert httpx.get(url.replace("/mutate", "/healthz"), verify=trust).status_code == 200
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "probe", "operation": "CREATE", "object": {}},
    }
    anonymous = httpx.post(url, json=review, verify=trust)
    assert anonymous.status_code == 401
    trust.load_cert_chain(str(tls / "kube-apiserver.crt"), str(tls / "kube-apiserver.key"))
    answered = httpx.post(url, json=review, verify=trust)
    assert answered.status_code != 401


def _exporter_use(urls: list[str]) -> dict[str, dict[str, float]]:
    """Per department: GPU memory MiB and compute % of the slices the exporters report,
    and the pods holding them."""
    use: dict[str, dict[str, float]] = {}
    pods: dict[str, set[tuple[str, str]]] = {}
    for url in urls:
        text = httpx.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                dept = labels.get("department", "")
                if sample.name == contract.METRIC_SLICE_MEMORY_LIMIT_BYTES:
                    use.setdefault(dept, Counter())["memory_mib"] += sample.value / 2**20
                    pods.setdefault(dept, set()).add((labels["namespace"], labels["pod"]))
                elif sample.name == contract.METRIC_SLICE_COMPUTE_LIMIT_RATIO:
                    use.setdefault(dept, Counter())["compute_pct"] += sample.value * 100
    for dept, held in pods.items():
        use[dept]["pods"] = len(held)
    return {d: {k: round(v, 3) for k, v in u.items()} for d, u in use.items()}


def _pending_use(run: Run) -> dict[str, dict[str, float]]:
    """The same for the pods waiting for room (Pending in the API stand-in)."""
    answer = httpx.get(
        f"http://127.0.0.1:{run.ports['api']}/api/v1/pods",
        params={"fieldSelector": "status.phase=Pending"},
        timeout=10,
    ).json()
    use: dict[str, dict[str, float]] = {}
    for pod in answer["items"]:
        meta = pod["metadata"]
        dept = meta["labels"][contract.LABEL_DEPARTMENT]
        held = use.setdefault(dept, Counter())
        held["pods"] += 1
        for grant in contract.load_slices(meta["annotations"][contract.ANNOTATION_SLICES]).values():
            held["memory_mib"] += grant.total_memory_mib
            held["compute_pct"] += grant.total_compute_pct
    return use


def _ledger_use(store: Store) -> dict[str, dict[str, float]]:
    use: dict[str, dict[str, float]] = {}
    for alloc in ledger.list_allocations(store, states=[ledger.State.RESERVED, ledger.State.BOUND]):
        held = use.setdefault(alloc.department, Counter())
        held["pods"] += 1
        held["memory_mib"] += alloc.amount.memory_mib
        held["compute_pct"] += alloc.amount.compute_pct
    return use


def _sum(*parts: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    total: dict[str, Counter[str]] = {}
    for part in parts:
        for dept, values in part.items():
            total.setdefault(dept, Counter()).update(values)
    return {d: {k: round(v, 3) for k, v in c.items() if v} for d, c in total.items()}


def test_the_ledgers_use_is_the_exporters_slices_once_the_workload_is_frozen(seen: Seen) -> None:
    seen.wait_frozen()
    store = Store(seen.run.store_url)
    try:

        def agree() -> tuple[dict[str, Any], dict[str, Any]] | None:
            booked = _sum(_ledger_use(store))
            placed = _sum(_exporter_use(seen.exporters), _pending_use(seen.run))
            return None if booked != placed else (booked, placed)

        booked, _placed = wait_for(agree, "the ledger and the exporters to agree", timeout_s=20)
        assert sum(d["pods"] for d in booked.values()) > 10
    finally:
        store.close()


@pytest.mark.browser
@pytest.mark.skipif(not sup.have_chromium(), reason="needs Debian's chromium and chromium-driver")
def test_the_console_draws_the_overview_and_shows_the_ledgers_quota_and_the_denials(
    seen: Seen,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    seen.wait_frozen()
    url = seen.run.urls("console")[0]
    browser = sup.chromium()
    store = Store(seen.run.store_url)
    try:
        browser.get(url)
        wait_for(lambda: "pool capacity" in _text(browser, "#ov-kpis").lower(), "KPIs", 60)
        wait_for(lambda: _loaded(browser), "every figure", 60)
        kpis = _text(browser, "#ov-kpis")
        assert f"{NODES * 8} GPUs" in kpis
        admitted, denied = map(int, re.search(r"(\d+) / (\d+)", kpis.split("DENIALS")[-1]).groups())  # type: ignore[union-attr]
        assert admitted > 0 and denied > 0
        assert browser.find_elements(By.CSS_SELECTOR, "#ov-capacity .bars .point")
        chart = _text(browser, "#ov-admissions")
        reasons = {d["reason"] for d in decisions(seen.run.record) if not d["allowed"]}
        assert reasons and all(reason in chart for reason in reasons), (reasons, chart)

        browser.get(url + "departments")
        select = wait_for(lambda: browser.find_element(By.ID, "dept-select"), "a select", 30)
        names = [
            o.get_attribute("value") for o in Select(select).options if o.get_attribute("value")
        ]
        org = revisions.current_org(store)
        assert org is not None and sorted(names) == sorted(org.departments)
        messages: list[str] = []
        for name in names:
            Select(browser.find_element(By.ID, "dept-select")).select_by_value(name)
            seen_rows: list[tuple[dict[str, str], dict[str, str]]] = []

            def agrees(dept: str = name, seen_rows: list[Any] = seen_rows) -> bool:
                """The console's department row equals the ledger's, both read now: the
                reconciler may still bind or release a pod of the frozen workload between
                two reads, and the console shows the ledger as of its last refresh."""
                queues = _cells(browser, "dept-quota-table", "queue")
                kinds = _cells(browser, "dept-quota-table", "resource")
                used = _cells(browser, "dept-quota-table", "used_text")
                rows = {r: u for q, r, u in zip(queues, kinds, used, strict=True) if q == ""}
                if _text(browser, "#dept-select option:checked") != dept or len(rows) != 3:
                    return False
                expected = ledger.usage(store).get(scopes.department(dept), resources.ZERO)
                wanted = {
                    kind: resources.format_amount(kind, expected.get(kind))
                    for kind in ("slices", "memory_mib", "compute_pct")
                }
                seen_rows.append((rows, wanted))
                return rows == wanted

            try:
                wait_for(agrees, f"{name}'s quota table to show the ledger's use", 30)
            except AssertionError:
                raise AssertionError(
                    f"{name}: the console's quota row never agreed with the ledger; "
                    f"last seen (console, ledger): {seen_rows[-1:]}"
                ) from None
            messages += _cells(browser, "dept-denials-table", "message")
        assert any("may not" in m for m in messages)  # who, what, which rule: an RBAC denial
    finally:
        browser.quit()
        store.close()


def _text(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css))


def _cells(browser: Any, grid: str, column: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        c.text
        for c in browser.find_elements(By.CSS_SELECTOR, f"#{grid} td[data-dash-column='{column}']")
    ]


def _loaded(browser: Any) -> bool:
    from selenium.webdriver.common.by import By

    return not browser.find_elements(By.CSS_SELECTOR, "[data-dash-is-loading='true']")


# -- after it -----------------------------------------------------------------------------


def _left_nothing_behind(run: Run, exporters: list[str]) -> None:
    assert run.children, "the test saw none of the components"
    time.sleep(0.5)
    assert [pid for pid in run.children if alive(pid)] == []
    ports = [*run.ports.values(), *(int(u.rsplit(":", 1)[1].split("/")[0]) for u in exporters)]
    assert [p for p in ports if not port_free(p)] == []
    logs = list((run.workdir / "logs").glob("*.log"))
    assert logs and not [log.name for log in logs if "Traceback" in log.read_text()]
    store = Store(run.store_url)
    try:
        held = ledger.list_allocations(store, states=[ledger.State.RESERVED, ledger.State.BOUND])
        assert held == []  # every pod deleted at the end, every allocation released
        assert ledger.list_allocations(store, limit=1)
    finally:
        store.close()


def test_ctrl_c_stops_everything_it_started_and_keeps_the_store(seen: Seen) -> None:
    run = seen.run
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0, "".join(run.lines)
    assert "stopped; the store is kept" in "".join(run.lines)
    _left_nothing_behind(run, seen.exporters)
    listed = subprocess.run(
        [str(GPUPOOL), "--store", run.store_url, "ledger", "list", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {a["state"] for a in json.loads(listed.stdout)} == {"released"}


def test_denials_of_every_kind_the_workload_sends_appear_with_their_reasons(seen: Seen) -> None:
    made = decisions(seen.run.record)
    by_intent: dict[str, set[str]] = {}
    for decision in made:
        by_intent.setdefault(decision["intent"], set()).add(decision["reason"])
        assert decision["reason"] in INTENT_REASONS[decision["intent"]], decision
        if not decision["allowed"]:
            assert decision["message"].startswith('admission webhook "pods.gpupool.io" denied')
    assert set(by_intent) == set(INTENT_REASONS), by_intent  # seed 1 sends every kind early
    assert by_intent["admit"] & QUOTA_REASONS, "no pod was refused for quota or capacity"


def test_the_same_seed_makes_the_same_decisions_and_duration_ends_the_run_cleanly(
    seen: Seen, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first = decisions(seen.run.record)
    again = start(tmp_path_factory.mktemp("again"), duration_s=8)
    try:
        again.read_until(r"^fleet: ")
        assert again.finish(timeout_s=150) == 0, "".join(again.lines)
    finally:
        stop(again)
    _left_nothing_behind(again, again.urls("exporter"))
    second = decisions(again.record)
    common = min(len(first), len(second))
    assert common >= 40, (len(first), len(second))
    assert second[:common] == first[:common]
