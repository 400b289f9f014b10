"""The direct source and the pure aggregation both sources share."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dashboard import model
from dashboard.direct import DirectSource, parse_exposition
from dashboard.model import SliceSample
from dashboard.sources import SourceUnavailable
from tests.support import dashboard as sup

pytestmark = pytest.mark.unit

GIB = 1024**3


def slice_(**kw: object) -> SliceSample:
    fields: dict[str, object] = {
        "namespace": "vision",
        "pod": "p",
        "container": "main",
        "department": "vision",
        "queue": "train",
        "sku": "a100-half",
        "uuid": "GPU-1",
        "hostname": "node-1",
        "memory_limit_bytes": 40.0 * GIB,
        "compute_limit_ratio": 0.5,
    }
    fields.update(kw)
    return SliceSample(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("used", "limit", "idle"),
    [
        pytest.param(0.0, 0.5, True, id="nothing-running"),
        pytest.param(0.024, 0.5, True, id="under-5pct-of-grant"),
        pytest.param(0.025, 0.5, False, id="at-5pct-of-grant"),
        pytest.param(0.4, 0.5, False, id="busy"),
        pytest.param(0.0, None, False, id="no-grant-is-never-idle"),
    ],
)
def test_a_slice_is_idle_when_it_uses_under_5pct_of_its_grant(
    used: float, limit: float | None, idle: bool
) -> None:
    assert slice_(compute_used_ratio=used, compute_limit_ratio=limit).idle is idle


def test_usage_rows_sum_per_department_queue_and_sku() -> None:
    rows = model.usage_rows(
        [
            slice_(pod="a", compute_used_ratio=0.4, memory_used_bytes=10.0 * GIB),
            slice_(pod="b", compute_used_ratio=0.0),
            slice_(pod="c", queue="infer"),
        ]
    )
    train = next(r for r in rows if r.queue == "train")
    assert (train.slices, train.idle_slices) == (2, 1)
    assert train.memory_limit_bytes == 80.0 * GIB
    assert train.idle_memory_bytes == 40.0 * GIB
    assert train.compute_used_ratio == pytest.approx(0.4)
    assert [r.queue for r in rows] == ["infer", "train"]


def test_top_waste_puts_the_largest_idle_grant_first() -> None:
    small = slice_(pod="small", memory_limit_bytes=10.0 * GIB)
    large = slice_(pod="large", memory_limit_bytes=80.0 * GIB)
    busy = slice_(pod="busy", memory_limit_bytes=99.0 * GIB, compute_used_ratio=0.5)
    assert [s.pod for s in model.top_waste([small, busy, large], 5)] == ["large", "small"]


def test_exporter_text_parses_back_into_the_fleet() -> None:
    org = sup.make_org(3, 16)
    fleet = sup.make_fleet(org)
    parsed = parse_exposition(sup.exposition(fleet))
    assert sorted(parsed.slices, key=lambda s: (s.uuid, s.pod)) == sorted(
        fleet.slices, key=lambda s: (s.uuid, s.pod)
    )
    assert {g.uuid for g in parsed.gpus} == {g.uuid for g in fleet.gpus}
    gpu = next(g for g in parsed.gpus if g.uuid == fleet.gpus[0].uuid)
    assert gpu.fb_total_bytes == pytest.approx(fleet.gpus[0].memory_bytes, rel=1e-3)
    assert gpu.model == fleet.gpus[0].model


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_direct_source_scrapes_at_most_once_per_interval_and_keeps_history() -> None:
    org = sup.make_org(3, 16)
    fleet = sup.make_fleet(org)
    calls: list[str] = []
    text = sup.exposition(fleet)

    def fetch(url: str) -> str:
        calls.append(url)
        return text

    clock = Clock()
    source = DirectSource(["node-1:9400"], fetch=fetch, clock=clock, scrape_interval_s=15)
    assert source.exporters == ["http://node-1:9400/metrics"]
    source.usage(None)
    source.usage(None)
    assert len(calls) == 1
    clock.now += timedelta(seconds=15)
    source.gpus(None)
    assert len(calls) == 2
    points = source.history(None, clock.now - timedelta(hours=1), clock.now, 15)
    assert len(points) == 2
    dept = sorted(org.departments)[0]
    scoped = source.history(frozenset([dept]), clock.now - timedelta(hours=1), clock.now, 15)
    expected = sum(s.memory_limit_bytes or 0 for s in fleet.slices if s.department == dept)
    assert scoped[-1].memory_limit_bytes == pytest.approx(expected)


def test_a_scoped_viewer_gets_only_their_slices_and_no_whole_card_figures() -> None:
    org = sup.make_org(3, 16)
    fleet = sup.make_fleet(org)
    text = sup.exposition(fleet)
    source = DirectSource(["x"], fetch=lambda _: text)
    dept = sorted(org.departments)[1]
    mine = frozenset([dept])
    assert {r.department for r in source.usage(mine)} == {dept}
    gpus = source.gpus(mine)
    assert gpus and all(g.util_pct is None and g.fb_total_bytes is None for g in gpus)
    assert {s.department for s in source.waste(mine, 100)} <= {dept}
    other = next(s for s in fleet.slices if s.department != dept)
    assert all(s.department == dept for s in source.slices_on(other.uuid, mine))


def test_one_exporter_down_leaves_the_others_and_says_which() -> None:
    org = sup.make_org(3, 16)
    fleet = sup.make_fleet(org)
    hosts = fleet.hostnames
    texts = {
        "http://a/metrics": sup.exposition(fleet.on_hosts(hosts[:1])),
    }

    def fetch(url: str) -> str:
        if url not in texts:
            import httpx

            raise httpx.ConnectError("connection refused")
        return texts[url]

    source = DirectSource(["http://a", "http://b"], fetch=fetch)
    snap = source.snapshot()
    assert set(snap.errors) == {"http://b/metrics"}
    assert "unreachable" in snap.errors["http://b/metrics"]
    assert {g.hostname for g in source.gpus(None)} == {hosts[0]}


def test_every_exporter_down_is_source_unavailable() -> None:
    import httpx

    def fetch(url: str) -> str:
        raise httpx.ConnectError("connection refused")

    source = DirectSource(["http://a"], fetch=fetch)
    with pytest.raises(SourceUnavailable, match="no exporter answered"):
        source.usage(None)


def test_a_malformed_series_is_reported_not_raised() -> None:
    broken = 'gpupool_slice_processes{namespace="a" 1\n'
    source = DirectSource(["http://a", "http://b"], fetch=lambda u: broken if "a" in u else "")
    snap = source.snapshot()
    assert "not Prometheus exposition" in snap.errors["http://a/metrics"]


def test_samples_compare_by_value() -> None:
    s = slice_()
    assert replace(s) == s
