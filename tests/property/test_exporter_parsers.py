"""Hypothesis: the cgroup parser and the PodResources decoder against naive references."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import cgroups, podresources
from exporter.model import ContainerRef
from tests.support.exporter import encode_list_response

pytestmark = pytest.mark.property

hexes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
uids = st.builds(lambda n: str(uuid.UUID(int=n)), st.integers(0, 2**128 - 1))
qos = st.sampled_from(["", "burstable", "besteffort"])
runtimes = st.sampled_from(["containerd", "cri-o", "docker"])
prefix = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}


def _systemd(uid: str, cid: str, level: str, runtime: str, nested: bool) -> str:
    root = "kubelet.slice/kubelet-kubepods.slice" if nested else "kubepods.slice"
    stem = "kubelet-kubepods" if nested else "kubepods"
    parts = [root]
    if level:
        parts.append(f"{stem}-{level}.slice")
        parts.append(f"{stem}-{level}-pod{uid.replace('-', '_')}.slice")
    else:
        parts.append(f"{stem}-pod{uid.replace('-', '_')}.slice")
    parts.append(f"{prefix[runtime]}-{cid}.scope")
    return "/" + "/".join(parts)


def _cgroupfs(uid: str, cid: str, level: str, runtime: str) -> str:
    leaf = f"crio-{cid}" if runtime == "cri-o" else cid
    middle = f"/{level}" if level else ""
    return f"/kubepods{middle}/pod{uid}/{leaf}"


@settings(max_examples=100, deadline=None)
@given(
    uid=uids,
    cid=hexes,
    level=qos,
    runtime=runtimes,
    systemd=st.booleans(),
    nested=st.booleans(),
    v2=st.booleans(),
    leaf=st.booleans(),
)
def test_parse_cgroup_recovers_what_the_kubelet_wrote(
    uid: str,
    cid: str,
    level: str,
    runtime: str,
    systemd: bool,
    nested: bool,
    v2: bool,
    leaf: bool,
) -> None:
    path = (
        _systemd(uid, cid, level, runtime, nested)
        if systemd
        else _cgroupfs(uid, cid, level, runtime)
    )
    if leaf:
        path += "/container"
    if v2:
        text = f"0::{path}\n"
    else:
        text = "".join(
            f"{n}:{c}:{path}\n"
            for n, c in ((12, "memory"), (7, "cpu,cpuacct"), (1, "name=systemd"))
        )
    expected_runtime = runtime if systemd or runtime == "cri-o" else ""
    assert cgroups.parse_cgroup(text) == ContainerRef(
        pod_uid=uid, container_id=cid, runtime=expected_runtime
    )


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_parse_cgroup_never_raises_on_arbitrary_text(text: str) -> None:
    cgroups.parse_cgroup(text)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
device_ids = st.lists(
    st.text(alphabet="GPU-abcdef0123456789:", min_size=1, max_size=30), max_size=4
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            names,
            names,
            st.dictionaries(
                names,
                st.dictionaries(
                    st.sampled_from(["nvidia.com/gpu", "gpupool.io/x", "a.b/c"]),
                    device_ids,
                    max_size=2,
                ),
                max_size=3,
            ),
        ),
        max_size=5,
    )
)
def test_podresources_decoding_round_trips(
    pods: list[tuple[str, str, dict[str, dict[str, list[str]]]]],
) -> None:
    rows = podresources.decode_list_response(encode_list_response(pods))
    expected = [
        (ns, pod, container, resource, tuple(ids))
        for ns, pod, containers in pods
        for container, resources in containers.items()
        for resource, ids in resources.items()
    ]
    assert [
        (r.namespace, r.pod, r.container, r.resource_name, r.device_ids) for r in rows
    ] == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_podresources_decoder_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(podresources.PodResourcesError):
        podresources.decode_list_response(data)
