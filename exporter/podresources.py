"""Which GPU each container was given: the kubelet's PodResources API (v1, ``List``).

The kubelet serves gRPC on ``/var/lib/kubelet/pod-resources/kubelet.sock``. Rather than
ship generated protobuf code, this module decodes the four small messages of the
``List`` answer straight from the protobuf wire format (``decode_list_response``, pure
and tested on its own), and calls the method through grpcio's generic
``unary_unary`` with bytes in and out. grpcio is imported only by
``GrpcPodResources``: without it (or without the socket) the exporter places slices on
the GPUs their processes run on instead.

Messages (k8s.io/kubelet/pkg/apis/podresources/v1/api.proto):
ListPodResourcesResponse{1: repeated PodResources}, PodResources{1: name,
2: namespace, 3: repeated ContainerResources}, ContainerResources{1: name,
2: repeated ContainerDevices, ...}, ContainerDevices{1: resource_name,
2: repeated device_ids, ...}.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
LIST_METHOD = "/v1.PodResourcesLister/List"

GPU_RESOURCE_PREFIXES = ("nvidia.com/", "gpupool.io/")


@dataclass(frozen=True, kw_only=True)
class ContainerDevices:
    namespace: str
    pod: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


ContainerKey = tuple[str, str, str]
"""(namespace, pod, container)"""


class PodResourcesSource(Protocol):
    def gpu_assignments(self) -> Mapping[ContainerKey, tuple[str, ...]]:
        """GPU UUIDs (replica suffixes removed) per (namespace, pod, container)."""
        ...


class PodResourcesError(Exception):
    """The PodResources answer could not be read (bad bytes, or the call failed)."""


# --------------------------------------------------------------------------------------
# protobuf wire format (only what these messages use: varints and length-delimited)
# --------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise PodResourcesError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise PodResourcesError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of each field; length-delimited values as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise PodResourcesError("truncated length-delimited field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise PodResourcesError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise PodResourcesError("truncated fixed-width field")


def _text(value: bytes | int) -> str:
    if isinstance(value, int):
        raise PodResourcesError("expected a string field")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PodResourcesError(f"string field is not UTF-8: {exc}") from exc


def _message(value: bytes | int) -> bytes:
    if isinstance(value, int):
        raise PodResourcesError("expected an embedded message")
    return value


def decode_list_response(data: bytes) -> list[ContainerDevices]:
    """Decode a ListPodResourcesResponse into one row per container and resource."""
    rows: list[ContainerDevices] = []
    for number, pod_bytes in _fields(data):
        if number != 1:
            continue
        pod = namespace = ""
        containers: list[bytes] = []
        for field, value in _fields(_message(pod_bytes)):
            if field == 1:
                pod = _text(value)
            elif field == 2:
                namespace = _text(value)
            elif field == 3:
                containers.append(_message(value))
        for container_bytes in containers:
            container = ""
            devices: list[tuple[str, tuple[str, ...]]] = []
            for field, value in _fields(container_bytes):
                if field == 1:
                    container = _text(value)
                elif field == 2:
                    resource = ""
                    ids: list[str] = []
                    for dfield, dvalue in _fields(_message(value)):
                        if dfield == 1:
                            resource = _text(dvalue)
                        elif dfield == 2:
                            ids.append(_text(dvalue))
                    devices.append((resource, tuple(ids)))
            rows.extend(
                ContainerDevices(
                    namespace=namespace,
                    pod=pod,
                    container=container,
                    resource_name=resource,
                    device_ids=ids,
                )
                for resource, ids in devices
            )
    return rows


def gpu_uuid_of(device_id: str) -> str:
    """Device-plugin ids name a GPU by UUID; time-slicing replicas add ``::<n>``."""
    return device_id.split("::", 1)[0]


def gpu_assignments(rows: list[ContainerDevices]) -> dict[ContainerKey, tuple[str, ...]]:
    out: dict[ContainerKey, list[str]] = {}
    for row in rows:
        if not row.resource_name.startswith(GPU_RESOURCE_PREFIXES):
            continue
        uuids = out.setdefault((row.namespace, row.pod, row.container), [])
        for device_id in row.device_ids:
            uuid = gpu_uuid_of(device_id)
            if uuid not in uuids:
                uuids.append(uuid)
    return {key: tuple(value) for key, value in out.items()}


def _grpc() -> Any:
    """grpcio, untyped and optional: imported only when the socket is used."""
    return importlib.import_module("grpc")


class GrpcPodResources:
    """PodResources ``List`` over the kubelet's unix socket (needs grpcio)."""

    def __init__(self, socket: Path = DEFAULT_SOCKET, timeout_s: float = 2.0) -> None:
        grpc = _grpc()
        self._grpc = grpc
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self._list = self._channel.unary_unary(
            LIST_METHOD,
            request_serializer=lambda request: request,
            response_deserializer=lambda response: response,
        )

    def gpu_assignments(self) -> Mapping[ContainerKey, tuple[str, ...]]:
        try:
            data = self._list(b"", timeout=self._timeout)
        except self._grpc.RpcError as exc:
            raise PodResourcesError(f"PodResources List failed: {exc}") from exc
        return gpu_assignments(decode_list_response(bytes(data)))

    def close(self) -> None:
        self._channel.close()
