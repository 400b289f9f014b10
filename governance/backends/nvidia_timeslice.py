"""NVIDIA's device plugin with time-slicing: each GPU is advertised as N replicas.

The device plugin's ``sharing.timeSlicing`` config advertises every GPU ``replicas``
times, under ``nvidia.com/gpu.shared`` when ``renameByDefault`` is set (the default
here; set the ``resource`` option otherwise). Time-slicing enforces neither memory nor
compute, so a slice takes as many replicas as its larger share of the card needs:
``ceil(max(compute %, memory %) x replicas / 100)`` per GPU, times its GPUs. What the
pool sells therefore never exceeds what its replicas can hold.

Options: ``replicas`` (required: the device plugin's replicas per GPU), ``resource``,
``fail_requests_greater_than_one`` (mirror the device plugin's
``failRequestsGreaterThanOne``: every SKU must then take exactly one replica).
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import SliceGrant
from governance.errors import ConfigError
from governance.model import Pool, Sku

RESOURCE_SHARED = "nvidia.com/gpu.shared"
OPTIONS = ("resource", "replicas", "fail_requests_greater_than_one")


def replicas_per_gpu(memory_mib: int, compute_pct: int, pool: Pool, replicas: int) -> int:
    """How many of a GPU's ``replicas`` one GPU of this shape takes (at least 1)."""
    by_compute = _common.ceil_div(min(compute_pct, 100) * replicas, 100)
    memory = min(memory_mib, pool.memory_mib_per_gpu)
    by_memory = _common.ceil_div(memory * replicas, pool.memory_mib_per_gpu)
    return max(1, by_compute, by_memory)


def _replicas(pool: Pool) -> int:
    replicas = _common.Options(pool, OPTIONS).integer("replicas", None)
    if replicas is None:
        raise ConfigError(
            "backend nvidia-timeslice needs the device plugin's replicas per GPU "
            "(backend_options: {replicas: N})",
            path=f"pools.{pool.name}.backend_options.replicas",
        )
    return replicas


class NvidiaTimesliceBackend:
    name = "nvidia-timeslice"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.resource_names(
        _common.USER_RESOURCES, (RESOURCE_SHARED,)
    )
    gpu_annotations: tuple[str, ...] = ()

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        options = _common.Options(pool, OPTIONS)
        resource = options.resource("resource", RESOURCE_SHARED)
        per_gpu = replicas_per_gpu(grant.memory_mib, grant.compute_pct, pool, _replicas(pool))
        if per_gpu * grant.gpus > 1 and options.boolean("fail_requests_greater_than_one", False):
            raise _common.cannot_serve(
                grant,
                pool,
                f"it needs {per_gpu * grant.gpus} time-sliced replicas and the device plugin "
                "refuses requests for more than one",
                "Ask for one slice of a SKU that fits one replica.",
            )
        return ContainerChanges(resources={resource: _common.quantity(per_gpu * grant.gpus)})

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        return _common.base_pod(pool)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.resource("resource", RESOURCE_SHARED)
        replicas = _replicas(pool)
        if not options.boolean("fail_requests_greater_than_one", False):
            return
        for sku in skus:
            per_gpu = replicas_per_gpu(sku.memory_mib_on(pool), sku.compute_pct, pool, replicas)
            if per_gpu * sku.gpus_per_slice > 1:
                raise _common.sku_error(
                    pool,
                    sku,
                    f"one slice takes {per_gpu * sku.gpus_per_slice} replicas ({replicas} per "
                    "GPU), but the device plugin refuses requests for more than one "
                    "(failRequestsGreaterThanOne)",
                    f"Make the SKU one GPU of at most {100 // replicas}% and "
                    f"{pool.memory_mib_per_gpu // replicas} MiB, or turn the option off.",
                )


BACKEND = NvidiaTimesliceBackend()
