"""PodResources List over a real gRPC server on a unix socket (the kubelet's transport)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import podresources
from tests.support.exporter import encode_list_response

pytestmark = pytest.mark.integration

grpc: Any = pytest.importorskip(
    "grpc", reason="grpcio is not installed (optional for the exporter)"
)

ANSWER = encode_list_response(
    [
        ("research", "trainer", {"main": {"nvidia.com/gpu": ["GPU-a", "GPU-b"]}}),
        ("search", "embedder", {"server": {"nvidia.com/gpu": ["GPU-c::2"]}}),
    ]
)


@pytest.fixture
def kubelet_socket(tmp_path: Path) -> Iterator[Path]:
    from concurrent import futures

    calls: list[bytes] = []

    def list_pods(request: bytes, context: Any) -> bytes:
        calls.append(request)
        return ANSWER

    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {
            "List": grpc.unary_unary_rpc_method_handler(
                list_pods, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    socket = tmp_path / "kubelet.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        yield socket
    finally:
        server.stop(None)
    assert calls == [b""]  # an empty ListPodResourcesRequest


def test_list_over_grpc_gives_gpu_assignments(kubelet_socket: Path) -> None:
    client = podresources.GrpcPodResources(kubelet_socket, timeout_s=5)
    try:
        assert client.gpu_assignments() == {
            ("research", "trainer", "main"): ("GPU-a", "GPU-b"),
            ("search", "embedder", "server"): ("GPU-c",),
        }
    finally:
        client.close()


def test_unreachable_socket_raises_podresources_error(tmp_path: Path) -> None:
    client = podresources.GrpcPodResources(tmp_path / "absent.sock", timeout_s=0.5)
    try:
        with pytest.raises(podresources.PodResourcesError, match="List failed"):
            client.gpu_assignments()
    finally:
        client.close()
