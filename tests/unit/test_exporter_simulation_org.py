"""The bundled simulated node and the example organisation agree: every tenant the
simulation reports is one the organisation declares, at the size its SKU sells."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.backends import simulated
from governance import config, placement

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


def test_every_simulated_slice_is_one_examples_org_would_grant() -> None:
    org = config.build_org(config.load_file(EXAMPLE), source=str(EXAMPLE))
    simulation = simulated.load_simulation(simulated.DEFAULT_SIMULATION)
    assert simulation.pods
    for pod in simulation.pods:
        where = f"{pod.namespace}/{pod.name}"
        target = placement.resolve_target(org, namespace=pod.namespace, queue=pod.queue)
        assert target.department.name == pod.department, where
        for container in pod.containers:
            granted = placement.grant(
                org, target, placement.SliceRequest(count=len(container.gpus), sku=pod.sku)
            )
            assert granted.sku == pod.sku, where
            assert (granted.memory_mib, granted.compute_pct) == (
                container.memory_mib,
                container.compute_pct,
            ), where
            pool = org.pools[granted.pool]
            assert pool.memory_mib_per_gpu == simulation.memory_mib, where
