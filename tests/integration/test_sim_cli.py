"""``gpupool simulate`` as installed: the entry point, the JSON the issue specifies,
exit codes, the generator and the replay, and the HTML report in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from simulator import workload
from tests.support import dashboard as browser_support

pytestmark = pytest.mark.integration

GPUPOOL = shutil.which("gpupool") or "gpupool"

PODS = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
    "a,4000,8192,1,400\nb,4000,8192,1,600\nc,8000,16384,1,1000\nd,2000,4096,0,0\n"
    "e,16000,32768,2,1000\nf,3000,8192,1,250\n"
)
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,4,T4\nn1,32000,131072,2,T4\n"


def gpupool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GPUPOOL, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    pods, nodes = tmp_path / "pods.csv", tmp_path / "nodes.csv"
    pods.write_text(PODS)
    nodes.write_text(NODES)
    return pods, nodes


def test_fill_json_has_the_issue_keys_with_output_after_the_subcommand(
    files: tuple[Path, Path],
) -> None:
    pods, nodes = files
    done = gpupool(
        "simulate", "fill", "--pods", str(pods), "--nodes", str(nodes),
        "--policy", "fgd", "--seeds", "2", "--seed", "7", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["policy"], data["total_gpus"], data["seeds"]) == ("fgd", 6, [7, 8])
    curve = data["allocation_by_arrived"]
    assert list(curve) == [str(k) for k in range(131)]
    assert all(0.0 <= v <= 100.0 for v in curve.values())


def test_output_before_the_subcommand_and_several_policies_give_a_list(
    files: tuple[Path, Path],
) -> None:
    pods, nodes = files
    done = gpupool(
        "-o", "json", "simulate", "fill", "--pods", str(pods), "--nodes", str(nodes),
        "--policy", "random", "--policy", "gpupool",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["policy"] for r in json.loads(done.stdout)] == ["random", "gpupool"]


def test_table_is_the_default_output(files: tuple[Path, Path]) -> None:
    pods, nodes = files
    done = gpupool(
        "simulate", "fill", "--pods", str(pods), "--nodes", str(nodes), "--policy", "all"
    )
    assert done.returncode == 0, done.stderr
    for name in ("random", "dot-product", "clustering", "packing", "best-fit", "fgd", "gpupool"):
        assert name in done.stdout
    assert "@100%" in done.stdout


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param({"policy": "first-fit"}, "unknown placement policy 'first-fit'", id="policy"),
        pytest.param({"pods": "name,cpu\nx,1\n"}, "neither the trace's pod list", id="columns"),
        pytest.param(
            {"pods": "name,cpu_milli,memory_mib,num_gpu,gpu_milli\nx,1,1,2,500\n"},
            "line 2: a pod with 2 GPUs asks for gpu_milli 500",
            id="row",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    files: tuple[Path, Path], change: dict[str, str], says: str
) -> None:
    pods, nodes = files
    if "pods" in change:
        pods.write_text(change["pods"])
    done = gpupool(
        "simulate", "fill", "--pods", str(pods), "--nodes", str(nodes),
        "--policy", change.get("policy", "fgd"),
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stderr


def test_generated_workload_replays_with_gpus_needed(tmp_path: Path) -> None:
    generated = tmp_path / "w.csv"
    made = gpupool("simulate", "generate", "--count", "150", "--seed", "3", "--out", str(generated))
    assert made.returncode == 0, made.stderr
    assert len(workload.read_workload(generated)) == 150
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(f"n{i},96000,393216,8,G2\n" for i in range(4))
    )
    done = gpupool(
        "simulate", "replay", "--pods", str(generated), "--nodes", str(nodes),
        "--policy", "gpupool", "--acceptance", "0.95", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["pods"] == 150 and data["denied"] == {}
    needed = data["needed"]
    assert needed["sliced_gpus"] <= needed["whole_cards"]["gpus"]
    assert 0.0 <= needed["saving"] < 1.0


@pytest.mark.browser
@pytest.mark.skipif(
    not browser_support.have_chromium(),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, chromedriver)",
)
def test_html_report_draws_one_curve_per_policy_offline(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    pods, nodes = files
    html = tmp_path / "report.html"
    done = gpupool(
        "simulate", "fill", "--pods", str(pods), "--nodes", str(nodes),
        "--policy", "best-fit", "--policy", "gpupool", "--html", str(html),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    driver: Any = browser_support.chromium()
    try:
        driver.get(html.as_uri())
        curves = driver.execute_script(
            "const p = document.querySelector('.js-plotly-plot');"
            "return p && p.data ? p.data.map(t => [t.name, t.showlegend, t.x.length]) : null;"
        )
    finally:
        driver.quit()
    assert curves is not None
    # each policy drawn twice (the whole curve, then from 75% arrived), named once
    assert [(name.split(" ")[0], shown) for name, shown, _ in curves] == [
        ("best-fit", True),
        ("best-fit", False),
        ("gpupool", True),
        ("gpupool", False),
    ]
    whole, zoomed = curves[0][2], curves[1][2]
    assert 0 < zoomed < whole


ORG_YAML = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


def test_replay_with_a_configuration_denies_by_its_quotas(tmp_path: Path) -> None:
    # 30 whole Ascend cards at once in vision/npu-train: its nominal memory (1 TiB) holds
    # 16 (64 GiB each); borrowing more would take vision's memory (1.5 TiB) below the
    # 512 GiB npu-infer's nominal quota keeps: 14 denied by the department's quota. One
    # notebook slice in ml, and one CPU-only pod (never governed)
    rows = ["name,arrival_s,duration_s,department,queue,gpus,gpu_fraction,cpu_milli"]
    rows += [f"t{i},0,100,vision,npu-train,1,,4000" for i in range(30)]
    rows += ["nb,5,10,ml,notebooks,1,0.2,1000", "cpu,0,50,,,0,,2000"]
    pods = tmp_path / "pods.csv"
    pods.write_text("\n".join(rows) + "\n")
    done = gpupool(
        "simulate", "replay", "--pods", str(pods), "--config", str(ORG_YAML),
        "--policy", "gpupool", "--no-needed", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["denied"] == {"DepartmentQuotaExceeded": 14}
    assert data["total_gpus"] == 208 and data["load"] == 1.0  # the pools of org.yaml
    governance = data["governance"]
    assert governance["fleet"] == "config" and governance["config"] == str(ORG_YAML)
    departments = governance["departments"]
    assert sorted(departments) == ["ml", "product", "research", "vision"]
    vision = departments["vision"]
    assert (vision["pods"], vision["admitted"], vision["denied"]) == (
        30, 16, {"DepartmentQuotaExceeded": 14},
    )  # fmt: skip
    assert vision["quota"]["memory_mib"] == {
        "limit": 1536 * 1024, "mean": 16 * 65536 * 100 / 100, "peak": 16 * 65536,
        "peak_pct": round(100 * 16 / 24, 1),
    }  # fmt: skip
    assert departments["ml"]["queues"]["notebooks"]["nominal"]["slices"]["peak"] == 1
    assert departments["product"]["pods"] == 0
    html = tmp_path / "replay.html"
    table = gpupool(
        "simulate", "replay", "--pods", str(pods), "--config", str(ORG_YAML),
        "--policy", "gpupool", "--no-needed", "--html", str(html),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "DepartmentQuotaExceeded=14" in table.stdout
    assert "governance decision over" in table.stdout and "DEPARTMENT" in table.stdout
    page = html.read_text()
    assert "Pods per department" in page and "denied: DepartmentQuotaExceeded" in page


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param([], "give --nodes", id="no-fleet"),
        pytest.param(["--config", "missing.yaml"], "missing.yaml", id="no-config-file"),
        pytest.param(["--fleet-from-config"], "--fleet-from-config needs --config", id="flag"),
        pytest.param(["--config", str(ORG_YAML), "--load", "0"], "the load is 0", id="load"),
    ],
)
def test_replay_bad_configuration_input_exits_2(
    files: tuple[Path, Path], args: list[str], says: str
) -> None:
    pods, _ = files
    done = gpupool("simulate", "replay", "--pods", str(pods), "--policy", "fgd", *args)
    assert done.returncode == 2, done.stdout
    assert says in done.stderr


def test_replay_pods_naming_a_department_the_configuration_lacks_exit_2(tmp_path: Path) -> None:
    pods = tmp_path / "pods.csv"
    pods.write_text("name,arrival_s,duration_s,department,gpus\nx,0,1,finance,1\n")
    done = gpupool(
        "simulate", "replay", "--pods", str(pods), "--config", str(ORG_YAML), "--policy", "fgd"
    )
    assert done.returncode == 2
    assert "department 'finance'" in done.stderr and "research" in done.stderr
