"""The per-GPU fields the exporter writes, named, typed and described as dcgm-exporter does.

Names, types and help texts follow dcgm-exporter's ``etc/default-counters.csv`` (and the
commented-out rows there for the ECC counters and the clock throttle reasons), so that
dashboards built on dcgm-exporter (Grafana gnetId 12239) keep working unchanged.

dcgm-exporter declares some of them ``counter`` without the ``_total`` suffix that
prometheus_client would append to a counter family. We keep the exact names by
rendering those as ``untyped`` families (``# TYPE ... untyped``): PromQL treats an
untyped series like a counter (``rate()`` works), and the name a dashboard queries is
unchanged. ``Field.dcgm_type`` keeps dcgm-exporter's own type for the documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance import contract


@dataclass(frozen=True, kw_only=True)
class Field:
    """One DCGM field as the exporter writes it."""

    name: str
    dcgm_type: str
    """``gauge`` or ``counter``, as in dcgm-exporter's default-counters.csv."""
    help: str
    unit: str

    @property
    def exposition_type(self) -> str:
        """The prometheus_client family type: counters go out untyped to keep the name."""
        return "gauge" if self.dcgm_type == "gauge" else "unknown"


DCGM_FI_PROF_GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
DCGM_FI_PROF_DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"

FIELDS: tuple[Field, ...] = (
    Field(
        name=contract.DCGM_FI_DEV_SM_CLOCK,
        dcgm_type="gauge",
        help="SM clock frequency (in MHz).",
        unit="MHz",
    ),
    Field(
        name=contract.DCGM_FI_DEV_MEM_CLOCK,
        dcgm_type="gauge",
        help="Memory clock frequency (in MHz).",
        unit="MHz",
    ),
    Field(
        name=contract.DCGM_FI_DEV_MEMORY_TEMP,
        dcgm_type="gauge",
        help="Memory temperature (in C).",
        unit="C",
    ),
    Field(
        name=contract.DCGM_FI_DEV_GPU_TEMP,
        dcgm_type="gauge",
        help="GPU temperature (in C).",
        unit="C",
    ),
    Field(
        name=contract.DCGM_FI_DEV_POWER_USAGE,
        dcgm_type="gauge",
        help="Power draw (in W).",
        unit="W",
    ),
    Field(
        name=contract.DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
        dcgm_type="counter",
        help="Total energy consumption since boot (in mJ).",
        unit="mJ",
    ),
    Field(
        name=contract.DCGM_FI_DEV_PCIE_REPLAY_COUNTER,
        dcgm_type="counter",
        help="Total number of PCIe retries.",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_GPU_UTIL,
        dcgm_type="gauge",
        help="GPU utilization (in %).",
        unit="%",
    ),
    Field(
        name=contract.DCGM_FI_DEV_MEM_COPY_UTIL,
        dcgm_type="gauge",
        help="Memory utilization (in %).",
        unit="%",
    ),
    Field(
        name=contract.DCGM_FI_DEV_ENC_UTIL,
        dcgm_type="gauge",
        help="Encoder utilization (in %).",
        unit="%",
    ),
    Field(
        name=contract.DCGM_FI_DEV_DEC_UTIL,
        dcgm_type="gauge",
        help="Decoder utilization (in %).",
        unit="%",
    ),
    Field(
        name=contract.DCGM_FI_DEV_XID_ERRORS,
        dcgm_type="gauge",
        help="Value of the last XID error encountered.",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_FB_FREE,
        dcgm_type="gauge",
        help="Framebuffer memory free (in MiB).",
        unit="MiB",
    ),
    Field(
        name=contract.DCGM_FI_DEV_FB_USED,
        dcgm_type="gauge",
        help="Framebuffer memory used (in MiB).",
        unit="MiB",
    ),
    Field(
        name=contract.DCGM_FI_DEV_FB_RESERVED,
        dcgm_type="gauge",
        help="Framebuffer memory reserved (in MiB).",
        unit="MiB",
    ),
    Field(
        name=contract.DCGM_FI_DEV_ECC_SBE_VOL_TOTAL,
        dcgm_type="counter",
        help="Total number of single-bit volatile ECC errors.",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_ECC_DBE_VOL_TOTAL,
        dcgm_type="counter",
        help="Total number of double-bit volatile ECC errors.",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS,
        dcgm_type="counter",
        help="Number of remapped rows for uncorrectable errors",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS,
        dcgm_type="counter",
        help="Number of remapped rows for correctable errors",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_ROW_REMAP_FAILURE,
        dcgm_type="gauge",
        help="Whether remapping of rows has failed",
        unit="1",
    ),
    Field(
        name=contract.DCGM_FI_DEV_CLOCK_THROTTLE_REASONS,
        dcgm_type="gauge",
        help="Current clock throttle reasons (bitmask of NVML clocks event reasons).",
        unit="bitmask",
    ),
    Field(
        name=DCGM_FI_PROF_GR_ENGINE_ACTIVE,
        dcgm_type="gauge",
        help="Ratio of time the graphics engine is active.",
        unit="ratio",
    ),
    Field(
        name=DCGM_FI_PROF_PIPE_TENSOR_ACTIVE,
        dcgm_type="gauge",
        help="Ratio of cycles the tensor (HMMA) pipe is active.",
        unit="ratio",
    ),
    Field(
        name=DCGM_FI_PROF_DRAM_ACTIVE,
        dcgm_type="gauge",
        help=("Ratio of cycles the device memory interface is active sending or receiving data."),
        unit="ratio",
    ),
)

BY_NAME: dict[str, Field] = {field.name: field for field in FIELDS}

LABEL_PCI_BUS_ID = "pci_bus_id"
LABEL_DRIVER_VERSION = "DCGM_FI_DRIVER_VERSION"
"""dcgm-exporter turns the driver-version field into a label on every series."""
