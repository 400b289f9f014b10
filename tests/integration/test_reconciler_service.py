"""Two reconciler replicas on one store and one Lease: only the leader acts, a
follower takes over when the leader dies, and shutdown hands the Lease back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from admission import kube
from admission.leader import LeaderElector
from admission.reconciler import Metrics, Service
from governance.storage import ledger
from governance.storage.ledger import State
from governance.storage.store import Store
from governance.watching import Backoff
from tests.support.kube import (
    FakeClock,
    FakeLeaseServer,
    RecordedPodApi,
    make_pod,
    pod_list,
    reserve,
)

pytestmark = pytest.mark.integration

LEASE = "gpupool-reconciler"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    s = Store(sqlite_url)
    yield s
    s.close()


def replica(
    store: Store, leases: FakeLeaseServer, clock: FakeClock, identity: str, raw: RecordedPodApi
) -> tuple[Service, CollectorRegistry]:
    registry = CollectorRegistry()
    elector = LeaderElector(
        kube.KubeLeases(leases.api(LEASE), name=LEASE, namespace="gpupool"),
        identity=identity,
        clock=clock,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=0.01,
    )
    service = Service(
        store=store,
        source=kube.KubePods(raw),
        elector=elector,
        metrics=Metrics(registry),
        clock=clock,
        expire_interval_s=30,
        backoff=lambda: Backoff(base_s=0.01, cap_s=0.02),
        rewatch_pause_s=0.01,
    )
    return service, registry


def synced(service: Service) -> bool:
    return service.reconciler is not None and service.reconciler.resource_version is not None


def test_only_the_leader_acts_and_a_follower_takes_over(store: Store) -> None:
    leases, clock = FakeLeaseServer(), FakeClock()
    running, lost = reserve(store), reserve(store)
    pod = make_pod("train", phase="Running", resource_version="10", allocation_id=running)
    a, a_metrics = replica(store, leases, clock, "a", RecordedPodApi(lists=[pod_list([pod], "10")]))
    # b's view of the cluster, later: the pod is gone.
    b, b_metrics = replica(store, leases, clock, "b", RecordedPodApi(lists=[pod_list([], "20")]))
    try:
        a.step()
        b.step()
        assert b.reconciler is None
        wait_for(lambda: synced(a))
        assert ledger.get(store, running).state is State.BOUND  # type: ignore[union-attr]
        assert a_metrics.get_sample_value("gpupool_reconciler_leader") == 1
        assert b_metrics.get_sample_value("gpupool_reconciler_leader") == 0

        clock.advance(601)  # past the reservation TTL
        # the leader's watch is healthy: the server keeps ending its (empty) watches
        wait_for(lambda: a.reconciler is not None and a.reconciler.synced_at == clock.now)
        a.step()  # the leader expires
        b.step()  # the follower does not
        assert ledger.get(store, lost).state is State.EXPIRED  # type: ignore[union-attr]
        assert (
            a_metrics.get_sample_value(
                "gpupool_reconciler_ledger_actions_total", {"action": "expire"}
            )
            == 1
        )
        assert b_metrics.get_sample_value(
            "gpupool_reconciler_ledger_actions_total", {"action": "expire"}
        ) in (None, 0)

        # a dies without a word; after one lease duration b takes over and resyncs.
        clock.advance(15)
        b.step()
        wait_for(lambda: synced(b))
        assert ledger.get(store, running).state is State.RELEASED  # type: ignore[union-attr]
        assert b_metrics.get_sample_value("gpupool_reconciler_leader") == 1

        # a comes back: it sees b's Lease, stops its watch and acts no more.
        a.step()
        assert a.reconciler is None
        assert a_metrics.get_sample_value("gpupool_reconciler_leader") == 0
    finally:
        a._stop_worker()

    stop = threading.Event()
    stop.set()
    b.run(stop)  # shutdown: the Lease is handed back
    assert kube.lease_from_json(leases.read(LEASE)).holder == ""
    assert b_metrics.get_sample_value("gpupool_reconciler_leader") == 0
