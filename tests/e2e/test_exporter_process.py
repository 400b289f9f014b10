"""The exporter as a process on a machine without NVML: it stays up and says why."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.exporter import free_port, start_exporter_process

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _nvml_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


def test_nvml_backend_without_a_driver_keeps_serving_and_reports_the_error() -> None:
    if _nvml_present():
        pytest.skip("this machine has a working NVML; the test needs one without")
    port = free_port()
    process = start_exporter_process(port, "nvml", "--no-kubernetes")
    try:
        body = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "nvmlInit" not in body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.1)
        assert "gpupool_exporter_up 1.0" in body
        assert 'gpupool_exporter_backend_errors_total{call="nvmlInit",code="NVML_ERROR_' in body
        assert "DCGM_FI_DEV_GPU_UTIL{" not in body
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0  # SIGTERM is a clean shutdown
        if process.stderr is not None:
            process.stderr.close()
