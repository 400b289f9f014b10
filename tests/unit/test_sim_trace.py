"""simulator.trace and simulator.workload: the trace's pod and node lists, and
gpupool's own format, read with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from governance.errors import ConfigError
from simulator import trace, workload
from simulator.trace import Pod

pytestmark = pytest.mark.unit


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pod_list_with_only_the_required_columns_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
        "a,12000,16384,1,1000\nb,6000,12288,1,460\nc,88000,327680,8,1000\nd,4000,8192,0,0\n",
    )
    pods = trace.read_pods(path)
    assert [(p.name, p.num_gpu, p.gpu_milli, p.gpu_milli_total) for p in pods] == [
        ("a", 1, 1000, 1000),
        ("b", 1, 460, 460),
        ("c", 8, 1000, 8000),
        ("d", 0, 0, 0),
    ]
    assert [p.shares_gpu for p in pods] == [False, True, False, False]
    assert all(p.arrival_s is None and p.gpu_models == () for p in pods)


def test_full_trace_row_gives_models_arrival_and_duration(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
        "deletion_time,scheduled_time\n"
        "p,16000,32768,1,1000,V100M16|V100M32,LS,Running,9967058,9968575,9967063\n",
    )
    (pod,) = trace.read_pods(path)
    assert pod.gpu_models == ("V100M16", "V100M32")
    assert pod.arrival_s == 9967058 and pod.duration_s == 9968575 - 9967058


@pytest.mark.parametrize(
    ("row", "says"),
    [
        pytest.param("x,1000,10,2,500", "only one-GPU pods share", id="multi-gpu-share"),
        pytest.param("x,1000,10,1,0", "1 to 1000 thousandths", id="gpu-pod-without-share"),
        pytest.param("x,1000,10,0,300", "num_gpu 0 asks for gpu_milli 300", id="cpu-pod-share"),
        pytest.param("x,1000,10,1,1200", "1 to 1000 thousandths", id="share-above-one"),
        pytest.param("x,lots,10,1,1000", "cpu_milli is 'lots'", id="not-a-number"),
        pytest.param("x,1000,10,1.5,1000", "num_gpu is '1.5'", id="fraction-of-gpus"),
        pytest.param(",1000,10,1,1000", "no name", id="no-name"),
    ],
)
def test_bad_pod_rows_name_the_line_and_the_rule(tmp_path: Path, row: str, says: str) -> None:
    path = write(
        tmp_path, "pods.csv", f"name,cpu_milli,memory_mib,num_gpu,gpu_milli\nok,1,1,0,0\n{row}\n"
    )
    with pytest.raises(ConfigError) as caught:
        trace.read_pods(path)
    assert says in str(caught.value)
    assert caught.value.path == "line 3" and caught.value.source == str(path)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "pods.csv", "name,cpu_milli,num_gpu\nx,1,0\n")
    with pytest.raises(ConfigError, match="missing column\\(s\\) memory_mib, gpu_milli"):
        trace.read_pods(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        trace.read_pods(tmp_path / "absent.csv")


def test_node_list_is_read_and_gpu_nodes_need_a_model(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        "nodes.csv",
        "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\ncpu,32000,65536,0,\n",
    )
    nodes = trace.read_nodes(good)
    assert [(n.name, n.gpus, n.model) for n in nodes] == [("n0", 2, "P100"), ("cpu", 0, "")]
    bad = write(tmp_path, "bad.csv", "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,\n")
    with pytest.raises(ConfigError, match="n0 has 2 GPUs but no model"):
        trace.read_nodes(bad)
    none = write(tmp_path, "none.csv", "sn,cpu_milli,memory_mib,gpu,model\ncpu,1,1,0,\n")
    with pytest.raises(ConfigError, match="no GPU node"):
        trace.read_nodes(none)


def test_whole_cards_round_a_share_up_to_a_card_and_keep_the_rest() -> None:
    share = Pod(name="s", cpu_milli=1, memory_mib=1, num_gpu=1, gpu_milli=250)
    assert share.as_whole_cards().gpu_milli == 1000
    whole = Pod(name="w", cpu_milli=1, memory_mib=1, num_gpu=2, gpu_milli=1000)
    assert whole.as_whole_cards() is whole


# -- gpupool's own format ---------------------------------------------------------------


def test_gpupool_csv_reads_fractions_memory_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "w.csv",
        "name,arrival_s,duration_s,department,queue,gpus,gpu_fraction,gpu_memory_mib,gpu_model\n"
        "a,0,60,ml,train,1,0.25,,\n"
        "b,10,,ml,,2,,,\n"
        "c,20,5,web,online,1,,4096,T4|A10\n",
    )
    a, b, c = workload.read_workload(path)
    assert (a.gpu_milli, a.arrival_s, a.duration_s, a.department, a.queue) == (
        250,
        0.0,
        60.0,
        "ml",
        "train",
    )
    assert (b.num_gpu, b.gpu_milli, b.duration_s, b.cpu_milli) == (2, 1000, None, 0)
    # 4 GiB of the smaller allowed card (T4, 15 GiB) is 267/1000, rounded up
    assert c.gpu_milli == 267 and c.gpu_models == ("T4", "A10")


def test_gpupool_json_lines_match_the_csv(tmp_path: Path) -> None:
    lines = [
        {"name": "a", "arrival_s": 0, "gpus": 1, "gpu_fraction": 0.5, "department": "ml"},
        {"name": "b", "arrival_s": 3, "gpus": 0, "cpu_milli": 2000},
    ]
    path = write(tmp_path, "w.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    a, b = workload.read_workload(path)
    assert (a.gpu_milli, a.department, b.num_gpu, b.gpu_milli, b.cpu_milli) == (
        500,
        "ml",
        0,
        0,
        2000,
    )


@pytest.mark.parametrize(
    ("row", "says"),
    [
        pytest.param({"gpus": ""}, "gpus is required", id="no-gpus"),
        pytest.param({"gpus": 1, "gpu_fraction": 1.5}, "at most 1", id="fraction-above-one"),
        pytest.param({"gpus": 1, "gpu_memory_mib": 1024}, "needs gpu_model", id="memory-no-model"),
        pytest.param(
            {"gpus": 1, "gpu_memory_mib": 1024, "gpu_model": "G2"}, "G2 is not known", id="unknown"
        ),
        pytest.param(
            {"gpus": 1, "gpu_memory_mib": 40000, "gpu_model": "T4"}, "more than", id="too-much"
        ),
        pytest.param(
            {"gpus": 1, "gpu_memory_mib": 10, "gpu_fraction": 0.1, "gpu_model": "T4"},
            "not both",
            id="both",
        ),
        pytest.param({"gpus": 1, "arrival_s": -3}, "0 or more", id="negative-time"),
        pytest.param({"gpus": 1, "colour": "red"}, "unknown column(s) colour", id="unknown-col"),
        pytest.param({"gpus": 2, "gpu_fraction": 0.5}, "only one-GPU pods share", id="multi"),
    ],
)
def test_gpupool_format_errors_name_the_row(row: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        workload.parse_workload([{"gpus": 0}, row], source="w.csv")
    assert says in str(caught.value) and caught.value.path == "row 2"


def test_written_workload_reads_back_the_same_pods(tmp_path: Path) -> None:
    pods = [
        Pod(
            name="a",
            cpu_milli=1500,
            memory_mib=2048,
            num_gpu=1,
            gpu_milli=810,
            arrival_s=12901761.0,
            duration_s=0.25,
            department="d",
            queue="q",
        ),
        Pod(
            name="b",
            cpu_milli=0,
            memory_mib=0,
            num_gpu=4,
            gpu_milli=1000,
            gpu_models=("A100", "H100"),
        ),
    ]
    path = tmp_path / "w.csv"
    workload.write_workload(pods, path)
    assert workload.read_workload(path) == pods
