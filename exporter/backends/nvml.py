"""The NVML backend: per-GPU fields, MIG instances and GPU processes via nvidia-ml-py.

Every NVML function goes through ``_Reader.call``, which turns an ``NVMLError`` into a
``CallError`` (call name, NVML error name, GPU) so one failing GPU or call costs only
its own series. The rules:

- ``NVML_ERROR_NOT_SUPPORTED`` (this model has no such counter): the field is absent,
  the error is counted once and the call is not made again on that GPU.
- a value equal to ``NVML_VALUE_NOT_AVAILABLE`` (all ones): the field is absent.
- any other error: the field is absent, the error is counted, and the GPU is marked
  unhealthy for this sample (``gpupool_exporter_gpu_healthy 0``).
- ``NVML_ERROR_UNINITIALIZED``, ``DRIVER_NOT_LOADED`` or ``LIB_RM_VERSION_MISMATCH``
  (or a failing ``nvmlDeviceGetCount``): NVML is shut down and initialised again at
  the next sample.

The module is passed in (``NvmlBackend(nvml=pynvml)``), so tests replace NVML at the
pynvml call boundary with a fake that raises pynvml's own error classes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from typing import Any

from exporter import fields
from exporter.model import MIB, BackendReading, CallError, GpuIdentity, GpuReading, ProcessUsage
from governance import contract

log = logging.getLogger(__name__)

_NOT_AVAILABLE = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
_FAILED = object()
_REINIT_ERRORS = (
    "NVML_ERROR_UNINITIALIZED",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
)
_BENIGN_ERRORS = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _available(value: Any) -> bool:
    return value is not None and not (isinstance(value, int) and value in _NOT_AVAILABLE)


def mig_profile_of(name: str) -> str:
    """``NVIDIA A100-SXM4-40GB MIG 1g.5gb`` -> ``1g.5gb`` (dcgm-exporter's GPU_I_PROFILE)."""
    _, sep, profile = name.rpartition("MIG ")
    return profile.strip() if sep else ""


class NvmlBackend:
    """Reads every GPU through NVML; initialises once, re-initialises after failure."""

    name = "nvml"

    def __init__(self, nvml: Any = None, *, gpm: bool = True) -> None:
        if nvml is None:
            nvml = importlib.import_module("pynvml")
        self._nvml = nvml
        self._gpm_enabled = gpm
        self._codes: dict[int, str] = {
            getattr(nvml, name): name
            for name in dir(nvml)
            if name.startswith("NVML_ERROR_") and isinstance(getattr(nvml, name), int)
        }
        self._initialised = False
        self._driver = ""
        self._identities: dict[int, GpuIdentity] = {}
        self._unsupported: set[tuple[str, int]] = set()
        self._events: dict[int, Any] = {}
        self._last_xid: dict[int, int] = {}
        self._gpm_samples: dict[int, Any] = {}
        self._process_ts: dict[int, int] = {}

    # ---------------------------------------------------------------- plumbing

    def _code(self, exc: Exception) -> str:
        value = getattr(exc, "value", None)
        return (
            self._codes.get(value, f"NVML_ERROR_{value}")
            if isinstance(value, int)
            else ("NVML_ERROR_UNKNOWN")
        )

    def _call(
        self,
        errors: list[CallError],
        call: str,
        *args: Any,
        gpu: int | None = None,
        health: list[bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``nvml.<call>``; on NVMLError record it and return ``_FAILED``."""
        if gpu is not None and (call, gpu) in self._unsupported:
            return _FAILED
        function = getattr(self._nvml, call, None)
        if function is None:
            # An older nvidia-ml-py without this function: the same as a driver without it.
            if (call, -1) not in self._unsupported:
                self._unsupported.add((call, -1))
                errors.append(CallError(call=call, code="NVML_ERROR_FUNCTION_NOT_FOUND"))
            return _FAILED
        try:
            return function(*args, **kwargs)
        except self._nvml.NVMLError as exc:
            code = self._code(exc)
            label = "" if gpu is None else str(gpu)
            errors.append(CallError(call=call, code=code, gpu=label))
            if code in _BENIGN_ERRORS and gpu is not None:
                self._unsupported.add((call, gpu))
            elif health is not None and code != "NVML_ERROR_NO_PERMISSION":
                health[0] = False
            if code in _REINIT_ERRORS:
                self._initialised = False
            return _FAILED

    def _shutdown(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()
        self._identities.clear()
        self._events.clear()
        self._gpm_samples.clear()
        self._process_ts.clear()
        self._unsupported.clear()

    def close(self) -> None:
        if self._initialised:
            self._initialised = False
            self._shutdown()

    # ---------------------------------------------------------------- reading

    def read(self) -> BackendReading:
        errors: list[CallError] = []
        if not self._initialised:
            if self._call(errors, "nvmlInit") is _FAILED:
                return BackendReading(gpus=(), errors=tuple(errors))
            self._initialised = True
            driver = self._call(errors, "nvmlSystemGetDriverVersion")
            self._driver = "" if driver is _FAILED else _text(driver)
        count = self._call(errors, "nvmlDeviceGetCount")
        if count is _FAILED:
            self._initialised = False
            self._shutdown()
            return BackendReading(gpus=(), errors=tuple(errors))
        gpus: list[GpuReading] = []
        processes: list[ProcessUsage] = []
        for index in range(int(count)):
            gpus.extend(self._read_gpu(index, errors, processes))
        if not self._initialised:
            self._shutdown()
        return BackendReading(gpus=tuple(gpus), processes=tuple(processes), errors=tuple(errors))

    def _identity(self, index: int, handle: Any, errors: list[CallError]) -> GpuIdentity | None:
        cached = self._identities.get(index)
        if cached is not None:
            return cached
        uuid = self._call(errors, "nvmlDeviceGetUUID", handle, gpu=index)
        if uuid is _FAILED:
            return None
        name = self._call(errors, "nvmlDeviceGetName", handle, gpu=index)
        pci = self._call(errors, "nvmlDeviceGetPciInfo", handle, gpu=index)
        minor = self._call(errors, "nvmlDeviceGetMinorNumber", handle, gpu=index)
        identity = GpuIdentity(
            index=index,
            uuid=_text(uuid),
            model="" if name is _FAILED else _text(name),
            pci_bus_id="" if pci is _FAILED else _text(pci.busId),
            device=f"nvidia{minor if minor is not _FAILED else index}",
            driver_version=self._driver,
        )
        self._identities[index] = identity
        self._register_xid_events(index, handle, errors)
        return identity

    def _register_xid_events(self, index: int, handle: Any, errors: list[CallError]) -> None:
        # One event set per GPU, so that an event needs no handle -> GPU lookup.
        event_set = self._call(errors, "nvmlEventSetCreate")
        if event_set is _FAILED:
            return
        done = self._call(
            errors,
            "nvmlDeviceRegisterEvents",
            handle,
            self._nvml.nvmlEventTypeXidCriticalError,
            event_set,
            gpu=index,
        )
        if done is not _FAILED:
            self._events[index] = event_set

    def _read_gpu(
        self, index: int, errors: list[CallError], processes: list[ProcessUsage]
    ) -> list[GpuReading]:
        health = [True]
        handle = self._call(errors, "nvmlDeviceGetHandleByIndex", index, gpu=index, health=health)
        identity = None if handle is _FAILED else self._identity(index, handle, errors)
        if identity is None:
            known = self._identities.get(index) or GpuIdentity(
                index=index,
                uuid="",
                model="",
                device=f"nvidia{index}",
                driver_version=self._driver,
            )
            return [GpuReading(identity=known, values={}, healthy=False)]
        values: dict[str, float] = {}
        total = 0

        def put(field: str, value: Any, scale: float = 1.0) -> None:
            if _available(value):
                values[field] = float(value) * scale

        def call(name: str, *args: Any, **kwargs: Any) -> Any:
            return self._call(errors, name, *args, gpu=index, health=health, **kwargs)

        util = call("nvmlDeviceGetUtilizationRates", handle)
        if util is not _FAILED:
            put(contract.DCGM_FI_DEV_GPU_UTIL, util.gpu)
            put(contract.DCGM_FI_DEV_MEM_COPY_UTIL, util.memory)
        for name, field in (
            ("nvmlDeviceGetEncoderUtilization", contract.DCGM_FI_DEV_ENC_UTIL),
            ("nvmlDeviceGetDecoderUtilization", contract.DCGM_FI_DEV_DEC_UTIL),
        ):
            answer = call(name, handle)
            if answer is not _FAILED:
                put(field, answer[0])
        memory = self._memory(index, handle, errors, health, values)
        if memory is not None:
            total = memory
        temp = call("nvmlDeviceGetTemperature", handle, self._nvml.NVML_TEMPERATURE_GPU)
        put(contract.DCGM_FI_DEV_GPU_TEMP, None if temp is _FAILED else temp)
        self._memory_temp(index, handle, errors, health, values)
        power = call("nvmlDeviceGetPowerUsage", handle)
        put(contract.DCGM_FI_DEV_POWER_USAGE, None if power is _FAILED else power, 1e-3)
        energy = call("nvmlDeviceGetTotalEnergyConsumption", handle)
        put(contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, None if energy is _FAILED else energy)
        for clock, field in (
            (self._nvml.NVML_CLOCK_SM, contract.DCGM_FI_DEV_SM_CLOCK),
            (self._nvml.NVML_CLOCK_MEM, contract.DCGM_FI_DEV_MEM_CLOCK),
        ):
            mhz = call("nvmlDeviceGetClockInfo", handle, clock)
            put(field, None if mhz is _FAILED else mhz)
        replay = call("nvmlDeviceGetPcieReplayCounter", handle)
        put(contract.DCGM_FI_DEV_PCIE_REPLAY_COUNTER, None if replay is _FAILED else replay)
        for error_type, field in (
            (self._nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, contract.DCGM_FI_DEV_ECC_SBE_VOL_TOTAL),
            (self._nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, contract.DCGM_FI_DEV_ECC_DBE_VOL_TOTAL),
        ):
            ecc = call(
                "nvmlDeviceGetTotalEccErrors", handle, error_type, self._nvml.NVML_VOLATILE_ECC
            )
            put(field, None if ecc is _FAILED else ecc)
        rows = call("nvmlDeviceGetRemappedRows", handle)
        if rows is not _FAILED:
            corrected, uncorrected, _pending, failure = rows
            put(contract.DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS, corrected)
            put(contract.DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS, uncorrected)
            put(contract.DCGM_FI_DEV_ROW_REMAP_FAILURE, failure)
        # nvidia-ml-py renamed "throttle reasons" to "event reasons" (12.535); either works.
        reasons_call = (
            "nvmlDeviceGetCurrentClocksEventReasons"
            if getattr(self._nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) is not None
            else "nvmlDeviceGetCurrentClocksThrottleReasons"
        )
        reasons = call(reasons_call, handle)
        put(contract.DCGM_FI_DEV_CLOCK_THROTTLE_REASONS, None if reasons is _FAILED else reasons)
        self._xid(index, errors)
        values[contract.DCGM_FI_DEV_XID_ERRORS] = float(self._last_xid.get(index, 0))
        if self._gpm_enabled:
            self._gpm(index, handle, errors, values)

        readings = [
            GpuReading(
                identity=identity, values=values, healthy=health[0], memory_total_bytes=total
            )
        ]
        mig = self._mig(index, handle, identity, errors, health)
        readings.extend(mig)
        by_instance = {reading.identity.mig_instance_id: reading.identity.key for reading in mig}
        processes.extend(self._processes(index, handle, identity, by_instance, errors, health))
        if not health[0]:
            readings[0] = GpuReading(
                identity=identity, values=values, healthy=False, memory_total_bytes=total
            )
        return readings

    def _memory(
        self,
        index: int,
        handle: Any,
        errors: list[CallError],
        health: list[bool],
        values: dict[str, float],
    ) -> int | None:
        version = getattr(self._nvml, "nvmlMemory_v2", None)
        info: Any = _FAILED
        if version is not None and ("nvmlDeviceGetMemoryInfo_v2", index) not in self._unsupported:
            try:
                info = self._nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            except (self._nvml.NVMLError, TypeError) as exc:
                # TypeError: an nvidia-ml-py too old to take ``version``.
                code = (
                    self._code(exc)
                    if isinstance(exc, self._nvml.NVMLError)
                    else ("NVML_ERROR_FUNCTION_NOT_FOUND")
                )
                errors.append(
                    CallError(call="nvmlDeviceGetMemoryInfo_v2", code=code, gpu=str(index))
                )
                self._unsupported.add(("nvmlDeviceGetMemoryInfo_v2", index))
        if info is _FAILED:
            info = self._call(errors, "nvmlDeviceGetMemoryInfo", handle, gpu=index, health=health)
        if info is _FAILED:
            return None
        if _available(info.used):
            values[contract.DCGM_FI_DEV_FB_USED] = info.used // MIB
        if _available(info.free):
            values[contract.DCGM_FI_DEV_FB_FREE] = info.free // MIB
        reserved: Any = getattr(info, "reserved", None)
        if _available(reserved):
            values[contract.DCGM_FI_DEV_FB_RESERVED] = int(reserved) // MIB
        return int(info.total) if _available(info.total) else 0

    def _memory_temp(
        self,
        index: int,
        handle: Any,
        errors: list[CallError],
        health: list[bool],
        values: dict[str, float],
    ) -> None:
        nvml = self._nvml
        answer = self._call(
            errors,
            "nvmlDeviceGetFieldValues",
            handle,
            [nvml.NVML_FI_DEV_MEMORY_TEMP],
            gpu=index,
            health=health,
        )
        if answer is _FAILED:
            return
        value = answer[0]
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            code = self._codes.get(value.nvmlReturn, f"NVML_ERROR_{value.nvmlReturn}")
            if ("NVML_FI_DEV_MEMORY_TEMP", index) not in self._unsupported:
                errors.append(CallError(call="nvmlDeviceGetFieldValues", code=code, gpu=str(index)))
            if code in _BENIGN_ERRORS:
                self._unsupported.add(("NVML_FI_DEV_MEMORY_TEMP", index))
            return
        member = {
            nvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
            nvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        }.get(value.valueType, "uiVal")
        raw = getattr(value.value, member)
        if _available(raw):
            values[contract.DCGM_FI_DEV_MEMORY_TEMP] = float(raw)

    def _wait(self, event_set: Any, timeout_ms: int) -> Any:
        wait = getattr(self._nvml, "nvmlEventSetWait_v2", None) or self._nvml.nvmlEventSetWait
        return wait(event_set, timeout_ms)

    def _xid(self, index: int, errors: list[CallError]) -> None:
        event_set = self._events.get(index)
        if event_set is None:
            return
        while True:
            try:
                data = self._wait(event_set, 0)
            except self._nvml.NVMLError as exc:
                code = self._code(exc)
                if code != "NVML_ERROR_TIMEOUT":
                    errors.append(CallError(call="nvmlEventSetWait_v2", code=code, gpu=str(index)))
                return
            self._last_xid[index] = int(data.eventData)

    def _gpm(
        self, index: int, handle: Any, errors: list[CallError], values: dict[str, float]
    ) -> None:
        """DCGM's profiling ratios from NVML's GPU Performance Monitoring (Hopper+).

        Two samples are needed: the previous sampler tick's and this one's.
        """
        nvml = self._nvml
        call: Callable[..., Any] = self._call
        if ("nvmlGpmQueryDeviceSupport", index) in self._unsupported:
            return
        if index not in self._gpm_samples:
            support = call(errors, "nvmlGpmQueryDeviceSupport", handle, gpu=index)
            if support is _FAILED:
                return
            if not support.isSupportedDevice:
                self._unsupported.add(("nvmlGpmQueryDeviceSupport", index))
                return
        sample = call(errors, "nvmlGpmSampleAlloc")
        if sample is _FAILED:
            return
        if call(errors, "nvmlGpmSampleGet", handle, sample, gpu=index) is _FAILED:
            call(errors, "nvmlGpmSampleFree", sample)
            return
        previous = self._gpm_samples.get(index)
        self._gpm_samples[index] = sample
        if previous is None:
            return
        wanted = (
            (nvml.NVML_GPM_METRIC_GRAPHICS_UTIL, fields.DCGM_FI_PROF_GR_ENGINE_ACTIVE),
            (nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, fields.DCGM_FI_PROF_PIPE_TENSOR_ACTIVE),
            (nvml.NVML_GPM_METRIC_DRAM_BW_UTIL, fields.DCGM_FI_PROF_DRAM_ACTIVE),
        )
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(wanted)
        request.sample1 = previous
        request.sample2 = sample
        for position, (metric_id, _) in enumerate(wanted):
            request.metrics[position].metricId = metric_id
        answer = call(errors, "nvmlGpmMetricsGet", request, gpu=index)
        call(errors, "nvmlGpmSampleFree", previous)
        if answer is _FAILED:
            return
        for position, (_, field) in enumerate(wanted):
            metric = answer.metrics[position]
            if metric.nvmlReturn == nvml.NVML_SUCCESS:
                values[field] = max(0.0, min(float(metric.value) / 100.0, 1.0))

    def _mig(
        self,
        index: int,
        handle: Any,
        parent: GpuIdentity,
        errors: list[CallError],
        health: list[bool],
    ) -> list[GpuReading]:
        mode = self._call(errors, "nvmlDeviceGetMigMode", handle, gpu=index)
        if mode is _FAILED or mode[0] != self._nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        count = self._call(
            errors, "nvmlDeviceGetMaxMigDeviceCount", handle, gpu=index, health=health
        )
        if count is _FAILED:
            return []
        readings = []
        for position in range(int(count)):
            try:
                mig = self._nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, position)
            except self._nvml.NVMLError as exc:
                code = self._code(exc)
                if code != "NVML_ERROR_NOT_FOUND":  # an empty slot, not an error
                    errors.append(
                        CallError(
                            call="nvmlDeviceGetMigDeviceHandleByIndex", code=code, gpu=str(index)
                        )
                    )
                continue
            uuid = self._call(errors, "nvmlDeviceGetUUID", mig, gpu=index, health=health)
            instance = self._call(
                errors, "nvmlDeviceGetGpuInstanceId", mig, gpu=index, health=health
            )
            name = self._call(errors, "nvmlDeviceGetName", mig, gpu=index)
            if uuid is _FAILED or instance is _FAILED:
                continue
            values: dict[str, float] = {}
            info = self._call(errors, "nvmlDeviceGetMemoryInfo", mig, gpu=index, health=health)
            total = 0
            if info is not _FAILED:
                values[contract.DCGM_FI_DEV_FB_USED] = info.used // MIB
                values[contract.DCGM_FI_DEV_FB_FREE] = info.free // MIB
                total = int(info.total)
            identity = GpuIdentity(
                index=index,
                uuid=parent.uuid,
                model=parent.model,
                pci_bus_id=parent.pci_bus_id,
                device=parent.device,
                driver_version=parent.driver_version,
                mig_profile="" if name is _FAILED else mig_profile_of(_text(name)),
                mig_instance_id=int(instance),
                mig_uuid=_text(uuid),
            )
            readings.append(
                GpuReading(
                    identity=identity, values=values, healthy=health[0], memory_total_bytes=total
                )
            )
        return readings

    def _processes(
        self,
        index: int,
        handle: Any,
        identity: GpuIdentity,
        by_instance: dict[int | None, str],
        errors: list[CallError],
        health: list[bool],
    ) -> list[ProcessUsage]:
        listed: dict[int, Any] = {}
        for name in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetMPSComputeRunningProcesses",
        ):
            answer = self._call(errors, name, handle, gpu=index, health=health)
            if answer is _FAILED:
                continue
            for process in answer:
                listed.setdefault(int(process.pid), process)
        if not listed:
            return []
        utilisation: dict[int, float] = {}
        since = self._process_ts.get(index, 0)
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(handle, since)
        except self._nvml.NVMLError as exc:
            code = self._code(exc)
            # NOT_FOUND: no sample since ``since``; not an error.
            if (
                code != "NVML_ERROR_NOT_FOUND"
                and ("nvmlDeviceGetProcessUtilization", index) not in self._unsupported
            ):
                errors.append(
                    CallError(call="nvmlDeviceGetProcessUtilization", code=code, gpu=str(index))
                )
                if code in _BENIGN_ERRORS:
                    self._unsupported.add(("nvmlDeviceGetProcessUtilization", index))
            samples = []
        latest: dict[int, int] = {}
        for sample in samples:
            pid = int(sample.pid)
            stamp = int(sample.timeStamp)
            if stamp >= latest.get(pid, -1) and _available(sample.smUtil):
                latest[pid] = stamp
                utilisation[pid] = float(sample.smUtil)
            self._process_ts[index] = max(self._process_ts.get(index, 0), stamp)
        out = []
        for pid, process in sorted(listed.items()):
            used = process.usedGpuMemory
            instance = getattr(process, "gpuInstanceId", None)
            key = by_instance.get(instance, identity.key) if by_instance else identity.key
            out.append(
                ProcessUsage(
                    gpu_uuid=key,
                    pid=pid,
                    used_memory_bytes=int(used) if _available(used) else None,
                    sm_util_pct=utilisation.get(pid),
                )
            )
        return out
