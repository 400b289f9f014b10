"""The alert pack (charts/gpupool/files/alerts.yaml) under the real promtool.

``promtool check rules`` for the syntax and templates; ``promtool test rules`` for each
alert on two kinds of input: the series it is about, where it must fire (with the
labels it must carry), and healthy or merely unusual series, where it must stay silent.
Every alert has both. The metric names the rules and the Grafana dashboard use are
checked against what the components export (read from their own collectors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import chart

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

PROMTOOL = shutil.which("promtool")
if PROMTOOL is None:
    pytest.skip("promtool is not installed (Debian package prometheus)", allow_module_level=True)

FILES = chart.CHART / "files"
ALERTS = FILES / "alerts.yaml"
RULES = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
BY_NAME = {r["alert"]: r for r in RULES}

GPU_LABELS = {
    "gpu": "0",
    "UUID": "GPU-aaaa",
    "device": "nvidia0",
    "modelName": "NVIDIA A100-SXM4-80GB",
    "Hostname": "gpu-node-1",
    "pci_bus_id": "00000000:07:00.0",
    "DCGM_FI_DRIVER_VERSION": "550.54",
}
SLICE_LABELS = {
    "namespace": "ml-team",
    "pod": "train-0",
    "container": "main",
    "department": "ml",
    "queue": "train",
    "sku": "a100-half",
    "UUID": "GPU-aaaa",
    "Hostname": "gpu-node-1",
}


def selector(labels: dict[str, str]) -> str:
    """The label matchers of a series in promtool's notation (without braces)."""
    return ",".join(f'{key}="{value}"' for key, value in labels.items())


GPU = selector(GPU_LABELS)
SLICE = selector(SLICE_LABELS)
ALLOCATED = 'gpu="0",UUID="GPU-aaaa",Hostname="gpu-node-1"'
QUOTA = 'department="ml",queue="train",resource="slices"'
QUOTA_LABELS = {"department": "ml", "queue": "train", "resource": "slices"}
WEBHOOK_JOB = 'job="gpu-platform/gpupool-webhook"'
EXPORTER = 'job="gpu-platform/gpupool-exporter",instance="10.0.0.7:9400"'


def quota(used: str, limit: str | None, replicas: int = 2) -> list[tuple[str, str]]:
    out = []
    for i in range(replicas):
        out.append((f'gpupool_quota_used{{{QUOTA},instance="w{i}"}}', used))
        if limit is not None:
            out.append((f'gpupool_quota_limit{{{QUOTA},instance="w{i}"}}', limit))
    return out


def slice_series(util: str, limit: str) -> list[tuple[str, str]]:
    return [
        (f"gpupool_slice_compute_utilization_ratio{{{SLICE}}}", util),
        (f"gpupool_slice_compute_limit_ratio{{{SLICE}}}", limit),
    ]


def requests(**per_minute: int) -> list[tuple[str, str]]:
    return [
        (
            f'gpupool_admission_requests_total{{operation="CREATE",decision="x",reason="{reason}"}}',
            f"0+{rate}x30",
        )
        for reason, rate in per_minute.items()
    ]


def latency(bucket: str) -> list[tuple[str, str]]:
    """600 admissions a minute, all in the bucket ``le=bucket`` and above."""
    edges = ["0.01", "1.0", "2.5", "+Inf"]
    return [
        (
            f'gpupool_admission_duration_seconds_bucket{{operation="CREATE",le="{le}"}}',
            "0+600x30" if float(le) >= float(bucket) else "0x30",
        )
        for le in edges
    ]


Case = tuple[str, list[tuple[str, str]], str, list[dict[str, str]]]
"""(id, input series, eval time, the alerts expected then, without the severity label)."""

CASES: dict[str, list[Case]] = {
    "GpupoolQuotaNearLimit": [
        ("95-of-100", quota("95x60", "100x60"), "40m", [QUOTA_LABELS]),
        ("not-yet-30m", quota("95x60", "100x60"), "20m", []),
        ("half-used", quota("50x60", "100x60"), "40m", []),
        ("full-is-the-other-alert", quota("100x60", "100x60"), "40m", []),
        ("unlimited", quota("950x60", None), "40m", []),
    ],
    "GpupoolQuotaAtLimit": [
        ("full", quota("100x60", "100x60"), "15m", [QUOTA_LABELS]),
        ("one-below", quota("99x60", "100x60"), "15m", []),
        ("zero-limit-zero-use", quota("0x60", "0x60"), "15m", []),
    ],
    "GpupoolSlicesIdle": [
        (
            "idle-3h",
            slice_series("0.01x200", "0.5x200"),
            "3h",
            [{k: v for k, v in SLICE_LABELS.items() if k not in ("UUID", "Hostname")}],
        ),
        ("idle-only-1h", slice_series("0.01x200", "0.5x200"), "1h", []),
        ("busy", slice_series("0.2x200", "0.5x200"), "3h", []),
    ],
    "GpupoolSliceMemoryNearLimit": [
        (
            "95-percent",
            [
                (f"gpupool_slice_memory_used_bytes{{{SLICE}}}", "9500000000x30"),
                (f"gpupool_slice_memory_limit_bytes{{{SLICE}}}", "10000000000x30"),
            ],
            "15m",
            [SLICE_LABELS],
        ),
        (
            "half",
            [
                (f"gpupool_slice_memory_used_bytes{{{SLICE}}}", "5000000000x30"),
                (f"gpupool_slice_memory_limit_bytes{{{SLICE}}}", "10000000000x30"),
            ],
            "15m",
            [],
        ),
    ],
    "GpupoolGpuXidError": [
        ("new-xid", [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0 0 0 43 43 43")], "4m", [GPU_LABELS]),
        ("old-xid-never-clears", [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "43x60")], "40m", []),
        ("no-xid", [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0x60")], "40m", []),
    ],
    "GpupoolGpuFallenOffBus": [
        ("xid-79", [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0 79 79")], "2m", [GPU_LABELS]),
        ("xid-43", [(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0 43 43")], "2m", []),
    ],
    "GpupoolGpuRowRemapFailure": [
        ("failed", [(f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}", "0 1 1")], "2m", [GPU_LABELS]),
        ("healthy", [(f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU}}}", "0x10")], "5m", []),
    ],
    "GpupoolGpuUncorrectableMemoryErrors": [
        (
            "new-double-bit-error",
            [(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0 0 0 1 1 1")],
            "5m",
            [GPU_LABELS],
        ),
        (
            "new-uncorrectable-remap",
            [(f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{GPU}}}", "2 2 3 3")],
            "3m",
            [GPU_LABELS],
        ),
        ("old-errors", [(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "2x60")], "40m", []),
    ],
    "GpupoolGpuTemperatureHigh": [
        ("hot-15m", [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "90x30")], "15m", [GPU_LABELS]),
        ("hot-5m", [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "90x30")], "5m", []),
        ("warm", [(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "80x30")], "15m", []),
    ],
    "GpupoolGpuUnhealthy": [
        ("nvml-fails", [(f"gpupool_exporter_gpu_healthy{{{GPU}}}", "0x20")], "10m", [GPU_LABELS]),
        ("healthy", [(f"gpupool_exporter_gpu_healthy{{{GPU}}}", "1x20")], "10m", []),
    ],
    "GpupoolGpuMissing": [
        (
            "one-of-two-gone",
            [
                (f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "60x60"),
                (
                    'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-bbbb",Hostname="gpu-node-1"}',
                    "60x30 stale",
                ),
            ],
            "45m",
            [{"Hostname": "gpu-node-1"}],
        ),
        (
            "both-report",
            [
                (f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", "60x60"),
                ('DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-bbbb",Hostname="gpu-node-1"}', "60x60"),
            ],
            "45m",
            [],
        ),
    ],
    "GpupoolGpuOversubscribedMemoryExhausted": [
        (
            "sold-past-physical-and-full",
            [
                (f"DCGM_FI_DEV_FB_USED{{{GPU}}}", "78000x20"),
                (f"DCGM_FI_DEV_FB_FREE{{{GPU}}}", "1000x20"),
                (
                    f"gpupool_gpu_allocated_memory_bytes{{{ALLOCATED}}}",
                    "120000000000x20",
                ),
            ],
            "10m",
            [GPU_LABELS],
        ),
        (
            "full-but-not-over-sold",
            [
                (f"DCGM_FI_DEV_FB_USED{{{GPU}}}", "78000x20"),
                (f"DCGM_FI_DEV_FB_FREE{{{GPU}}}", "1000x20"),
                (
                    f"gpupool_gpu_allocated_memory_bytes{{{ALLOCATED}}}",
                    "40000000000x20",
                ),
            ],
            "10m",
            [],
        ),
    ],
    "GpupoolGpuOversubscribedComputeSaturated": [
        (
            "over-sold-and-busy",
            [
                (f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", "99x60"),
                (
                    f"gpupool_gpu_allocated_compute_ratio{{{ALLOCATED}}}",
                    "1.5x60",
                ),
            ],
            "40m",
            [GPU_LABELS],
        ),
        (
            "busy-but-sold-once",
            [
                (f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", "99x60"),
                (
                    f"gpupool_gpu_allocated_compute_ratio{{{ALLOCATED}}}",
                    "1x60",
                ),
            ],
            "40m",
            [],
        ),
    ],
    "GpupoolWebhookDown": [
        ("target-down", [(f'up{{{WEBHOOK_JOB},instance="a"}}', "0x10")], "5m", [{}]),
        ("no-target-at-all", [('up{job="other"}', "1x10")], "5m", [{}]),
        (
            "one-of-two-up",
            [
                (f'up{{{WEBHOOK_JOB},instance="a"}}', "0x10"),
                (f'up{{{WEBHOOK_JOB},instance="b"}}', "1x10"),
            ],
            "5m",
            [],
        ),
    ],
    "GpupoolWebhookErrors": [
        ("store-down", requests(Admitted=60, StoreUnavailable=60), "10m", [{}]),
        ("quota-denials-are-not-errors", requests(Admitted=60, QueueQuotaExceeded=60), "10m", []),
    ],
    "GpupoolWebhookLatencyHigh": [
        ("slow", latency("2.5"), "15m", [{}]),
        ("fast", latency("0.01"), "15m", []),
    ],
    "GpupoolExporterDown": [
        (
            "down",
            [(f"up{{{EXPORTER}}}", "0x10")],
            "6m",
            [{"job": "gpu-platform/gpupool-exporter", "instance": "10.0.0.7:9400"}],
        ),
        ("up", [(f"up{{{EXPORTER}}}", "1x10")], "6m", []),
    ],
    "GpupoolExporterNotSampling": [
        (
            "never-sampled",
            [(f"gpupool_exporter_up{{{EXPORTER}}}", "0x10")],
            "6m",
            [{"job": "gpu-platform/gpupool-exporter", "instance": "10.0.0.7:9400"}],
        ),
        (
            "stale",
            [(f"gpupool_exporter_snapshot_age_seconds{{{EXPORTER}}}", "120x10")],
            "6m",
            [{"job": "gpu-platform/gpupool-exporter", "instance": "10.0.0.7:9400"}],
        ),
        (
            "fresh",
            [
                (f"gpupool_exporter_up{{{EXPORTER}}}", "1x10"),
                (f"gpupool_exporter_snapshot_age_seconds{{{EXPORTER}}}", "3x10"),
            ],
            "6m",
            [],
        ),
    ],
    "GpupoolExporterBackendErrors": [
        (
            "failing",
            [
                (
                    f'gpupool_exporter_backend_errors_total{{{EXPORTER},call="nvmlDeviceGetPowerUsage",code="GPU_IS_LOST"}}',
                    "0+60x40",
                )
            ],
            "30m",
            [
                {
                    "instance": "10.0.0.7:9400",
                    "call": "nvmlDeviceGetPowerUsage",
                    "code": "GPU_IS_LOST",
                }
            ],
        ),
        (
            "old-errors",
            [
                (
                    f'gpupool_exporter_backend_errors_total{{{EXPORTER},call="nvmlDeviceGetPowerUsage",code="GPU_IS_LOST"}}',
                    "5x40",
                )
            ],
            "30m",
            [],
        ),
    ],
    "GpupoolReservationsExpiring": [
        (
            "ten-in-half-an-hour",
            [
                (
                    'gpupool_reconciler_ledger_actions_total{action="expire",instance="r0"}',
                    "0+1x10 10x50",
                )
            ],
            "30m",
            [{}],
        ),
        (
            "two",
            [
                (
                    'gpupool_reconciler_ledger_actions_total{action="expire",instance="r0"}',
                    "0 1 2x58",
                )
            ],
            "30m",
            [],
        ),
        (
            "releases-are-normal",
            [
                (
                    'gpupool_reconciler_ledger_actions_total{action="release",instance="r0"}',
                    "0+10x60",
                )
            ],
            "30m",
            [],
        ),
    ],
    "GpupoolReconcilerNoLeader": [
        (
            "all-followers",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "0x10"),
                ('gpupool_reconciler_leader{instance="r1"}', "0x10"),
            ],
            "6m",
            [{}],
        ),
        ("none-scraped", [('up{job="other"}', "1x10")], "6m", [{}]),
        (
            "one-leader",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "1x10"),
                ('gpupool_reconciler_leader{instance="r1"}', "0x10"),
            ],
            "6m",
            [],
        ),
    ],
    "GpupoolReconcilerSplitBrain": [
        (
            "two-leaders",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "1x10"),
                ('gpupool_reconciler_leader{instance="r1"}', "1x10"),
            ],
            "6m",
            [{}],
        ),
        (
            "one-leader",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "1x10"),
                ('gpupool_reconciler_leader{instance="r1"}', "0x10"),
            ],
            "6m",
            [],
        ),
    ],
    "GpupoolReconcilerErrors": [
        (
            "steady-store-errors",
            [('gpupool_reconciler_errors_total{kind="store",instance="r0"}', "0+6x60")],
            "30m",
            [{"kind": "store"}],
        ),
        (
            "an-error-a-minute",
            [('gpupool_reconciler_errors_total{kind="store",instance="r0"}', "0+1x60")],
            "30m",
            [],
        ),
    ],
    "GpupoolReconcilerStale": [
        (
            "watch-stuck",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "1x30"),
                ('gpupool_reconciler_last_sync_timestamp_seconds{instance="r0"}', "60x30"),
                ('gpupool_reconciler_leader{instance="r1"}', "0x30"),
                ('gpupool_reconciler_last_sync_timestamp_seconds{instance="r1"}', "0x30"),
            ],
            "20m",
            [{}],
        ),
        (
            "keeping-up",
            [
                ('gpupool_reconciler_leader{instance="r0"}', "1x30"),
                ('gpupool_reconciler_last_sync_timestamp_seconds{instance="r0"}', "0+60x30"),
                ('gpupool_reconciler_leader{instance="r1"}', "0x30"),
                ('gpupool_reconciler_last_sync_timestamp_seconds{instance="r1"}', "0x30"),
            ],
            "20m",
            [],
        ),
    ],
    "GpupoolDuplicateClaims": [
        (
            "copied-id",
            [('gpupool_reconciler_duplicate_claims_total{instance="r0"}', "0 0 1 1")],
            "3m",
            [{}],
        ),
        (
            "none-lately",
            [('gpupool_reconciler_duplicate_claims_total{instance="r0"}', "1x60")],
            "40m",
            [],
        ),
    ],
    "GpupoolSuspiciousPods": [
        (
            "forged-annotation",
            [
                (
                    'gpupool_reconciler_suspicious_pods_total{reason="UnknownAllocation",instance="r0"}',
                    "0 0 1 1",
                )
            ],
            "3m",
            [{"reason": "UnknownAllocation"}],
        ),
        (
            "none-lately",
            [
                (
                    'gpupool_reconciler_suspicious_pods_total{reason="UnknownAllocation",instance="r0"}',
                    "1x60",
                )
            ],
            "40m",
            [],
        ),
    ],
}


def _without_annotations(tmp_path: Path) -> Path:
    """The rule file with its annotations taken off: the firing tests compare labels;
    the annotations' templates are checked by promtool check rules and by
    test_annotations_render_with_the_alerts_labels."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def promtool_test(tmp_path: Path, rule_file: Path, tests: list[dict[str, Any]]) -> None:
    spec = {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}
    spec_path = tmp_path / "test.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(spec_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules_accepts_the_alerts_and_the_recording_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS), str(FILES / "recording-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_every_alert_has_a_severity_and_a_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("info", "warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook"}
    assert len(annotations["runbook"]) > 80


def test_every_alert_is_tested_firing_and_silent() -> None:
    assert sorted(CASES) == sorted(BY_NAME)
    for name, cases in CASES.items():
        assert [c for c in cases if c[3]], f"{name} is never tested firing"
        assert [c for c in cases if not c[3]], f"{name} is never tested silent"


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_when_it_should_and_stays_silent_otherwise(alert: str, tmp_path: Path) -> None:
    severity = BY_NAME[alert]["labels"]["severity"]
    tests = [
        {
            "name": f"{alert}/{case_id}",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [
                        {"exp_labels": {**labels, "severity": severity}} for labels in expected
                    ],
                }
            ],
        }
        for case_id, series, at, expected in CASES[alert]
    ]
    promtool_test(tmp_path, _without_annotations(tmp_path), tests)


def test_annotations_render_with_the_alerts_labels(tmp_path: Path) -> None:
    rule = BY_NAME["GpupoolQuotaAtLimit"]
    expected = {
        key: re.sub(r"\s+", " ", value)
        .replace("{{ $labels.department }}", "ml")
        .replace("{{ $labels.queue }}", "train")
        .replace("{{ $labels.resource }}", "slices")
        .strip()
        for key, value in rule["annotations"].items()
    }
    assert "{{" not in "".join(expected.values())
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for r in group["rules"]:
            r["annotations"] = {
                k: re.sub(r"\s+", " ", v).strip() for k, v in r["annotations"].items()
            }
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    promtool_test(
        tmp_path,
        path,
        [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in quota("100x30", "100x30")],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "GpupoolQuotaAtLimit",
                        "exp_alerts": [
                            {
                                "exp_labels": {**QUOTA_LABELS, "severity": "warning"},
                                "exp_annotations": expected,
                            }
                        ],
                    }
                ],
            }
        ],
    )


# -- metric names -----------------------------------------------------------------------


def _exported_names() -> set[str]:
    """Every series name the webhook, reconciler and exporter expose, read from their
    collectors (counters with prometheus_client's _total, histograms' _bucket)."""
    from prometheus_client import CollectorRegistry

    from admission import metrics as admission_metrics
    from admission import reconciler
    from exporter import collector
    from exporter.server import timed_metrics_app

    families: list[Any] = []
    registry = CollectorRegistry()
    admission_metrics.Metrics(registry)
    reconciler.Metrics(registry)
    timed_metrics_app(registry)
    families += list(registry.collect())
    families += list(collector.SnapshotCollector(lambda: None).describe())
    families += list(admission_metrics.WriterCollector(lambda: {}).collect())
    families += list(admission_metrics.QuotaCollector.describe(None))  # type: ignore[arg-type]
    names = {"up"}
    for family in families:
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def _names_in(expression: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expression)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_strings))
    return {t for t in tokens if t.startswith(("gpupool_", "DCGM_")) or t == "up"}


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads((FILES / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_alerts_and_dashboard_use_only_series_the_components_export() -> None:
    exported = _exported_names()
    used: set[str] = set()
    for rule in RULES:
        used |= _names_in(rule["expr"])
    for expression in _dashboard_expressions():
        used |= _names_in(expression)
    assert used - exported == set()
    assert len(used) > 20


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    expressions = _dashboard_expressions()
    assert len(expressions) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{i}",
                        "expr": e.replace("$department", ".*").replace("$node", ".*"),
                    }
                    for i, e in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
