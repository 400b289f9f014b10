"""A synthetic workload from documented distributions, seeded.

Each pod, independently:

- *class*: CPU-only, GPU-sharing, or 1, 2, 4 or 8 whole GPUs, with :attr:`Mix.classes`
  probabilities (default: the Alibaba 2023 trace's shares: 13.4% CPU-only, 37.8%
  sharing, 48.0% one GPU, 0.2% two, 0.2% four, 0.5% eight);
- *share* of a sharing pod's GPU: one of :attr:`Mix.shares` with its probability
  (default: the trace's eight most common, 810/1000 of a GPU 35% of the time, 470 25%,
  320 11%, 650 8%, 230 5%, 460 4%, 160 and 590 2.5%, renormalised);
- *CPU*: log-normal around :attr:`Mix.cpu_milli_median` for its class (trace medians:
  12.5 cores CPU-only, 4 sharing, 11.4 cores per whole GPU), spread
  :attr:`Mix.cpu_sigma`, rounded to a tenth of a core and at most
  :attr:`Mix.cpu_milli_max` (96 cores, the trace's most common 8-GPU node, so that
  every pod fits it); *memory*: :attr:`Mix.memory_mib_per_core` (trace median ~4 GiB
  per core) times the cores;
- *arrival*: a Poisson process of :attr:`Mix.arrivals_per_hour` (the trace's last
  30 days: ~10 an hour);
- *duration*: log-normal, median :attr:`Mix.duration_median_s` (trace: 540 s) and
  spread :attr:`Mix.duration_sigma` (trace: 1.9 in natural log);
- *department*: one of ``dept-1..N`` with Zipf(1) shares (the first department is
  the largest), queue ``default``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from governance.errors import ConfigError
from simulator.trace import MILLI_PER_GPU, Pod

CPU_ONLY = 0
SHARING = -1
"""Class keys of :attr:`Mix.classes`: a positive key is that many whole GPUs."""


@dataclass(frozen=True, kw_only=True)
class Mix:
    classes: Mapping[int, float] = field(
        default_factory=lambda: {
            CPU_ONLY: 0.134,
            SHARING: 0.378,
            1: 0.480,
            2: 0.002,
            4: 0.002,
            8: 0.005,
        }
    )
    shares: Mapping[int, float] = field(
        default_factory=lambda: {
            810: 0.35,
            470: 0.244,
            320: 0.107,
            650: 0.082,
            230: 0.045,
            460: 0.042,
            160: 0.024,
            590: 0.024,
        }
    )
    cpu_milli_median: Mapping[str, int] = field(
        default_factory=lambda: {"cpu": 12_500, "sharing": 4_000, "per_gpu": 11_400}
    )
    cpu_sigma: float = 0.5
    cpu_milli_max: int = 96_000
    memory_mib_per_core: int = 4 * 1024
    arrivals_per_hour: float = 10.0
    duration_median_s: float = 540.0
    duration_sigma: float = 1.9
    departments: int = 4


def _normalised(weights: Mapping[int, float], what: str) -> tuple[list[int], list[float]]:
    keys = list(weights)
    values = np.array([weights[k] for k in keys], dtype=np.float64)
    if len(keys) == 0 or (values < 0).any() or values.sum() <= 0:
        raise ConfigError(f"the {what} probabilities must be 0 or more and not all 0")
    return keys, list(values / values.sum())


def generate(count: int, *, seed: int = 42, mix: Mix | None = None) -> list[Pod]:
    """``count`` pods drawn from ``mix`` (default: shaped like the Alibaba trace)."""
    if count < 1:
        raise ConfigError(f"asked for {count} pods; generate at least one")
    mix = mix or Mix()
    if any(not 0 < s <= MILLI_PER_GPU for s in mix.shares):
        raise ConfigError("every GPU share must be 1 to 1000 thousandths")
    rng = np.random.default_rng(seed)
    classes, class_p = _normalised(mix.classes, "class")
    shares, share_p = _normalised(mix.shares, "share")
    zipf = np.array([1.0 / (i + 1) for i in range(mix.departments)])
    arrival = 0.0
    pods: list[Pod] = []
    for index in range(count):
        arrival += float(rng.exponential(3600.0 / mix.arrivals_per_hour))
        kind = int(rng.choice(classes, p=class_p))
        if kind == CPU_ONLY:
            num_gpu, milli, median = 0, 0, mix.cpu_milli_median["cpu"]
        elif kind == SHARING:
            num_gpu = 1
            milli = int(rng.choice(shares, p=share_p))
            median = mix.cpu_milli_median["sharing"]
        else:
            num_gpu, milli = kind, MILLI_PER_GPU
            median = mix.cpu_milli_median["per_gpu"] * kind
        drawn = int(round(median * rng.lognormal(0.0, mix.cpu_sigma), -2))
        cpu = min(max(100, drawn), mix.cpu_milli_max)
        department = int(rng.choice(mix.departments, p=zipf / zipf.sum())) + 1
        pods.append(
            Pod(
                name=f"synthetic-{index:06d}",
                cpu_milli=cpu,
                memory_mib=cpu * mix.memory_mib_per_core // 1000,
                num_gpu=num_gpu,
                gpu_milli=milli,
                arrival_s=round(arrival, 3),
                duration_s=round(
                    float(mix.duration_median_s * rng.lognormal(0.0, mix.duration_sigma)), 3
                ),
                department=f"dept-{department}",
                queue="default",
            )
        )
    return pods
