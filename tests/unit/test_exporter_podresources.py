"""The kubelet PodResources answer, decoded from protobuf wire bytes."""

from __future__ import annotations

import pytest

from exporter import podresources
from tests.support.exporter import encode_list_response

pytestmark = pytest.mark.unit


def test_decode_list_response_maps_containers_to_gpu_uuids() -> None:
    data = encode_list_response(
        [
            (
                "research",
                "trainer",
                {"main": {"nvidia.com/gpu": ["GPU-a", "GPU-b"], "example.com/nic": ["nic0"]}},
            ),
            ("search", "embedder", {"server": {"nvidia.com/gpu": ["GPU-c::3", "GPU-c::7"]}}),
            ("ml", "mig-job", {"main": {"nvidia.com/mig-1g.10gb": ["MIG-123"]}}),
        ]
    )
    rows = podresources.decode_list_response(data)
    assert {(r.namespace, r.pod, r.container, r.resource_name) for r in rows} == {
        ("research", "trainer", "main", "nvidia.com/gpu"),
        ("research", "trainer", "main", "example.com/nic"),
        ("search", "embedder", "server", "nvidia.com/gpu"),
        ("ml", "mig-job", "main", "nvidia.com/mig-1g.10gb"),
    }
    assert podresources.gpu_assignments(rows) == {
        ("research", "trainer", "main"): ("GPU-a", "GPU-b"),
        ("search", "embedder", "server"): ("GPU-c",),  # time-slicing replicas collapse
        ("ml", "mig-job", "main"): ("MIG-123",),
    }


def test_empty_answer_decodes_to_nothing() -> None:
    assert podresources.decode_list_response(b"") == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x0a\x05ab", id="truncated-length"),
        pytest.param(b"\x0a", id="truncated-varint"),
        pytest.param(b"\x0b", id="bad-wire-type"),
        pytest.param(b"\x08\x01", id="pod-as-varint"),
        pytest.param(b"\x0a\x04\x0a\x02\xff\xfe", id="name-not-utf8"),
    ],
)
def test_corrupt_answer_raises_podresources_error(data: bytes) -> None:
    with pytest.raises(podresources.PodResourcesError):
        podresources.decode_list_response(data)
