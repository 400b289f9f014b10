"""PromQL against a real Prometheus loaded with known data, and the recording rules
through promtool. The Prometheus source must agree with the direct source on the
same fleet, for the whole fleet and for one department."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboard import queries, views
from dashboard.direct import DirectSource
from dashboard.model import GPU_MEASURES, gpu_order
from dashboard.prometheus import PrometheusSource
from dashboard.sources import SourceUnavailable
from tests.support import dashboard as sup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.prometheus,
    pytest.mark.skipif(sup.prometheus_missing() is not None, reason=str(sup.prometheus_missing())),
]

RULES = Path(queries.__file__).with_name("recording-rules.yaml")
POINTS = 12
STEP_S = 60.0
DEPT = "vision"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, sup.Fleet, datetime]]:
    org = sup.make_org(4, 32)
    fleet = sup.make_fleet(org)
    now = datetime.now(UTC)
    workdir = tmp_path_factory.mktemp("prometheus")
    # The same rules, evaluated every second so that the test need not wait 30 s.
    fast = yaml.safe_load(RULES.read_text())
    fast["groups"][0]["interval"] = "1s"
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump(fast))
    url, process = sup.start_prometheus(
        workdir, sup.openmetrics(fleet, sup.instants(now, POINTS, STEP_S)), rules=rules
    )
    try:
        yield url, fleet, now
    finally:
        sup.stop_prometheus(process)


@pytest.fixture
def prom(loaded: tuple[str, sup.Fleet, datetime]) -> Iterator[Callable[..., PrometheusSource]]:
    """PrometheusSource(url, **kw) for the loaded Prometheus; closed after the test."""
    made: list[PrometheusSource] = []

    def make(**kw: Any) -> PrometheusSource:
        made.append(PrometheusSource(loaded[0], **kw))
        return made[-1]

    yield make
    for source in made:
        source.close()


def latest(fleet: sup.Fleet) -> DirectSource:
    """The direct source over the fleet as it was at the last backfilled instant."""
    return sup.direct_source(fleet.at(0.75 + 0.25 * math.sin((POINTS - 1) / 3.0)))


@pytest.mark.parametrize("scope", [None, frozenset([DEPT])], ids=["fleet", "department"])
def test_usage_from_promql_equals_the_direct_aggregation(
    prom: Callable[..., PrometheusSource],
    loaded: tuple[str, sup.Fleet, datetime],
    scope: frozenset[str] | None,
) -> None:
    _, fleet, _ = loaded
    got = prom(recording_rules=False).usage(scope)
    want = latest(fleet).usage(scope)
    assert [(r.department, r.queue, r.sku, r.slices, r.idle_slices) for r in got] == [
        (r.department, r.queue, r.sku, r.slices, r.idle_slices) for r in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g.memory_limit_bytes == pytest.approx(w.memory_limit_bytes)
        assert g.memory_used_bytes == pytest.approx(w.memory_used_bytes)
        assert g.compute_used_ratio == pytest.approx(w.compute_used_ratio)
        assert g.idle_memory_bytes == pytest.approx(w.idle_memory_bytes)
    if scope is not None:
        assert {r.department for r in got} == {DEPT}


@pytest.mark.parametrize("scope", [None, frozenset([DEPT])], ids=["fleet", "department"])
def test_gpus_from_promql_equal_the_direct_source(
    prom: Callable[..., PrometheusSource],
    loaded: tuple[str, sup.Fleet, datetime],
    scope: frozenset[str] | None,
) -> None:
    _, fleet, _ = loaded
    got = prom(recording_rules=False).gpus(scope)
    want = latest(fleet).gpus(scope)
    assert [(g.hostname, g.gpu, g.uuid, g.model, g.slices) for g in got] == [
        (g.hostname, g.gpu, g.uuid, g.model, g.slices) for g in want
    ]
    # a department's GPUs too are named by their index and model, in node-index order
    assert all(g.gpu.isdigit() and g.model for g in got)
    assert [gpu_order(g) for g in got] == sorted(gpu_order(g) for g in got)
    for g, w in zip(got, want, strict=True):
        assert g.compute_limit_ratio == pytest.approx(w.compute_limit_ratio)
        assert g.memory_used_bytes == pytest.approx(w.memory_used_bytes)
        assert g.util_pct == (pytest.approx(w.util_pct) if w.util_pct is not None else None)


@pytest.mark.parametrize("scope", [None, frozenset([DEPT])], ids=["fleet", "department"])
def test_gpus_read_by_figure_and_by_uuid_agree_with_the_whole_read(
    prom: Callable[..., PrometheusSource],
    loaded: tuple[str, sup.Fleet, datetime],
    scope: frozenset[str] | None,
) -> None:
    source = prom(recording_rules=False)
    whole = source.gpus(scope)
    keys = [(g.hostname, g.uuid) for g in whole]
    for measure in GPU_MEASURES:
        part = source.gpus(scope, measures={measure})
        assert [(g.hostname, g.uuid) for g in part] == keys, measure  # the same GPUs
        for fields in views.GPU_ROW_FIELDS[measure]:
            assert [getattr(g, fields) for g in part] == [getattr(g, fields) for g in whole]
    some = {g.uuid for g in whole[1:30:7]}
    picked = source.gpus(scope, uuids=some)
    assert picked == [g for g in whole if g.uuid in some]
    assert source.gpus(scope, uuids=set()) == []
    assert source.gpus(scope, uuids={'GPU-"}.*'}) == []  # matched literally, not as PromQL


def test_waste_and_slices_on_a_gpu_match_and_stay_in_scope(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    _, fleet, _ = loaded
    prom = prom(recording_rules=False)
    direct = latest(fleet)
    mine = frozenset([DEPT])
    assert [(s.pod, s.uuid) for s in prom.waste(mine, 5)] == [
        (s.pod, s.uuid) for s in direct.waste(mine, 5)
    ]
    assert all(s.department == DEPT for s in prom.waste(mine, 50))
    shared = next(
        s.uuid
        for s in fleet.slices
        if s.department != DEPT
        and any(t.uuid == s.uuid and t.department == DEPT for t in fleet.slices)
    )
    on = prom.slices_on(shared, mine)
    assert on and {s.department for s in on} == {DEPT}
    assert len(prom.slices_on(shared, None)) > len(on)


def test_history_has_one_point_per_step(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    _, fleet, now = loaded
    points = prom(recording_rules=False).history(
        None, now - timedelta(seconds=POINTS * STEP_S), now, STEP_S
    )
    assert POINTS - 1 <= len(points) <= POINTS + 1
    assert len({round(p.compute_used_ratio, 6) for p in points}) > 1  # use varies
    allocated = sum(s.compute_limit_ratio or 0 for s in fleet.slices)
    assert points[-1].compute_limit_ratio == pytest.approx(allocated)


def test_recorded_series_give_the_same_answers(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    _ = loaded
    raw = prom(recording_rules=False)
    recorded = prom(recording_rules=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(recorded.usage(None)) < len(raw.usage(None)):
        time.sleep(0.5)
    mine = frozenset([DEPT])
    for scope in (None, mine):
        got, want = recorded.usage(scope), raw.usage(scope)
        assert [(r.department, r.queue, r.sku, r.slices) for r in got] == [
            (r.department, r.queue, r.sku, r.slices) for r in want
        ]
        for g, w in zip(got, want, strict=True):
            assert g.memory_used_bytes == pytest.approx(w.memory_used_bytes, rel=0.3)
    assert [(g.uuid, g.gpu, g.model) for g in recorded.gpus(mine)] == [
        (g.uuid, g.gpu, g.model) for g in raw.gpus(mine)
    ]
    for scope in (None, mine):
        got_waste = [s.wasted_memory_bytes for s in recorded.waste(scope, 10)]
        assert got_waste == [s.wasted_memory_bytes for s in raw.waste(scope, 10)]
        assert all(s.department == DEPT for s in recorded.waste(mine, 50))


def test_prometheus_down_is_source_unavailable() -> None:
    source = PrometheusSource(f"http://127.0.0.1:{sup.free_port()}", timeout_s=1.0)
    try:
        with pytest.raises(SourceUnavailable, match="cannot reach Prometheus"):
            source.usage(None)
    finally:
        source.close()


def test_promtool_accepts_the_rules_file() -> None:
    result = subprocess.run(
        [sup.PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries.RULES)} rules found" in result.stdout


def test_promtool_unit_tests_the_idle_and_usage_rules(tmp_path: Path) -> None:
    labels = (
        'namespace="ml",pod="p{n}",container="main",department="ml",queue="train",sku="s",'
        'UUID="GPU-1",Hostname="h"'
    )
    series = []
    for n, (util, limit, mem) in enumerate([(0.0, 0.5, 40), (0.3, 0.5, 40), (0.01, 0.25, 20)]):
        lab = labels.format(n=n)
        series += [
            {"series": f"gpupool_slice_compute_utilization_ratio{{{lab}}}", "values": f"{util}x3"},
            {"series": f"gpupool_slice_compute_limit_ratio{{{lab}}}", "values": f"{limit}x3"},
            {"series": f"gpupool_slice_memory_limit_bytes{{{lab}}}", "values": f"{mem}x3"},
            {"series": f"gpupool_slice_memory_used_bytes{{{lab}}}", "values": f"{mem // 4}x3"},
        ]
    group = '{department="ml", queue="train", sku="s"}'
    per_gpu = '{department="ml", UUID="GPU-1", Hostname="h"}'
    idle_mem = "department_queue_sku:gpupool_slice_idle_memory_limit_bytes:sum"
    count = "department_queue_sku:gpupool_slice_memory_limit_bytes:count"
    used = "department_uuid_hostname:gpupool_slice_memory_used_bytes:sum"
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"department_queue_sku:gpupool_slice_idle:count{group}",
                        "eval_time": "1m",
                        "exp_samples": [
                            {
                                "labels": "department_queue_sku:gpupool_slice_idle:count" + group,
                                "value": 2,
                            }
                        ],
                    },
                    {
                        "expr": idle_mem,
                        "eval_time": "1m",
                        "exp_samples": [
                            {
                                "labels": idle_mem + group,
                                "value": 60,
                            }
                        ],
                    },
                    {
                        "expr": count,
                        "eval_time": "1m",
                        "exp_samples": [
                            {
                                "labels": count + group,
                                "value": 3,
                            }
                        ],
                    },
                    {
                        "expr": used,
                        "eval_time": "1m",
                        "exp_samples": [
                            {
                                "labels": used + per_gpu,
                                "value": 25,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [sup.PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fleet_utilisation_is_the_average_over_gpus(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    _, fleet, _ = loaded
    n, avg = prom(recording_rules=False).fleet_utilisation()
    want_n, want_avg = latest(fleet).fleet_utilisation()
    assert n == want_n == len(fleet.gpus)
    assert avg == pytest.approx(want_avg)


def test_backfilled_recorded_series_equal_what_the_rules_record(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    """The benchmark backfills recorded series computed in Python
    (sup.recorded_families); they must be what the rules record."""
    _, fleet, _ = loaded
    recorded = prom(recording_rules=True)
    want_rows = len(prom(recording_rules=False).usage(None))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(recorded.usage(None)) < want_rows:
        time.sleep(0.5)
    now_fleet = fleet.at(0.75 + 0.25 * math.sin((POINTS - 1) / 3.0))
    for family in sup.recorded_families(now_fleet):
        computed = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        got = {
            tuple(sorted((k, v) for k, v in labels.items() if k != "__name__")): value
            for labels, value in recorded.instant(family.name)
        }
        assert set(got) == set(computed), family.name
        for key, value in computed.items():
            assert got[key] == pytest.approx(value), (family.name, key)


def test_usage_per_department_sums_the_queues(
    prom: Callable[..., PrometheusSource], loaded: tuple[str, sup.Fleet, datetime]
) -> None:
    _, fleet, _ = loaded
    got = prom(recording_rules=False).usage(None, per_queue=False)
    want = latest(fleet).usage(None, per_queue=False)
    assert [(r.department, r.queue, r.slices, r.idle_slices) for r in got] == [
        (r.department, r.queue, r.slices, r.idle_slices) for r in want
    ]
    assert [r.memory_limit_bytes for r in got] == pytest.approx(
        [r.memory_limit_bytes for r in want]
    )
