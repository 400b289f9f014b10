"""Lease leader election: candidates behind the Kubernetes adapter, on a fake Lease
API that keeps the Lease as the API server does (JSON, resourceVersion, 409)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from admission import kube
from admission.leader import LeaderElector, LeaseRecord
from tests.support.kube import FakeClock, FakeLeaseServer

pytestmark = pytest.mark.unit

NAME, NAMESPACE = "gpupool-reconciler", "gpupool"


def candidate(server: FakeLeaseServer, identity: str, clock: FakeClock) -> LeaderElector:
    leases = kube.KubeLeases(server.api(NAME), name=NAME, namespace=NAMESPACE)
    return LeaderElector(
        leases,
        identity=identity,
        clock=clock,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
    )


def lease(server: FakeLeaseServer) -> LeaseRecord:
    return kube.lease_from_json(server.read(NAME))


def test_two_candidates_one_wins() -> None:
    server, clock = FakeLeaseServer(), FakeClock()
    a, b = candidate(server, "a", clock), candidate(server, "b", clock)
    assert a.tick() is True
    assert b.tick() is False
    for _ in range(5):
        clock.advance(2)
        assert (a.tick(), b.tick()) == (True, False)
    record = lease(server)
    assert record.holder == "a" and record.transitions == 0
    assert record.acquire_time is not None and record.renew_time is not None
    assert record.renew_time - record.acquire_time == (clock() - record.acquire_time)


def test_takeover_only_after_the_holder_let_the_lease_lapse() -> None:
    server, clock = FakeLeaseServer(), FakeClock()
    a, b = candidate(server, "a", clock), candidate(server, "b", clock)
    a.tick()
    b.tick()  # b first sees a's renewal now
    clock.advance(14)  # a has died: no renewals
    assert b.tick() is False  # 14 s < 15 s lease duration
    clock.advance(1)
    assert b.tick() is True
    record = lease(server)
    assert (record.holder, record.transitions, record.acquire_time) == ("b", 1, clock())
    # a comes back: it sees b's Lease and stays a follower.
    assert a.tick() is False and not a.is_leader


def test_lapse_is_judged_on_the_candidates_own_clock_not_the_renew_time() -> None:
    """A renewTime far in the past (skewed clock on the holder's node) does not let a
    new candidate take over before one lease duration of its own observation."""
    server, clock = FakeLeaseServer(), FakeClock()
    a = candidate(server, "a", clock)
    skewed = FakeClock(clock() - timedelta(hours=1))
    a.clock = skewed
    a.tick()
    b = candidate(server, "b", clock)
    assert b.tick() is False
    clock.advance(15)
    assert b.tick() is True


def test_leader_steps_down_when_it_cannot_renew_within_the_deadline() -> None:
    server, clock = FakeLeaseServer(), FakeClock()
    changes: list[bool] = []
    a = candidate(server, "a", clock)
    a.on_change = changes.append
    assert a.tick() is True
    server.down = True
    clock.advance(8)
    assert a.tick() is True  # still within the 10 s renew deadline
    clock.advance(2)
    assert a.tick() is False
    assert changes == [True, False]
    server.down = False
    clock.advance(2)
    assert a.tick() is True  # its own Lease: renews and leads again
    assert changes == [True, False, True]


def test_release_on_shutdown_lets_a_successor_take_over_at_once() -> None:
    server, clock = FakeLeaseServer(), FakeClock()
    a, b = candidate(server, "a", clock), candidate(server, "b", clock)
    a.tick()
    assert b.tick() is False
    a.release()
    assert not a.is_leader
    assert lease(server).holder == ""
    assert b.tick() is True
    assert lease(server).transitions == 1


def test_racing_candidates_for_a_lapsed_lease_cannot_both_win() -> None:
    server, clock = FakeLeaseServer(), FakeClock()
    old = candidate(server, "old", clock)
    old.tick()
    a, b = candidate(server, "a", clock), candidate(server, "b", clock)
    a.tick()
    b.tick()
    clock.advance(16)

    class Interleaved(kube.KubeLeases):
        """b reads the lapsed Lease, then a writes before b does."""

        def update(self, record: LeaseRecord) -> LeaseRecord:
            assert a.tick() is True
            return super().update(record)

    b.api = Interleaved(server.api(NAME), name=NAME, namespace=NAMESPACE)
    assert b.tick() is False  # its write carried a stale resourceVersion: 409
    assert lease(server).holder == "a"
    assert a.is_leader and not b.is_leader


@pytest.mark.parametrize(
    ("retry", "deadline", "duration"),
    [pytest.param(2, 20, 15, id="deadline-past-duration"), pytest.param(0, 10, 15, id="no-retry")],
)
def test_inconsistent_timings_are_refused(retry: float, deadline: float, duration: int) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaderElector(
            kube.KubeLeases(FakeLeaseServer().api(NAME), name=NAME, namespace=NAMESPACE),
            identity="a",
            clock=FakeClock(),
            lease_duration_s=duration,
            renew_deadline_s=deadline,
            retry_period_s=retry,
        )
