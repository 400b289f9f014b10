"""Builders for exporter tests: a fake NVML at the pynvml call boundary, pods as the
``kubernetes`` client's own models, cgroup samples, a real Prometheus on loopback.

``FakeNvml`` implements exactly the ``nvml*`` functions the exporter calls, with the
signatures and return shapes of nvidia-ml-py (its own ctypes structs, friendly objects
and ``NVMLError`` classes); any other ``nvml*`` function raises AttributeError, so a new
NVML call in the exporter fails the tests until the fake learns it. Constants and
structs are pynvml's own.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

from governance import contract

MIB = 1024 * 1024


@dataclass
class FakeMig:
    uuid: str
    instance_id: int
    name: str
    total: int = 10240 * MIB
    used: int = 1024 * MIB


@dataclass
class FakeGpu:
    """One GPU as the fake NVML answers for it."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    minor: int = 0
    util_gpu: int = 37
    util_mem: int = 12
    enc: int = 0
    dec: int = 0
    total: int = 81559 * MIB
    used: int = 20480 * MIB
    reserved: int = 512 * MIB
    temp: int = 41
    memory_temp: int = 38
    power_mw: int = 180_500
    energy_mj: int = 123_456_789
    sm_clock: int = 1980
    mem_clock: int = 2619
    replay: int = 3
    ecc_sbe: int = 1
    ecc_dbe: int = 0
    remapped: tuple[int, int, int, int] = (2, 0, 0, 0)
    throttle: int = 0x4
    processes: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    """(pid, used bytes or None, gpuInstanceId or None)."""
    mps_processes: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    process_util: list[tuple[int, int, int]] = field(default_factory=list)
    """(pid, smUtil, timeStamp)."""
    xids: list[int] = field(default_factory=list)
    mig: list[FakeMig] = field(default_factory=list)
    gpm: dict[int, float] | None = None
    """GPM metric id -> percent; None: the device has no GPM."""
    errors: dict[str, int] = field(default_factory=dict)
    """NVML function name -> NVML_ERROR_* code it raises for this GPU."""
    field_errors: dict[int, int] = field(default_factory=dict)
    """NVML field id -> per-field nvmlReturn in nvmlDeviceGetFieldValues."""


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass(frozen=True)
class _MigHandle:
    index: int
    position: int


class FakeNvml:
    """nvidia-ml-py's module surface, answering from ``gpus``."""

    def __init__(self, gpus: list[FakeGpu], *, driver: str = "580.159.04") -> None:
        self.gpus = gpus
        self.driver = driver
        self.initialised = False
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: dict[str, int] = {}
        self.global_errors: dict[str, int] = {}
        """Function name -> error code, for calls that take no device."""
        self._event_sets: dict[int, int] = {}

    def __dir__(self) -> list[str]:
        return sorted({*dir(pynvml), *vars(type(self)), *vars(self)})

    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if name.startswith("nvml") and callable(value):
            raise AttributeError(f"FakeNvml does not implement {name}")
        return value

    # -- plumbing
    def _enter(self, call: str, gpu: FakeGpu | None = None) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        if call not in ("nvmlInit", "nvmlShutdown") and not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        code = self.global_errors.get(call)
        if code is None and gpu is not None:
            code = gpu.errors.get(call)
        if code is not None:
            raise pynvml.NVMLError(code)

    def _gpu(self, handle: _Handle | _MigHandle) -> FakeGpu:
        return self.gpus[handle.index]

    # -- library
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.init_calls += 1
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.shutdown_calls += 1
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex", self.gpus[index])
        return _Handle(index)

    # -- identity
    def nvmlDeviceGetUUID(self, handle: _Handle | _MigHandle) -> str:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetUUID", gpu)
        if isinstance(handle, _MigHandle):
            return gpu.mig[handle.position].uuid
        return gpu.uuid

    def nvmlDeviceGetName(self, handle: _Handle | _MigHandle) -> str:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetName", gpu)
        if isinstance(handle, _MigHandle):
            return gpu.mig[handle.position].name
        return gpu.name

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetPciInfo", gpu)
        info = pynvml.nvmlPciInfo_t()
        info.busId = gpu.bus_id.encode()
        return info

    def nvmlDeviceGetMinorNumber(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMinorNumber", gpu)
        return gpu.minor

    # -- fields
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetUtilizationRates", gpu)
        util = pynvml.c_nvmlUtilization_t()
        util.gpu, util.memory = gpu.util_gpu, gpu.util_mem
        return util

    def nvmlDeviceGetEncoderUtilization(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetEncoderUtilization", gpu)
        return [gpu.enc, 167_000]

    def nvmlDeviceGetDecoderUtilization(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetDecoderUtilization", gpu)
        return [gpu.dec, 167_000]

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle | _MigHandle, version: Any = None) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo", gpu)
        if isinstance(handle, _MigHandle):
            mig = gpu.mig[handle.position]
            info = pynvml.c_nvmlMemory_t()
            info.total, info.used, info.free = mig.total, mig.used, mig.total - mig.used
            return info
        if version:
            info2 = pynvml.c_nvmlMemory_v2_t()
            info2.version = version
            info2.total, info2.reserved, info2.used = gpu.total, gpu.reserved, gpu.used
            info2.free = gpu.total - gpu.reserved - gpu.used
            return info2
        info = pynvml.c_nvmlMemory_t()
        info.total, info.used = gpu.total, gpu.used + gpu.reserved
        info.free = gpu.total - info.used
        return info

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetTemperature", gpu)
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return gpu.temp

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[int]) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetFieldValues", gpu)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for position, field_id in enumerate(field_ids):
            value = values[position]
            value.fieldId = field_id
            value.nvmlReturn = gpu.field_errors.get(field_id, pynvml.NVML_SUCCESS)
            value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            assert field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP
            value.value.uiVal = gpu.memory_temp
        return values

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetPowerUsage", gpu)
        return gpu.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetTotalEnergyConsumption", gpu)
        return gpu.energy_mj

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetClockInfo", gpu)
        return gpu.sm_clock if clock == pynvml.NVML_CLOCK_SM else gpu.mem_clock

    def nvmlDeviceGetPcieReplayCounter(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetPcieReplayCounter", gpu)
        return gpu.replay

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter: int) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetTotalEccErrors", gpu)
        assert counter == pynvml.NVML_VOLATILE_ECC
        return gpu.ecc_sbe if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else gpu.ecc_dbe

    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetRemappedRows", gpu)
        return gpu.remapped

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetCurrentClocksEventReasons", gpu)
        return gpu.throttle

    # -- XID events
    def nvmlEventSetCreate(self) -> int:
        self._enter("nvmlEventSetCreate")
        return len(self._event_sets) + 1000

    def nvmlDeviceRegisterEvents(self, handle: _Handle, types: int, event_set: int) -> None:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceRegisterEvents", gpu)
        assert types & pynvml.nvmlEventTypeXidCriticalError
        self._event_sets[event_set] = handle.index

    def nvmlEventSetWait_v2(self, event_set: int, timeout_ms: int) -> Any:
        gpu = self.gpus[self._event_sets[event_set]]
        self._enter("nvmlEventSetWait_v2", gpu)
        if not gpu.xids:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        data = pynvml.c_nvmlEventData_t()
        data.eventType = pynvml.nvmlEventTypeXidCriticalError
        data.eventData = gpu.xids.pop(0)
        return data

    # -- GPM
    def nvmlGpmQueryDeviceSupport(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlGpmQueryDeviceSupport", gpu)
        support = pynvml.c_nvmlGpmSupport_t()
        support.isSupportedDevice = 0 if gpu.gpm is None else 1
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        self._enter("nvmlGpmSampleAlloc")
        return ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self._enter("nvmlGpmSampleFree")

    def nvmlGpmSampleGet(self, handle: _Handle, sample: Any) -> Any:
        gpu = self._gpu(handle)
        self._enter("nvmlGpmSampleGet", gpu)
        self._last_gpm_gpu = gpu
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        gpu = self._last_gpm_gpu
        self._enter("nvmlGpmMetricsGet", gpu)
        assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        assert request.sample1 and request.sample2
        for position in range(request.numMetrics):
            metric = request.metrics[position]
            known = gpu.gpm or {}
            if metric.metricId in known:
                metric.value = known[metric.metricId]
                metric.nvmlReturn = pynvml.NVML_SUCCESS
            else:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return request

    # -- MIG
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMigMode", gpu)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMaxMigDeviceCount", gpu)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, position: int) -> _MigHandle:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMigDeviceHandleByIndex", gpu)
        if position >= len(gpu.mig):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return _MigHandle(handle.index, position)

    def nvmlDeviceGetGpuInstanceId(self, handle: _MigHandle) -> int:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetGpuInstanceId", gpu)
        return gpu.mig[handle.position].instance_id

    # -- processes
    def _procs(self, items: list[tuple[int, int | None, int | None]]) -> list[Any]:
        out = []
        for pid, used, instance in items:
            out.append(
                pynvml.nvmlFriendlyObject(
                    {
                        "pid": pid,
                        "usedGpuMemory": used,
                        "gpuInstanceId": 0xFFFFFFFF if instance is None else instance,
                        "computeInstanceId": 0xFFFFFFFF if instance is None else 0,
                    }
                )
            )
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetComputeRunningProcesses", gpu)
        return self._procs(gpu.processes)

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetMPSComputeRunningProcesses", gpu)
        return self._procs(gpu.mps_processes)

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, since: int) -> list[Any]:
        gpu = self._gpu(handle)
        self._enter("nvmlDeviceGetProcessUtilization", gpu)
        samples = [s for s in gpu.process_util if s[2] > since]
        if not samples:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        out = (pynvml.c_nvmlProcessUtilizationSample_t * len(samples))()
        for position, (pid, sm, stamp) in enumerate(samples):
            out[position].pid, out[position].smUtil, out[position].timeStamp = pid, sm, stamp
        return out[0 : len(samples)]


NVML_FUNCTIONS_USED = tuple(
    name for name in vars(FakeNvml) if name.startswith("nvml") and callable(vars(FakeNvml)[name])
)


# --------------------------------------------------------------------------------------
# Pods, as the kubernetes client's models serialise them
# --------------------------------------------------------------------------------------


def make_pod_json(**kwargs: Any) -> dict[str, Any]:
    """A pod in API JSON, as ``ApiClient().sanitize_for_serialization`` writes a V1Pod."""
    from kubernetes import client

    serialised: dict[str, Any] = client.ApiClient().sanitize_for_serialization(make_pod(**kwargs))
    return serialised


def make_pod(
    *,
    name: str,
    namespace: str = "research",
    uid: str = "6f1c7b7a-3d2b-4b8c-9e1f-0123456789ab",
    containers: dict[str, str] | None = None,
    grants: dict[str, contract.SliceGrant] | None = None,
    department: str = "research",
    queue: str = "training",
    sku: str = "h100-1g-20gb",
    phase: str = "Running",
) -> Any:
    """A ``kubernetes.client.V1Pod`` as the API server returns it for a running pod."""
    from kubernetes import client

    containers = containers or {"main": "a" * 64}
    annotations = {}
    if grants is not None:
        annotations[contract.ANNOTATION_SLICES] = contract.dump_slices(grants)
    pod = client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid,
            labels={
                contract.LABEL_DEPARTMENT: department,
                contract.LABEL_QUEUE: queue,
                contract.LABEL_SKU: sku,
            },
            annotations=annotations,
        ),
        spec=client.V1PodSpec(
            node_name="gpu-node-1",
            containers=[client.V1Container(name=cname, image="cuda:12") for cname in containers],
        ),
        status=client.V1PodStatus(
            phase=phase,
            container_statuses=[
                client.V1ContainerStatus(
                    name=cname,
                    container_id=f"containerd://{cid}",
                    image="cuda:12",
                    image_id="sha256:" + "0" * 64,
                    ready=True,
                    restart_count=0,
                )
                for cname, cid in containers.items()
            ],
        ),
    )
    return pod


def grant(
    memory_mib: int, compute_pct: int, *, count: int = 1, sku: str = "h100-1g-20gb"
) -> contract.SliceGrant:
    return contract.SliceGrant(
        count=count,
        memory_mib=memory_mib,
        compute_pct=compute_pct,
        backend="hami",
        pool="h100",
        sku=sku,
    )


# --------------------------------------------------------------------------------------
# A real Prometheus on loopback
# --------------------------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_exporter_process(port: int, backend: str, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m exporter`` on 127.0.0.1:``port`` with ``backend``, sampling every
    second; its stderr piped (the caller closes it), stdout discarded."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "exporter", "--backend", backend, *extra),
            *("--address", "127.0.0.1", "--port", str(port), "--interval", "1"),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, *, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = self.query(expr)
            except urllib.error.HTTPError:
                raise  # a bad query is a test bug, not a slow start
            except OSError:
                result = []
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.2)


@contextmanager
def running_prometheus(target: str, *, scrape_interval: str = "1s") -> Iterator[Prometheus]:
    """Debian's prometheus scraping ``target`` (host:port), in a temp dir, on loopback."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gpupool-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: gpupool-exporter\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "HOME": tmp},
        )
        try:
            prom = Prometheus(url=f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None:
                        stderr = process.stderr.read().decode() if process.stderr else ""
                        raise RuntimeError(f"prometheus exited: {stderr}") from None
                    time.sleep(0.1)
            else:
                raise RuntimeError("prometheus did not become ready within 20 s")
            yield prom
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


# --------------------------------------------------------------------------------------
# protobuf wire encoding of PodResources answers (what the kubelet sends)
# --------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_list_response(pods: list[tuple[str, str, dict[str, dict[str, list[str]]]]]) -> bytes:
    """ListPodResourcesResponse for [(namespace, pod, {container: {resource: [ids]}})]."""
    out = b""
    for namespace, pod, containers in pods:
        body = _field(1, pod.encode()) + _field(2, namespace.encode())
        for container, resources in containers.items():
            cbody = _field(1, container.encode())
            for resource, ids in resources.items():
                dbody = _field(1, resource.encode())
                for device_id in ids:
                    dbody += _field(2, device_id.encode())
                # topology (field 3) as the kubelet sends it: NUMA node 0
                dbody += _field(3, _field(1, _varint(1 << 3 | 0) + _varint(0)))
                cbody += _field(2, dbody)
            cbody += _varint(3 << 3 | 0) + _varint(7)  # a stray varint field (cpu_ids)
            body += _field(3, cbody)
        out += _field(1, body)
    return out
