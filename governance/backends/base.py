"""The data-plane backend interface: a granted slice -> what the cluster understands.

A backend is one module in this package that defines a :class:`Backend` and is listed
in the table in ``governance/backends/__init__.py``. It is pure: given a container's
:class:`~governance.contract.SliceGrant` and its :class:`~governance.model.Pool`, it says
which extended resources the container asks for (replacing every GPU resource the user
wrote) and what else the pod needs (env, annotations, labels, schedulerName, node
selector). The webhook turns this into a JSONPatch: for every GPU container it removes
each name in ``gpu_resources`` from limits and requests, then sets the resources that
:meth:`Backend.container` returns (limits, and requests equal to them), overwriting any
the user wrote under the same names; then it merges :meth:`Backend.pod`'s changes.

``validate`` runs when the configuration is applied: a SKU that the pool's data plane
cannot serve is a :class:`~governance.errors.ConfigError` then, not a surprise at
admission. ``container`` and ``pod`` may still raise
:class:`~governance.errors.PlacementError` (reason ``InvalidRequest``) for a request in
the HAMi form, or a pod shape, that the data plane cannot serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from governance.contract import SliceGrant
from governance.errors import ConfigError
from governance.model import Pool, Sku


@dataclass(frozen=True, kw_only=True)
class ContainerChanges:
    """For one container: its GPU resources (limits; requests are set equal) and env."""

    resources: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PodChanges:
    """Pod-level changes a backend needs; merged over every GPU container of the pod."""

    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    scheduler_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    vendor: str
    gpu_resources: tuple[str, ...]
    """Every resource name of this data plane that a user could write for a GPU: the
    webhook removes them all from a container before adding what :meth:`container`
    returns."""
    gpu_annotations: tuple[str, ...]
    """Pod annotations by which this data plane hands out or steers GPUs (KAI's
    ``gpu-memory``, HAMi's ``nvidia.com/use-gputype``...): a user who set them could
    take more than the ledger granted, so the webhook removes them from the pod before
    merging what :meth:`pod` returns."""

    def container(self, grant: SliceGrant, pool: Pool) -> ContainerChanges:
        """What one GPU container asks for; raise PlacementError when it cannot be served."""
        ...

    def pod(self, grants: Mapping[str, SliceGrant], pool: Pool, queue: str) -> PodChanges:
        """Pod-level changes for ``grants`` ({container name: grant}) in gpupool queue
        ``queue`` (the queue's name); raise PlacementError when the pod cannot be served."""
        ...

    def validate(self, pool: Pool, skus: list[Sku]) -> None:
        """Raise ConfigError when a SKU offered on ``pool`` cannot be served."""
        ...


__all__ = ["Backend", "ConfigError", "ContainerChanges", "PodChanges"]
