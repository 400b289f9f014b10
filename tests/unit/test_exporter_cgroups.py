"""cgroup parsing on /proc/<pid>/cgroup files as each runtime, driver and version writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import cgroups
from exporter.model import ContainerRef

pytestmark = pytest.mark.unit

UID = "6f1c7b7a-3d2b-4b8c-9e1f-0123456789ab"
UID_ = UID.replace("-", "_")
CID = "4c4bd2a1f0e9d8c7b6a5948372615049e8f7d6c5b4a39281706f5e4d3c2b1a09"

CASES = [
    pytest.param(
        # containerd, systemd driver, cgroup v2 (Ubuntu 22.04+, EKS AL2023, GKE COS)
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        "containerd",
        id="containerd-systemd-v2",
    ),
    pytest.param(
        # containerd, cgroupfs driver, cgroup v2, Guaranteed QoS (no QoS level)
        f"0::/kubepods/pod{UID}/{CID}\n",
        "",
        id="containerd-cgroupfs-v2-guaranteed",
    ),
    pytest.param(
        # containerd, cgroupfs driver, cgroup v1 (one line per hierarchy)
        f"12:hugetlb:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"11:memory:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"10:devices:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"9:pids:/kubepods/besteffort/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}\n",
        "",
        id="containerd-cgroupfs-v1",
    ),
    pytest.param(
        # containerd, systemd driver, cgroup v1 (RHEL 8 / CentOS 7 era nodes)
        "11:memory:/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n"
        "4:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        "containerd",
        id="containerd-systemd-v1",
    ),
    pytest.param(
        # CRI-O, systemd driver, cgroup v2 (OpenShift 4.14+); crun adds a "container" leaf
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-{CID}.scope/container\n",
        "cri-o",
        id="crio-systemd-v2-crun",
    ),
    pytest.param(
        # CRI-O, systemd driver, cgroup v1 (OpenShift 4.x before cgroup v2)
        f"12:devices:/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n0::/\n",
        "cri-o",
        id="crio-systemd-v1-hybrid",
    ),
    pytest.param(
        # CRI-O, cgroupfs driver
        f"0::/kubepods/burstable/pod{UID}/crio-{CID}\n",
        "cri-o",
        id="crio-cgroupfs-v2",
    ),
    pytest.param(
        # Docker (dockershim / cri-dockerd), cgroupfs driver, cgroup v1
        f"11:memory:/kubepods/burstable/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n",
        "",
        id="docker-cgroupfs-v1",
    ),
    pytest.param(
        # Docker (cri-dockerd), systemd driver, cgroup v2
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"docker-{CID}.scope\n",
        "docker",
        id="docker-systemd-v2",
    ),
    pytest.param(
        # kind / k3d: a kubelet nested in a systemd slice inside a node container
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        "containerd",
        id="kind-nested-systemd-v2",
    ),
]


@pytest.mark.parametrize(("text", "runtime"), CASES)
def test_parse_cgroup_finds_pod_uid_and_container_id(text: str, runtime: str) -> None:
    assert cgroups.parse_cgroup(text) == ContainerRef(
        pod_uid=UID, container_id=CID, runtime=runtime
    )


def test_static_pod_with_hash_uid_is_found() -> None:
    uid = "2c7a3b5e9f2d4c1e8a9b0c1d2e3f4a5b"
    text = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{uid}.slice/cri-containerd-{CID}.scope\n"
    )
    ref = cgroups.parse_cgroup(text)
    assert ref is not None and ref.pod_uid == uid


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("0::/user.slice/user-1000.slice/session-3.scope\n", id="host-session"),
        pytest.param("0::/system.slice/nvidia-persistenced.service\n", id="host-daemon"),
        pytest.param(f"0::/system.slice/docker-{CID}.scope\n", id="plain-docker"),
        pytest.param("0::/\n", id="private-cgroupns"),
        pytest.param(f"0::/kubepods.slice/kubepods-pod{UID_}.slice\n", id="pod-level-only"),
        pytest.param(
            f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope\n",
            id="crio-conmon",
        ),
        pytest.param("", id="empty"),
        pytest.param("garbage without colons\n", id="garbage"),
    ],
)
def test_parse_cgroup_returns_none_outside_a_pod_container(text: str) -> None:
    assert cgroups.parse_cgroup(text) is None


def test_resolver_reads_proc_and_reports_misses(tmp_path: Path) -> None:
    (tmp_path / "100").mkdir()
    (tmp_path / "100" / "cgroup").write_text(f"0::/kubepods/pod{UID}/{CID}\n")
    (tmp_path / "200").mkdir()
    (tmp_path / "200" / "cgroup").write_text("0::/system.slice/sshd.service\n")
    resolver = cgroups.ProcCgroupResolver(tmp_path)
    assert resolver.resolve(100) == ContainerRef(pod_uid=UID, container_id=CID)
    assert resolver.resolve(200) == cgroups.MISS_NOT_A_POD
    assert resolver.resolve(300) == cgroups.MISS_PROCESS_GONE


def test_strip_container_id_drops_the_runtime_scheme() -> None:
    assert cgroups.strip_container_id(f"containerd://{CID}") == CID
    assert cgroups.strip_container_id(f"cri-o://{CID}") == CID
    assert cgroups.strip_container_id(CID) == CID
