"""GPU backends, registered in one table: a vendor is one module behind ``GpuBackend``."""

from __future__ import annotations

BACKENDS = ("nvml", "simulated")
"""Names accepted by ``gpupool exporter --backend``; built in ``exporter.cli``."""
