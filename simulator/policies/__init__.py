"""Placement policies, one module each, in one registry.

Adding a policy is one new module with a :class:`~simulator.policies.base.Policy`
subclass and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from governance.errors import ConfigError
from simulator.policies.base import Policy, Setup
from simulator.policies.best_fit import BestFit
from simulator.policies.clustering import Clustering
from simulator.policies.dot_product import DotProduct
from simulator.policies.fgd import FragmentationGradientDescent
from simulator.policies.gpupool import Gpupool
from simulator.policies.packing import Packing
from simulator.policies.random_fit import RandomFit

REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RandomFit,
        DotProduct,
        Clustering,
        Packing,
        BestFit,
        FragmentationGradientDescent,
        Gpupool,
    )
}
"""Policy name -> class, in the order the FGD paper lists them, gpupool's last."""


def check(name: str) -> type[Policy]:
    """The policy class called ``name``; a clear error listing the valid names if none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown placement policy {name!r}; valid choices: {', '.join(REGISTRY)}"
        ) from None


def create(name: str, setup: Setup) -> Policy:
    return check(name)(setup)


__all__ = ["REGISTRY", "Policy", "Setup", "check", "create"]
