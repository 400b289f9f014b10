"""Whatever order, duplication or loss a pod's watch events arrive in, the ledger ends
where the pod's history says: released if any event showed it ended, else bound; and
the running quota counters agree with a recount from the entries."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from admission import kube
from admission.reconciler import Metrics, Reconciler
from governance import scopes
from governance.resources import ZERO
from governance.storage import ledger
from governance.storage.ledger import State
from governance.storage.store import Store
from tests.support.kube import DEPARTMENT, event, make_pod, reserve, with_state

pytestmark = pytest.mark.property

# A pod's life, in the order the API server wrote it: (event type, phase).
LIFE = [
    ("ADDED", "Pending"),
    ("MODIFIED", "Running"),
    ("MODIFIED", "Succeeded"),
    ("DELETED", "Succeeded"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("streams") / "gpupool.db"
    s = Store(f"sqlite:///{path}")
    yield s
    s.close()


_names = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(min_value=0, max_value=len(LIFE) - 1), min_size=1, max_size=8),
    st.booleans(),
)
def test_any_delivery_order_ends_in_the_pods_state(
    store: Store, picks: list[int], restart_midway: bool
) -> None:
    alloc = reserve(store)
    pod = make_pod(f"p{next(_names)}", allocation_id=alloc)
    events = [
        kube.event_from_json(
            event(kind, with_state(pod, resource_version=str(100 + i), phase=phase))
        )
        for i, (kind, phase) in ((i, LIFE[i]) for i in picks)
    ]
    reconciler = Reconciler(store, metrics=Metrics(CollectorRegistry()))
    for n, ev in enumerate(events):
        if restart_midway and n == len(events) // 2:
            # A new process: no memory of versions or deletions.
            reconciler = Reconciler(store, metrics=Metrics(CollectorRegistry()))
        reconciler.handle(ev)
    entry = ledger.get(store, alloc)
    assert entry is not None
    ended = any(LIFE[i][1] == "Succeeded" or LIFE[i][0] == "DELETED" for i in picks)
    assert entry.state is (State.RELEASED if ended else State.BOUND)
    assert entry.pod_uid == pod.metadata.uid
    running = ledger.usage(store).get(scopes.department(DEPARTMENT), ZERO)
    ledger.rebuild_usage(store)
    assert ledger.usage(store).get(scopes.department(DEPARTMENT), ZERO) == running
