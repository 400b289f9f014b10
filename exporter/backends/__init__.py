"""GPU backends, registered in one table: a vendor is one module behind ``GpuBackend``."""

from __future__ import annotations

BACKENDS = ["nvml", "simulated"]
"""Names accepted by ``gpupool exporter --backend``: ``nvml`` (``nvml.NvmlBackend``) and
``simulated`` (``simulated.SimulatedNode``); ``exporter.cli`` builds the chosen one."""
