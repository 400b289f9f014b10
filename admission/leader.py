"""Leader election on a coordination.k8s.io/v1 Lease, so that one reconciler acts.

Every replica runs a :class:`LeaderElector` and calls :meth:`LeaderElector.tick` every
``retry_period_s``. A tick reads the Lease and:

- creates it, holding it, when there is none;
- renews it (``renewTime`` = now) when this replica holds it;
- takes it over (``acquireTime`` = now, ``leaseTransitions`` + 1) when it is free
  (no holder: released on shutdown) or its holder let it lapse;
- otherwise leaves it alone and stays a follower.

Writes carry the resourceVersion that was read, so two candidates racing for a lapsed
Lease cannot both win: the API server answers the slower one 409 Conflict.

Whether a holder let the Lease lapse is judged, as client-go does, on this replica's
own clock: from the moment this replica first saw the Lease's current
(holder, renewTime), not from the renewTime written in it, so clock skew between nodes
cannot make a candidate take over early. A new candidate therefore waits up to one
lease duration before it takes over a Lease whose holder died.

A leader that cannot renew (API errors, conflicts) keeps acting until
``renew_deadline_s`` after its last successful renewal, then stops. The deadline is
shorter than the lease duration, so the old leader has stopped before any other
replica may take over. :meth:`LeaderElector.release` gives the Lease up on shutdown so
that a successor need not wait.

The clock is injected; the Lease API is :class:`LeaseApi` (the Kubernetes adapter
:class:`admission.kube.KubeLeases` implements it). Errors: :class:`LeaseNotFound`,
:class:`LeaseConflict` (both :class:`LeaseError`); anything else the API raises counts
as a failed attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

log = logging.getLogger("gpupool.reconciler.leader")

Clock = Callable[[], datetime]


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """The spec of a Lease, and the resourceVersion it was read at."""

    holder: str
    """``holderIdentity``; "" when nobody holds it."""
    lease_duration_s: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str = ""


class LeaseError(Exception):
    """The Lease API refused an operation."""


class LeaseNotFound(LeaseError):
    """There is no such Lease (HTTP 404)."""


class LeaseConflict(LeaseError):
    """Someone else wrote the Lease first (HTTP 409): read it again."""


class LeaseApi(Protocol):
    """One named Lease."""

    def get(self) -> LeaseRecord:
        """Raise :class:`LeaseNotFound` when it does not exist."""
        ...

    def create(self, record: LeaseRecord) -> LeaseRecord:
        """Raise :class:`LeaseConflict` when it already exists."""
        ...

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace it if still at ``record.resource_version``, else
        :class:`LeaseConflict`."""
        ...


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        *,
        identity: str,
        clock: Clock,
        lease_duration_s: int = 15,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        if not 0 < retry_period_s < renew_deadline_s < lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease "
                f"duration; got {retry_period_s}s, {renew_deadline_s}s, {lease_duration_s}s"
            )
        self.api = api
        self.identity = identity
        self.clock = clock
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_change = on_change
        self._leader = False
        self._last_renewed: datetime | None = None
        self._observed: tuple[str, datetime | None] | None = None
        self._observed_at: datetime | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader

    def tick(self) -> bool:
        """One attempt to acquire or renew; returns whether this replica leads now."""
        now = self.clock()
        try:
            current = self.api.get()
        except LeaseNotFound:
            return self._write(now, None)
        except Exception as exc:
            return self._failed(now, f"cannot read the Lease: {exc}")
        key = (current.holder, current.renew_time)
        if key != self._observed:
            self._observed, self._observed_at = key, now
        assert self._observed_at is not None
        if current.holder and current.holder != self.identity:
            lapsed_at = self._observed_at + timedelta(seconds=current.lease_duration_s)
            if now < lapsed_at:
                if self._leader:
                    log.warning("lost the Lease: %s holds it now", current.holder)
                self._set(False)
                return False
            log.info("Lease held by %s lapsed; taking it over", current.holder)
        return self._write(now, current)

    def release(self) -> None:
        """Give the Lease up (shutdown): a successor may take it at once."""
        if not self._leader:
            return
        self._set(False)
        try:
            current = self.api.get()
            if current.holder != self.identity:
                return
            self.api.update(
                replace(current, holder="", lease_duration_s=1, renew_time=self.clock())
            )
            log.info("released the Lease")
        except Exception as exc:
            log.warning("could not release the Lease (it will lapse): %s", exc)

    def _write(self, now: datetime, current: LeaseRecord | None) -> bool:
        mine = current is not None and current.holder == self.identity
        record = LeaseRecord(
            holder=self.identity,
            lease_duration_s=self.lease_duration_s,
            acquire_time=current.acquire_time if mine and current else now,
            renew_time=now,
            transitions=(0 if current is None else current.transitions + (0 if mine else 1)),
            resource_version=current.resource_version if current else "",
        )
        try:
            written = self.api.create(record) if current is None else self.api.update(record)
        except Exception as exc:
            return self._failed(now, f"cannot write the Lease: {exc}")
        self._observed, self._observed_at = (written.holder, written.renew_time), now
        self._last_renewed = now
        if not self._leader:
            log.info("acquired the Lease as %s", self.identity)
        self._set(True)
        return True

    def _failed(self, now: datetime, why: str) -> bool:
        if self._leader:
            assert self._last_renewed is not None
            if now - self._last_renewed >= timedelta(seconds=self.renew_deadline_s):
                log.warning("stepping down: no renewal for %ss (%s)", self.renew_deadline_s, why)
                self._set(False)
            else:
                log.warning("%s; still leading until the renew deadline", why)
        else:
            log.debug("%s", why)
        return self._leader

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            if self.on_change is not None:
                self.on_change(leader)
