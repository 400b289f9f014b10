"""The NVML backend against a real NVIDIA GPU and driver (marker ``gpu``).

Runs where NVML initialises (a machine with an NVIDIA GPU and its driver); anywhere
else every test skips and says why. It needs nothing beyond ``pip install -e
'.[test]'``: NVML through nvidia-ml-py, and for the process test the CUDA driver
library that comes with the driver (``libcuda.so.1``, through ctypes), so no CUDA
toolkit or framework. The unit tests fake NVML at the pynvml call boundary; these
check that the boundary they fake is the real one:

* what the backend reads is what pynvml answers directly (UUIDs, names, driver,
  memory), and every field is in DCGM's units and plausible;
* a process that allocates GPU memory is listed, on its GPU, with that memory;
* ``python -m exporter --backend nvml`` serves the DCGM series of every GPU.

    python -m pytest -m gpu tests/integration/test_exporter_nvml_gpu.py -v
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest

from exporter.backends.nvml import NvmlBackend
from exporter.model import MIB, BackendReading
from governance import contract
from tests.support.exporter import free_port, start_exporter_process

ROOT = Path(__file__).resolve().parents[2]


def _nvml_missing() -> str | None:
    """Why NVML cannot be used here, or None."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"no usable NVIDIA GPU: nvmlInit failed ({exc})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML initialised but sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


NVML_MISSING = _nvml_missing()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.gpu,
    pytest.mark.skipif(NVML_MISSING is not None, reason=str(NVML_MISSING)),
]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
def nvml() -> Iterator[Any]:
    """pynvml itself, initialised: what the backend is compared with."""
    pynvml.nvmlInit()
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture
def reading() -> Iterator[BackendReading]:
    """Two samples of the real backend (GPM and the energy counter need two); the
    second is returned."""
    backend = NvmlBackend()
    try:
        backend.read()
        time.sleep(0.5)
        yield backend.read()
    finally:
        backend.close()


def _whole_gpus(reading: BackendReading) -> list[Any]:
    return [g for g in reading.gpus if not g.identity.is_mig]


def test_the_backend_reads_every_gpu_as_nvml_names_it(nvml: Any, reading: BackendReading) -> None:
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    gpus = _whole_gpus(reading)
    assert [g.identity.index for g in gpus] == list(range(count))
    assert [g.identity.uuid for g in gpus] == [_text(nvml.nvmlDeviceGetUUID(h)) for h in handles]
    assert [g.identity.model for g in gpus] == [_text(nvml.nvmlDeviceGetName(h)) for h in handles]
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    for gpu, handle in zip(gpus, handles, strict=True):
        assert gpu.identity.uuid.startswith("GPU-")
        assert gpu.identity.driver_version == driver
        assert gpu.identity.device == f"nvidia{nvml.nvmlDeviceGetMinorNumber(handle)}"
        assert gpu.identity.pci_bus_id == _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
        assert gpu.memory_total_bytes == nvml.nvmlDeviceGetMemoryInfo(handle).total
        assert gpu.healthy, reading.errors


def test_every_field_is_in_dcgm_units_and_plausible(reading: BackendReading) -> None:
    benign = (
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_ERROR_FUNCTION_NOT_FOUND",
        "NVML_ERROR_NO_PERMISSION",
    )
    assert [e for e in reading.errors if e.code not in benign] == []
    for gpu in _whole_gpus(reading):
        v = gpu.values
        assert 0 <= v[contract.DCGM_FI_DEV_GPU_UTIL] <= 100
        assert 0 <= v[contract.DCGM_FI_DEV_MEM_COPY_UTIL] <= 100
        # MiB, as dcgm-exporter: used + free (+ reserved, NVML's v2 memory info) = total
        total_mib = gpu.memory_total_bytes / MIB
        parts = (
            v[contract.DCGM_FI_DEV_FB_USED]
            + v[contract.DCGM_FI_DEV_FB_FREE]
            + v.get(contract.DCGM_FI_DEV_FB_RESERVED, 0.0)
        )
        assert abs(parts - total_mib) <= 3, (parts, total_mib)
        assert 0 < v[contract.DCGM_FI_DEV_GPU_TEMP] < 120  # degrees C
        if contract.DCGM_FI_DEV_POWER_USAGE in v:  # watts (NVML answers milliwatts)
            assert 1 < v[contract.DCGM_FI_DEV_POWER_USAGE] < 2000
        if contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION in v:  # millijoules since boot
            assert v[contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION] > 0
        assert 0 < v[contract.DCGM_FI_DEV_SM_CLOCK] < 5000  # MHz
        assert 0 < v[contract.DCGM_FI_DEV_MEM_CLOCK] < 20000
        assert v[contract.DCGM_FI_DEV_XID_ERRORS] >= 0


# A process of the CUDA driver API alone: a context on device 0 (in PCI order, as NVML
# numbers them) and an allocation, held until stdin closes.
CUDA_HOLD = r"""
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
def check(result, what):
    if result != 0:
        sys.exit(f"{what} failed: CUresult {result}")
check(cuda.cuInit(0), "cuInit")
device = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
context = ctypes.c_void_p()
check(cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate")
pointer = ctypes.c_uint64()
check(cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(int(sys.argv[1]))), "cuMemAlloc")
print("ready", flush=True)
sys.stdin.read()
"""
HOLD_BYTES = 256 * MIB


def test_a_process_that_allocates_gpu_memory_is_listed_with_it(nvml: Any) -> None:
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    try:
        mig_current, _ = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        mig_current = 0
    if mig_current:
        pytest.skip("GPU 0 is in MIG mode: a CUDA context needs a MIG device to run on")
    backend = NvmlBackend()
    try:
        before = {p.pid for p in backend.read().processes}
        holder = subprocess.Popen(
            [sys.executable, "-c", CUDA_HOLD, str(HOLD_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        )
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline().strip()
            if line != "ready":
                holder.wait(10)
                stderr = holder.stderr.read() if holder.stderr else ""
                pytest.skip(f"the CUDA driver library cannot hold memory here: {stderr.strip()}")
            uuid0 = _text(nvml.nvmlDeviceGetUUID(handle))
            deadline = time.monotonic() + 10
            ours: list[Any] = []
            while time.monotonic() < deadline and not ours:
                processes = backend.read().processes
                # NVML names processes by the host's pid; inside a container without
                # the host's pid namespace the holder's own pid differs: then the one
                # new process is it.
                ours = [p for p in processes if p.pid == holder.pid] or [
                    p for p in processes if p.pid not in before and p.gpu_uuid == uuid0
                ]
                time.sleep(0.2)
            assert len(ours) == 1, processes
            (process,) = ours
            assert process.gpu_uuid == uuid0
            assert process.used_memory_bytes is not None
            assert process.used_memory_bytes >= HOLD_BYTES
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            holder.wait(10)
            for stream in (holder.stdout, holder.stderr):
                if stream is not None:
                    stream.close()
    finally:
        backend.close()


def test_the_exporter_process_serves_every_gpu_with_dcgm_names(nvml: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    uuids = {
        _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
        for i in range(nvml.nvmlDeviceGetCount())
    }
    port = free_port()
    process = start_exporter_process(port, "nvml", "--no-kubernetes")
    try:
        served: dict[str, set[str]] = {}
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(served.get("DCGM_FI_DEV_FB_USED", ())) != uuids:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            served = {}
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if "UUID" in sample.labels:
                        served.setdefault(sample.name, set()).add(sample.labels["UUID"])
            time.sleep(0.5)
        for name in (
            "DCGM_FI_DEV_GPU_UTIL",
            "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_FB_FREE",
            "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_SM_CLOCK",
        ):
            assert served.get(name) == uuids, (name, served.get(name))
        assert "gpupool_exporter_up 1.0" in body
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        if process.stderr is not None:
            process.stderr.close()
