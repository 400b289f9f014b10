"""The NVML backend through a fake at the pynvml call boundary."""

from __future__ import annotations

import pynvml
import pytest

from exporter import fields
from exporter.backends.nvml import NvmlBackend, mig_profile_of
from exporter.model import MIB
from governance import contract
from tests.support.exporter import NVML_FUNCTIONS_USED, FakeGpu, FakeMig, FakeNvml

pytestmark = pytest.mark.unit


def _gpu(n: int = 0, **kwargs: object) -> FakeGpu:
    return FakeGpu(
        uuid=f"GPU-{n:08d}-0000-0000-0000-000000000000",
        minor=n,  # type: ignore[arg-type]
        **kwargs,
    )


def test_every_field_is_read_with_dcgm_units() -> None:
    fake = FakeNvml(
        [
            _gpu(
                gpm={
                    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 42.0,
                    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 90.0,
                    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 20.0,
                },
                xids=[79],
            )
        ]
    )
    backend = NvmlBackend(fake)
    backend.read()
    reading = backend.read()  # GPM needs two samples
    (gpu,) = reading.gpus
    assert gpu.healthy and reading.errors == ()
    assert gpu.identity.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert (gpu.identity.device, gpu.identity.pci_bus_id, gpu.identity.driver_version) == (
        "nvidia0",
        "00000000:18:00.0",
        "580.159.04",
    )
    v = gpu.values
    assert v[contract.DCGM_FI_DEV_GPU_UTIL] == 37
    assert v[contract.DCGM_FI_DEV_MEM_COPY_UTIL] == 12
    assert v[contract.DCGM_FI_DEV_FB_USED] == 20480
    assert v[contract.DCGM_FI_DEV_FB_RESERVED] == 512
    assert v[contract.DCGM_FI_DEV_FB_FREE] == 81559 - 20480 - 512
    assert v[contract.DCGM_FI_DEV_POWER_USAGE] == pytest.approx(180.5)  # mW -> W
    assert v[contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION] == 123_456_789  # mJ
    assert v[contract.DCGM_FI_DEV_GPU_TEMP] == 41
    assert v[contract.DCGM_FI_DEV_MEMORY_TEMP] == 38
    assert (v[contract.DCGM_FI_DEV_SM_CLOCK], v[contract.DCGM_FI_DEV_MEM_CLOCK]) == (1980, 2619)
    assert v[contract.DCGM_FI_DEV_PCIE_REPLAY_COUNTER] == 3
    assert (
        v[contract.DCGM_FI_DEV_ECC_SBE_VOL_TOTAL],
        v[contract.DCGM_FI_DEV_ECC_DBE_VOL_TOTAL],
    ) == (1, 0)
    assert v[contract.DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS] == 2
    assert v[contract.DCGM_FI_DEV_CLOCK_THROTTLE_REASONS] == 4
    assert v[contract.DCGM_FI_DEV_XID_ERRORS] == 79
    assert v[fields.DCGM_FI_PROF_PIPE_TENSOR_ACTIVE] == pytest.approx(0.42)
    assert v[fields.DCGM_FI_PROF_GR_ENGINE_ACTIVE] == pytest.approx(0.9)
    assert v[fields.DCGM_FI_PROF_DRAM_ACTIVE] == pytest.approx(0.2)
    assert set(v) == {f.name for f in fields.FIELDS}


def test_the_fake_covers_every_nvml_function_the_backend_calls() -> None:
    fake = FakeNvml(
        [
            _gpu(processes=[(10, MIB, None)], process_util=[(10, 5, 1)], gpm={}, mig=[]),
            _gpu(1, mig=[FakeMig(uuid="MIG-x", instance_id=1, name="NVIDIA H100 MIG 1g.10gb")]),
        ]
    )
    backend = NvmlBackend(fake)
    backend.read()
    backend.read()
    backend.close()
    unused = set(NVML_FUNCTIONS_USED) - set(fake.calls)
    assert unused == set(), f"fake functions never called: {unused}"


def test_not_supported_field_is_absent_counted_once_and_not_unhealthy() -> None:
    gpu = _gpu(
        errors={"nvmlDeviceGetEncoderUtilization": pynvml.NVML_ERROR_NOT_SUPPORTED},
        field_errors={pynvml.NVML_FI_DEV_MEMORY_TEMP: pynvml.NVML_ERROR_NOT_SUPPORTED},
    )
    fake = FakeNvml([gpu])
    backend = NvmlBackend(fake)
    first = backend.read()
    second = backend.read()
    assert contract.DCGM_FI_DEV_ENC_UTIL not in first.gpus[0].values
    assert contract.DCGM_FI_DEV_MEMORY_TEMP not in first.gpus[0].values
    assert first.gpus[0].healthy
    assert {(e.call, e.code) for e in first.errors} == {
        ("nvmlDeviceGetEncoderUtilization", "NVML_ERROR_NOT_SUPPORTED"),
        ("nvmlDeviceGetFieldValues", "NVML_ERROR_NOT_SUPPORTED"),
    }
    assert second.errors == ()
    assert fake.calls["nvmlDeviceGetEncoderUtilization"] == 1


@pytest.mark.parametrize(
    ("call", "code"),
    [
        pytest.param("nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_GPU_IS_LOST, id="gpu-lost"),
        pytest.param("nvmlDeviceGetTemperature", pynvml.NVML_ERROR_UNKNOWN, id="unknown"),
        pytest.param("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_TIMEOUT, id="timeout"),
    ],
)
def test_error_on_one_gpu_marks_it_unhealthy_and_the_others_still_answer(
    call: str, code: int
) -> None:
    fake = FakeNvml([_gpu(0, errors={call: code}), _gpu(1)])
    reading = NvmlBackend(fake).read()
    broken, fine = reading.gpus
    assert not broken.healthy and fine.healthy
    assert contract.DCGM_FI_DEV_GPU_UTIL in fine.values
    assert contract.DCGM_FI_DEV_FB_USED in broken.values  # the other calls still answered
    assert [(e.call, e.gpu) for e in reading.errors] == [(call, "0")]


def test_lost_handle_reports_the_gpu_unhealthy_with_its_known_identity() -> None:
    gpu = _gpu(0)
    fake = FakeNvml([gpu])
    backend = NvmlBackend(fake)
    backend.read()
    gpu.errors["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = backend.read()
    assert not reading.gpus[0].healthy
    assert reading.gpus[0].identity.uuid == gpu.uuid
    assert reading.gpus[0].values == {}


def test_no_permission_leaves_gpu_healthy() -> None:
    fake = FakeNvml(
        [_gpu(errors={"nvmlDeviceGetTotalEnergyConsumption": pynvml.NVML_ERROR_NO_PERMISSION})]
    )
    reading = NvmlBackend(fake).read()
    assert reading.gpus[0].healthy
    assert reading.errors[0].code == "NVML_ERROR_NO_PERMISSION"


def test_value_not_available_sentinels_drop_the_field() -> None:
    not_uint = pynvml.NVML_VALUE_NOT_AVAILABLE_uint.value
    not_ull = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
    fake = FakeNvml(
        [
            _gpu(
                power_mw=not_uint,
                energy_mj=not_ull,
                memory_temp=not_uint,
                processes=[(10, None, None)],
            )
        ]
    )
    reading = NvmlBackend(fake).read()
    values = reading.gpus[0].values
    assert contract.DCGM_FI_DEV_POWER_USAGE not in values
    assert contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION not in values
    assert contract.DCGM_FI_DEV_MEMORY_TEMP not in values
    assert reading.processes[0].used_memory_bytes is None


def test_init_failure_is_reported_and_retried_next_sample() -> None:
    fake = FakeNvml([_gpu()])
    fake.global_errors["nvmlInit"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    backend = NvmlBackend(fake)
    first = backend.read()
    assert first.gpus == ()
    assert [(e.call, e.code) for e in first.errors] == [
        ("nvmlInit", "NVML_ERROR_DRIVER_NOT_LOADED")
    ]
    del fake.global_errors["nvmlInit"]
    assert len(backend.read().gpus) == 1
    assert fake.init_calls == 1
    backend.read()
    assert fake.init_calls == 1  # initialised once, not per sample


def test_lost_library_is_shut_down_and_reinitialised() -> None:
    fake = FakeNvml([_gpu()])
    backend = NvmlBackend(fake)
    backend.read()
    fake.global_errors["nvmlDeviceGetCount"] = pynvml.NVML_ERROR_UNINITIALIZED
    assert backend.read().gpus == ()
    assert fake.shutdown_calls == 1
    del fake.global_errors["nvmlDeviceGetCount"]
    assert len(backend.read().gpus) == 1
    assert fake.init_calls == 2


def test_processes_merge_compute_and_mps_lists_with_sm_utilisation() -> None:
    fake = FakeNvml(
        [
            _gpu(
                processes=[(10, 2 * 1024 * MIB, None)],
                mps_processes=[(10, 2 * 1024 * MIB, None), (11, None, None)],
                process_util=[(10, 30, 100), (10, 40, 200), (11, 5, 150)],
            )
        ]
    )
    backend = NvmlBackend(fake)
    procs = {p.pid: p for p in backend.read().processes}
    assert set(procs) == {10, 11}
    assert procs[10].sm_util_pct == 40  # the latest sample wins
    assert procs[10].used_memory_bytes == 2 * 1024 * MIB
    assert procs[11].used_memory_bytes is None


def test_mig_instances_get_dcgm_mig_labels_and_their_processes() -> None:
    gpu = _gpu(
        mig=[FakeMig(uuid="MIG-aaa", instance_id=7, name="NVIDIA A100-SXM4-40GB MIG 1g.5gb")],
        processes=[(10, MIB, 7)],
    )
    reading = NvmlBackend(FakeNvml([gpu])).read()
    whole, mig = reading.gpus
    assert not whole.identity.is_mig
    assert (mig.identity.mig_profile, mig.identity.mig_instance_id) == ("1g.5gb", 7)
    assert mig.identity.uuid == gpu.uuid and mig.identity.key == "MIG-aaa"
    assert mig.values[contract.DCGM_FI_DEV_FB_USED] == 1024
    assert reading.processes[0].gpu_uuid == "MIG-aaa"


def test_mig_profile_of_reads_the_profile_from_the_device_name() -> None:
    assert mig_profile_of("NVIDIA H100 80GB HBM3 MIG 3g.40gb") == "3g.40gb"
    assert mig_profile_of("NVIDIA H100 80GB HBM3") == ""


class _OldNvml(FakeNvml):
    """An nvidia-ml-py from before GPM and the clocks-event rename."""

    nvmlDeviceGetCurrentClocksEventReasons = None
    nvmlGpmQueryDeviceSupport = None

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: object) -> int:
        self._enter("nvmlDeviceGetCurrentClocksThrottleReasons")
        return 0x40


def test_older_nvidia_ml_py_falls_back_and_reports_missing_functions_once() -> None:
    fake = _OldNvml([_gpu(gpm={pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 1.0})])
    backend = NvmlBackend(fake)
    first = backend.read()
    second = backend.read()
    values = second.gpus[0].values
    assert values[contract.DCGM_FI_DEV_CLOCK_THROTTLE_REASONS] == 0x40
    assert fields.DCGM_FI_PROF_PIPE_TENSOR_ACTIVE not in values
    assert second.gpus[0].healthy
    assert [(e.call, e.code) for e in first.errors] == [
        ("nvmlGpmQueryDeviceSupport", "NVML_ERROR_FUNCTION_NOT_FOUND")
    ]
    assert second.errors == ()
