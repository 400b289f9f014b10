"""NVIDIA's KAI scheduler: GPU fractions as pod annotations, queues as a pod label.

KAI's GPU sharing (``global.gpuSharing=true``) reads, on the *pod*:

- ``gpu-memory``: MiB of one GPU's memory (a positive integer), or ``gpu-fraction``: the
  share of one GPU's memory, strictly between 0 and 1 (never both);
- ``gpu-fraction-num-devices``: how many GPUs of that share (when more than one);
- ``gpu-fraction-container-name``: the container that receives the GPUs (else the
  first container).

Whole GPUs stay ``nvidia.com/gpu: N`` on the container, and a pod cannot mix a
fraction with whole GPUs. The pod carries ``schedulerName: kai-scheduler`` and the
queue label ``kai.scheduler/queue``. KAI neither enforces memory nor limits compute:
the slice's compute is sold and counted by gpupool, but not enforced on the node.

Options: ``scheduler_name``, ``queue_label``, ``queues`` (a mapping from the gpupool
queue name to the KAI queue name; the gpupool name by default), ``fraction_by``
(``memory``: write ``gpu-memory`` in MiB, the default; ``fraction``: write
``gpu-fraction``).
"""

from __future__ import annotations

from collections.abc import Mapping

from governance.backends import _common
from governance.backends.base import ContainerChanges, PodChanges
from governance.contract import RESOURCE_NVIDIA_GPU, Reason, SliceGrant
from governance.errors import PlacementError
from governance.model import Pool, Sku

ANNOTATION_GPU_FRACTION = "gpu-fraction"
ANNOTATION_GPU_MEMORY = "gpu-memory"
ANNOTATION_NUM_DEVICES = "gpu-fraction-num-devices"
ANNOTATION_CONTAINER_NAME = "gpu-fraction-container-name"
ANNOTATION_MPS = "mps"
LABEL_QUEUE = "kai.scheduler/queue"
DEFAULT_SCHEDULER = "kai-scheduler"
OPTIONS = ("scheduler_name", "queue_label", "queues", "fraction_by")


def gpu_fraction(memory_mib: int, pool: Pool) -> str:
    """The share of a card, rounded down to 1/1000 and kept inside KAI's (0, 1)."""
    thousandths = min(999, max(1, memory_mib * 1000 // pool.memory_mib_per_gpu))
    return f"{thousandths / 1000:.3f}".rstrip("0")


def _is_whole(grant: SliceGrant, pool: Pool) -> bool:
    return _common.is_whole_card(grant.memory_mib, grant.compute_pct, pool)


class KaiBackend:
    name = "kai"
    vendor = "nvidia"
    gpu_resources: tuple[str, ...] = _common.USER_RESOURCES
    gpu_annotations: tuple[str, ...] = (
        ANNOTATION_GPU_FRACTION,
        ANNOTATION_GPU_MEMORY,
        ANNOTATION_NUM_DEVICES,
        ANNOTATION_CONTAINER_NAME,
        ANNOTATION_MPS,
    )

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        if _is_whole(grant, pool):
            return ContainerChanges(resources={RESOURCE_NVIDIA_GPU: _common.quantity(grant.gpus)})
        # A fraction is asked for on the pod (see pod()); KAI's binder gives the GPU to
        # the container named there, so the container itself asks for no GPU resource.
        return ContainerChanges(resources={})

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        options = _common.Options(pool, OPTIONS)
        queue_label = options.string("queue_label", LABEL_QUEUE)
        kai_queue = options.string_map("queues").get(queue, queue)
        changes = {
            "labels": {queue_label: kai_queue},
            "scheduler_name": options.string("scheduler_name", DEFAULT_SCHEDULER) or None,
        }
        fractional = {name: g for name, g in grants.items() if not _is_whole(g, pool)}
        if not fractional:
            return _common.base_pod(pool, **changes)
        if len(fractional) > 1 or len(grants) > len(fractional):
            raise PlacementError(
                Reason.INVALID_REQUEST,
                f"pool {pool.name!r} (KAI scheduler) gives a GPU fraction to one container "
                f"per pod and cannot mix it with whole GPUs, but containers "
                f"{', '.join(sorted(grants))} ask for GPUs. Put the fractional slice in one "
                "container, or split the pod.",
            )
        ((container, grant),) = fractional.items()
        if options.choice("fraction_by", "memory", ("memory", "fraction")) == "memory":
            annotations = {ANNOTATION_GPU_MEMORY: _common.quantity(grant.memory_mib)}
        else:
            annotations = {ANNOTATION_GPU_FRACTION: gpu_fraction(grant.memory_mib, pool)}
        if grant.gpus > 1:
            annotations[ANNOTATION_NUM_DEVICES] = _common.quantity(grant.gpus)
        annotations[ANNOTATION_CONTAINER_NAME] = container
        return _common.base_pod(pool, annotations=annotations, **changes)

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        _common.check_vendor(pool, self.vendor)
        options = _common.Options(pool, OPTIONS)
        options.check()
        options.string("scheduler_name", DEFAULT_SCHEDULER)
        options.string("queue_label", LABEL_QUEUE)
        options.string_map("queues")
        options.choice("fraction_by", "memory", ("memory", "fraction"))


BACKEND = KaiBackend()
