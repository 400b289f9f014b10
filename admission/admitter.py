"""The admission decision: one parsed request in, one :class:`~admission.review.Response` out.

Synchronous and free of HTTP: the FastAPI edge (:mod:`admission.app`) parses the body,
calls :meth:`Admitter.quick` on the event loop (everything that needs no store: other
kinds and operations, non-GPU pods, UPDATEs) and, only for a GPU pod CREATE,
:meth:`Admitter.admit` in a worker thread (it talks to the store).

For a GPU pod CREATE, in order: a retry or a reinvocation (the pod carries an
allocation-id that the ledger holds for this very request uid, or reserved for a pod
with this pod's fingerprint: :meth:`Admitter._reinvoked`) is answered from the ledger;
the namespace's department, the queue (label ``gpupool.io/queue``, else the
department's default) and each container's grant are resolved; the identity is
authorised; the ledger reserves the Kubernetes effective demand in one transaction (a
request uid it has seen is not charged again), with the pod's fingerprint; the answer is
a JSONPatch from the pool's backend plus the contract's metadata.

Identity comes from who sends the request (``userInfo``, set by the API server), never
from fields the pod's author writes. Most pods are created by controllers (ReplicaSet,
Job, StatefulSet), whose userInfo is the controller's service account, which says
nothing about whom the pod works for: a pod created by a *trusted controller*
(:attr:`Settings.trusted_controllers`, Kubernetes' own by default) is authorised as its
own service account, ``system:serviceaccount:NS:SA`` (``default`` when unset). Any
other requester is authorised as itself, its user and groups, whatever owner references
and service account the pod names: both are the pod author's to write, and a made-up
controller reference must not turn a member of one queue into the service account of
another. Whoever may create pods in a namespace may run them as any of its service
accounts (Kubernetes' own rule), so a role binding names the service account that a
team's workloads run as, and the people who create pods by hand.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread

from admission import demand as demand_mod
from admission import fingerprint
from admission import patch as patch_mod
from admission import writer as group_commit
from admission.demand import GpuNames, InvalidDemand, PodDemand
from admission.review import MalformedReview, Pod, Request, Response, parse_pod
from governance import backends, decision, rbac
from governance.backends.base import Backend, ContainerChanges
from governance.contract import (
    ANNOTATION_ALLOCATION_ID,
    LABEL_QUEUE,
    PREFIX,
    Reason,
    SliceGrant,
)
from governance.errors import ConfigError, NoOrganisation, PlacementError, StoreError
from governance.model import Org
from governance.resources import Resources
from governance.snapshot import Snapshot
from governance.storage import ledger
from governance.storage.ledger import State
from governance.storage.store import Store, utcnow

log = logging.getLogger(__name__)

DEFAULT_TRUSTED_CONTROLLERS = (
    "system:serviceaccount:kube-system:*",
    "system:kube-controller-manager",
)
"""Kubernetes' own controllers: the kube-controller-manager's per-controller service
accounts (``--use-service-account-credentials``, the default of kubeadm and the managed
clusters) and its own user when it runs with one credential."""
DEFAULT_MAX_GPU_CONTAINERS = 16
"""A pod runs on one node, and nodes hold 8 GPUs (16 at most today): 16 GPU containers
give every GPU of the largest node its own container. A forged pod of 25,000 GPU
containers was admitted, reserving 25,000 slices, and got a 12 MiB answer."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    allow_unowned_namespaces: bool = False
    """Let GPU pods in a namespace that no department owns through untouched (by
    default they are denied with NamespaceNotOwned)."""
    reservation_ttl: timedelta = ledger.DEFAULT_TTL
    """How long a reservation waits for its pod before the reconciler expires it."""
    max_group: int = group_commit.DEFAULT_MAX_GROUP
    """Reservations committed in one transaction at most."""
    warm_rbac: bool = True
    """Warm each new configuration revision's policy in the background
    (:func:`governance.rbac.warm`), so that the first pod of each department does not
    pay for it."""
    trusted_controllers: tuple[str, ...] = DEFAULT_TRUSTED_CONTROLLERS
    """Requesters (``userInfo.username``; globs: ``*``, ``?``, ``[...]``) whose pod
    creations are authorised as the pod's service account: controllers that create pods
    for others. Add the operators that do so (``system:serviceaccount:kubeflow:*``,
    KubeRay's); every other requester is authorised as itself."""
    max_gpu_containers: int = DEFAULT_MAX_GPU_CONTAINERS
    """GPU containers (init containers and sidecars included) a pod may have; a pod with
    more is denied (InvalidRequest) before anything is computed for them."""
    request_budget_s: float | None = 8.0
    """A GPU pod CREATE on the event loop (:meth:`Admitter.admit_async`) is answered
    within this many seconds, or denied with StoreUnavailable: below the webhook's
    timeoutSeconds (10 in the chart), so that the API server hears a reason rather than a
    timeout, and a pod is never admitted after its client gave up. A reservation that
    the store commits after the budget is released (:mod:`admission.writer`)."""


class Admitter:
    """Decides admission requests; thread-safe."""

    def __init__(
        self,
        *,
        store: Store,
        snapshot: Callable[[], Snapshot],
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utcnow,
        backend_table: Mapping[str, Backend] | None = None,
        snapshot_async: Callable[[], Awaitable[Snapshot]] | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        """The snapshot of the configuration in force (its organisation and policy)."""
        self.snapshot_async = snapshot_async
        """The snapshot for :meth:`admit_async`, never blocking the loop
        (:class:`admission.organisation.LiveSnapshot`); None: :attr:`snapshot` is
        called there."""
        self.settings = settings or Settings()
        self.clock = clock
        self.backends = dict(backends.BACKENDS if backend_table is None else backend_table)
        self.names = GpuNames.of(
            (r for b in self.backends.values() for r in b.gpu_resources),
            (a for b in self.backends.values() for a in b.gpu_annotations),
        )
        self._tokens = _tokens(self.names)
        self._trusted = _globs(self.settings.trusted_controllers)
        self._writer: group_commit.LedgerWriter | None = None
        self._writer_lock = threading.Lock()
        self._inline: group_commit.InlineWriter | None = None
        self._on_loop: group_commit.LoopGroupWriter | None = None
        self._on_loop_of: asyncio.AbstractEventLoop | None = None

    @property
    def writer(self) -> group_commit.LedgerWriter:
        """The group-committing writer of this admitter's ledger writes (started on
        first use; :meth:`close` stops it)."""
        current = self._writer
        if current is not None:
            return current
        with self._writer_lock:
            if self._writer is None:
                # one thread: SQLite takes one writer at a time, and on PostgreSQL
                # every reservation in a pool locks the pool's row
                self._writer = group_commit.LedgerWriter(
                    self.store, max_group=self.settings.max_group
                )
            return self._writer

    @property
    def inline_writer(self) -> group_commit.InlineWriter:
        """The group commit on the event loop (SQLite), handing a group to
        :attr:`writer` when another process holds the write lock."""
        if self._inline is None:
            self._inline = group_commit.InlineWriter(
                self.store, self.writer, max_group=self.settings.max_group
            )
        return self._inline

    @property
    def loop_writer(self) -> group_commit.LoopGroupWriter:
        """The group commit on the running event loop for PostgreSQL (one per loop: its
        connection belongs to the loop that opened it)."""
        loop = asyncio.get_running_loop()
        if self._on_loop is None or self._on_loop_of is not loop:
            if self._on_loop is not None:  # its loop ended (asyncio.run in tests, tools)
                self._on_loop.abandon()
            self._on_loop = group_commit.LoopGroupWriter(
                self.store, max_group=self.settings.max_group
            )
            self._on_loop_of = loop
        return self._on_loop

    async def aclose(self) -> None:
        """Write what the event loop's group commit holds and close its connection (the
        server calls it on its loop before :meth:`close`)."""
        if self._on_loop is not None and self._on_loop_of is asyncio.get_running_loop():
            writer, self._on_loop = self._on_loop, None
            await writer.aclose()

    def writer_counts(self) -> dict[str, tuple[int, int]]:
        """(transactions, writes) of each group-commit writer started so far."""
        counts = {}
        if self._inline is not None:
            counts["loop"] = (self._inline.groups, self._inline.requests)
        if self._on_loop is not None:
            counts["loop-postgres"] = (self._on_loop.groups, self._on_loop.requests)
        if self._writer is not None:
            counts["thread"] = (self._writer.groups, self._writer.requests)
        return counts

    def close(self) -> None:
        """Write what is queued and stop the blocking path's writer thread (the event
        loop's group commit closes with :meth:`aclose`)."""
        with self._writer_lock:
            current, self._writer = self._writer, None
        if current is not None:
            current.close()

    # -- the quick path: no store ------------------------------------------------------

    def plain(self, body: bytes) -> bool:
        """True when ``body`` cannot ask for a GPU: none of the GPU resource domains
        (``nvidia.com/``, ``gpupool.io/``, ``huawei.com/``...) nor any data plane's GPU
        annotation occurs anywhere in it, so neither the pod nor its old version (for an
        UPDATE) has GPU resources or gpupool metadata. The API server writes JSON
        without escaping letters or ``/``, so a name cannot hide from this test; a body
        that passes it is answered from its head alone (uid, kind, operation)."""
        return not any(token in body for token in self._tokens)

    def quick(self, request: Request) -> tuple[Response | None, Pod | None]:
        """Answer without the store when possible; else (None, the pod to admit)."""
        if not request.is_pod or request.operation not in ("CREATE", "UPDATE"):
            return Response(allowed=True, reason=Reason.NOT_GPU), None
        pod = parse_pod(request.object, namespace=request.namespace)
        if request.operation == "UPDATE":
            return self._update(request, pod), None
        if not demand_mod.is_gpu_pod(pod, self.names) and not pod.annotations.get(
            ANNOTATION_ALLOCATION_ID
        ):
            return self._untouched(pod), None
        # A pod with an allocation id and no GPU resource may be one gpupool admitted on
        # a data plane that hands out GPUs by annotation (KAI), called again: the ledger
        # decides (a forged id is removed there).
        return None, pod

    def _update(self, request: Request, pod: Pod) -> Response:
        old = parse_pod(request.old_object, namespace=request.namespace, what="oldObject")
        changed = []
        if demand_mod.gpu_fields(old, self.names) != demand_mod.gpu_fields(pod, self.names):
            changed.append("GPU resources")
        if demand_mod.gpupool_metadata(old, self.names) != demand_mod.gpupool_metadata(
            pod, self.names
        ):
            changed.append(f"{PREFIX} labels or GPU annotations")
        if not changed:
            return Response(allowed=True, reason=Reason.NOT_GPU)
        return Response(
            allowed=False,
            reason=Reason.IMMUTABLE_GPU_FIELDS,
            message=(
                f"{request.user or 'this request'} may not change the "
                f"{' or '.join(changed)} of pod {pod.display_name}: they were fixed when "
                "the pod was admitted and its slices reserved. Delete the pod and create "
                "it again with the new GPU request."
            ),
        )

    # -- the full path: GPU pod CREATE -------------------------------------------------

    def admit(self, request: Request, pod: Pod | None = None) -> Response:
        """Decide any request; the store is used only for a GPU pod CREATE. Blocks the
        calling thread while the ledger writes (group-committed by :attr:`writer`)."""
        if pod is None:
            quick, pod = self.quick(request)
            if quick is not None:
                return quick
            assert pod is not None
        try:
            steps = self._create(request, pod)
            try:
                step = next(steps)
                while True:
                    step = steps.send(self._do(step))
            except StopIteration as done:
                answer: Response = done.value
                return answer
        except NoOrganisation:
            return self._no_organisation(pod)
        except (StoreError, ConfigError) as exc:  # StoreUnavailable included
            return _store_down(pod, str(exc))

    async def admit_async(self, request: Request, pod: Pod) -> Response:
        """:meth:`admit` for a GPU pod CREATE (``quick`` answered None), on an event
        loop: the decision runs on the loop, the ledger writes are group-committed on
        the loop itself, for SQLite in place (:class:`~admission.writer.InlineWriter`,
        never waiting for a lock), for PostgreSQL over psycopg's asynchronous
        connection (:class:`~admission.writer.LoopGroupWriter`); the reads it answers
        over the network run in a worker thread. Answered within
        :attr:`Settings.request_budget_s`."""
        budget = self.settings.request_budget_s
        try:
            async with asyncio.timeout(budget):
                return await self._admit_async(request, pod)
        except TimeoutError:
            return _store_down(
                pod,
                f"the store did not answer within the request budget of {budget:g} s",
            )

    async def _admit_async(self, request: Request, pod: Pod) -> Response:
        try:
            snapshot = (
                await self.snapshot_async() if self.snapshot_async is not None else self.snapshot()
            )
            steps = self._create(request, pod, snapshot)
            try:
                step = next(steps)
                while True:
                    step = steps.send(await self._do_async(step))
            except StopIteration as done:
                answer: Response = done.value
                return answer
        except NoOrganisation:
            return self._no_organisation(pod)
        except (StoreError, ConfigError) as exc:
            return _store_down(pod, str(exc))

    # -- readiness ---------------------------------------------------------------------

    def unready_reason(self) -> str | None:
        """Why this webhook cannot admit GPU pods now, or None when it can: the store
        does not answer, or no organisation was ever applied to it (then every GPU pod
        would be denied, so a replica is not ready). Blocks: call it from a thread."""
        try:
            revision = self.store.latest_revision()
        except StoreError as exc:
            return str(exc)
        if revision == 0:
            return (
                f"no organisation has been applied to the governance store "
                f"({self.store.safe_url}) yet, so every GPU pod is denied: run "
                "`gpupool apply -f org.yaml` against this store"
            )
        return None

    def _no_organisation(self, pod: Pod) -> Response:
        return Response(
            allowed=False,
            reason=Reason.NO_ORGANISATION,
            message=(
                f"GPU pod {pod.display_name} was not admitted: gpupool has no organisation "
                f"yet (nothing was ever applied to its store, {self.store.safe_url}), so no "
                "department, queue or quota exists to admit it against. GPU pods are never "
                "admitted unchecked: the platform admins must run `gpupool apply -f "
                "org.yaml` against this store first."
            ),
        )

    # -- the store, for the steps of _create -------------------------------------------

    def _do(self, step: _Step) -> object:
        if isinstance(step, _Lookup):
            return ledger.get(self.store, step.allocation_id)
        if isinstance(step, _Reserve):
            if step.dry_run:
                return _dry_run(self.store, step)
            return self.writer.reserve(step.org, step.request).result()
        try:
            self.writer.record_denial(step).result()
        except StoreError as exc:  # the answer stands; the audit trail missed one
            log.warning("could not record a denial: %s", exc)
        return None

    async def _do_async(self, step: _Step) -> object:
        inline = self.store.is_sqlite
        if isinstance(step, _Lookup):
            if inline:  # a WAL reader never waits for a writer
                return ledger.get(self.store, step.allocation_id)
            # abandoned, not awaited, when the request's budget runs out
            return await anyio.to_thread.run_sync(
                ledger.get, self.store, step.allocation_id, abandon_on_cancel=True
            )
        if isinstance(step, _Reserve):
            if step.dry_run:
                # dry runs are rare: a thread, so that the loop never waits for a lock
                return await anyio.to_thread.run_sync(
                    _dry_run, self.store, step, abandon_on_cancel=True
                )
            return await self._loop_writer(inline).reserve(step.org, step.request)
        try:
            await self._loop_writer(inline).record_denial(step)
        except StoreError as exc:  # the answer stands; the audit trail missed one
            log.warning("could not record a denial: %s", exc)
        return None

    def _loop_writer(
        self, inline: bool
    ) -> group_commit.InlineWriter | group_commit.LoopGroupWriter:
        return self.inline_writer if inline else self.loop_writer

    def warm_up(self) -> None:
        """Warm the policy of the configuration in force now, in this thread (the
        server warms each new revision in the background)."""
        snapshot = self.snapshot()
        rbac.warm(snapshot.policy, sorted(snapshot.org.departments))

    def on_new_snapshot(self, snapshot: Snapshot) -> None:
        """Warm a new revision's policy in a background thread
        (:attr:`Settings.warm_rbac`): the source calls it with each snapshot it builds."""
        if self.settings.warm_rbac:
            threading.Thread(
                target=rbac.warm,
                args=(snapshot.policy, sorted(snapshot.org.departments)),
                name="rbac-warm",
                daemon=True,
            ).start()

    def _create(
        self, request: Request, pod: Pod, snapshot: Snapshot | None = None
    ) -> Generator[_Step, Any, Response]:
        """The decision, as a generator: it yields each step that needs the store and
        is sent the step's result (see :meth:`admit` and :meth:`admit_async`)."""
        snapshot = snapshot if snapshot is not None else self.snapshot()
        org = snapshot.org
        warnings: list[str] = []
        claimed = pod.annotations.get(ANNOTATION_ALLOCATION_ID)
        if claimed:
            alloc = yield _Lookup(claimed)
            if alloc is not None and alloc.request_uid == request.uid and alloc.state.live:
                return self._replay(org, pod, alloc, warnings)  # the API server retried
            if alloc is not None and self._reinvoked(request, pod, alloc):
                return self._replay(org, pod, alloc, warnings)
            if not demand_mod.is_gpu_pod(pod, self.names):
                return self._untouched(pod)
            warnings.append(
                f"annotation {ANNOTATION_ALLOCATION_ID}={claimed!r} was not issued for this "
                "request and was replaced: gpupool.io/ metadata is written by gpupool only."
            )
        identity = self._identity(request, pod)
        who = identity.user
        target = decision.locate(
            snapshot, namespace=request.namespace, queue=pod.labels.get(LABEL_QUEUE) or None
        )
        if isinstance(target, decision.Denial):
            if (
                target.reason is Reason.NAMESPACE_NOT_OWNED
                and self.settings.allow_unowned_namespaces
            ):
                return self._untouched(pod)
            return (yield from self._deny(request, pod, who, target.reason, target.message))
        dept, queue = target.department.name, target.queue.name
        limit = self.settings.max_gpu_containers
        # (only a pod of more containers than the limit can have too many GPU containers)
        if len(pod.containers) > limit and (
            (
                gpu_containers := sum(
                    demand_mod.is_gpu_container(c, self.names) for c in pod.containers
                )
            )
            > limit
        ):
            message = (
                f"{gpu_containers} containers ask for GPUs, and a pod may have {limit} at "
                "most (gpupool webhook --max-gpu-containers): split the work across pods, "
                "or give each container more slices"
            )
            return (
                yield from self._deny(
                    request, pod, who, Reason.INVALID_REQUEST, message, dept=dept, queue=queue
                )
            )
        try:
            wanted: PodDemand = demand_mod.pod_demand(pod, self.names)
        except InvalidDemand as exc:
            return (
                yield from self._deny(request, pod, who, exc.code, str(exc), dept=dept, queue=queue)
            )
        if not wanted.containers:
            return self._untouched(pod)
        warnings.extend(wanted.warnings)
        placed = decision.place(snapshot, target, _containers(wanted))
        if isinstance(placed, decision.Denial):
            return (
                yield from self._deny(
                    request, pod, who, placed.reason, placed.message, dept=dept, queue=queue
                )
            )
        grants, sku = placed.grants, placed.sku
        try:
            # the pool's data plane renders the grants before RBAC is asked: a grant it
            # cannot serve is refused as such, whoever asks
            backend = self._backend(target.pool.backend)
            changes = {name: backend.container(g, target.pool) for name, g in grants.items()}
            pod_changes = backend.pod(grants, target.pool, queue)
        except PlacementError as exc:
            return (
                yield from self._deny(request, pod, who, exc.code, str(exc), dept=dept, queue=queue)
            )
        plan = decision.authorise(snapshot, placed, identity)
        if isinstance(plan, decision.Denial):
            return (
                yield from self._deny(
                    request,
                    pod,
                    who,
                    plan.reason,
                    f"{plan.message}{self._identity_note(request, pod, identity)}",
                    dept=dept,
                    queue=queue,
                    sku=sku,
                )
            )
        amount = plan.amount
        wish = ledger.ReserveRequest(
            demand=plan.demand,
            request_uid=request.uid,
            namespace=request.namespace,
            grants=grants,
            subject=plan.subject or who,
            pod_name=pod.name,
            ttl=self.settings.reservation_ttl,
            now=self.clock(),
            fingerprint=fingerprint.digest(
                request, pod, fingerprint.granted(pod, changes, pod_changes, self.names)
            ),
        )
        reservation: ledger.Reservation = yield _Reserve(
            snapshot.org, wish, dry_run=request.dry_run
        )
        if not reservation.allowed:
            violation = reservation.decision.violation
            detail = violation.message() if violation is not None else "over quota."
            return Response(
                allowed=False,
                reason=reservation.decision.reason,
                message=(
                    f"{who} asked for {_what(amount, sku)} for pod {pod.display_name} in queue "
                    f"{dept}/{queue}: {detail}"
                ),
            )
        alloc = reservation.allocation
        if reservation.replayed and alloc is not None:
            return self._replay(org, pod, alloc, warnings)
        ops = patch_mod.build(
            pod,
            grants=grants,
            containers=changes,
            pod_changes=pod_changes,
            department=dept,
            queue=queue,
            sku=sku,
            allocation_id=alloc.id if alloc is not None else None,
            names=self.names,
        )
        return Response(allowed=True, reason=Reason.ADMITTED, patch=ops, warnings=warnings)

    def _reinvoked(self, request: Request, pod: Pod, alloc: ledger.Allocation) -> bool:
        """Whether ``pod`` is the pod ``alloc`` was reserved for, called again under a new
        request uid after another webhook changed it (docs/protocol.md, "Reinvocation").

        Only an entry still reserved (no pod bound it yet: a reinvocation comes before
        the pod exists), within its TTL, in this namespace, whose fingerprint is this
        request's: the same requester, name or generateName, owners and service account,
        and the very GPU resources gpupool wrote. A copied or forged id fails one of
        these and is replaced; a pod whose GPU demand changed is a new request."""
        return (
            alloc.state is State.RESERVED
            and alloc.namespace == request.namespace
            and self.clock() < alloc.expires_at
            and bool(alloc.fingerprint)
            and hmac.compare_digest(
                alloc.fingerprint,
                fingerprint.digest(request, pod, fingerprint.present(pod, self.names)),
            )
        )

    def _replay(
        self, org: Org, pod: Pod, alloc: ledger.Allocation, warnings: list[str]
    ) -> Response:
        """The answer already given to this request uid, rebuilt from the ledger."""
        pool = org.pools.get(alloc.pool)
        if pool is None:
            raise ConfigError(
                f"pool {alloc.pool!r} of allocation {alloc.id} is no longer configured"
            )
        backend = self._backend(pool.backend)
        grants: dict[str, SliceGrant] = dict(alloc.grants)
        changes: dict[str, ContainerChanges] = {
            name: backend.container(g, pool) for name, g in grants.items()
        }
        ops = patch_mod.build(
            pod,
            grants=grants,
            containers=changes,
            pod_changes=backend.pod(grants, pool, alloc.queue),
            department=alloc.department,
            queue=alloc.queue,
            sku=alloc.sku,
            allocation_id=alloc.id,
            names=self.names,
        )
        return Response(allowed=True, reason=Reason.ADMITTED, patch=ops, warnings=warnings)

    def _untouched(self, pod: Pod) -> Response:
        """Allowed and not governed. Only what users never write is removed: gpupool.io/
        metadata (an allocation-id on an ungoverned pod must never reach the reconciler)
        and the data planes' GPU annotations (KAI hands out GPUs by annotation)."""
        ops = patch_mod.strip_metadata(pod, self.names)
        warnings = []
        if ops:
            warnings.append(
                f"removed {', '.join(patch_mod.stripped(pod, self.names))}: gpupool writes "
                "these on GPU pods it admits; ask for GPUs with nvidia.com/gpu (and the "
                "gpupool.io/sku label) instead."
            )
        return Response(allowed=True, reason=Reason.NOT_GPU, patch=ops, warnings=warnings)

    def _backend(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is None:
            raise ConfigError(f"backend {name!r} is not installed in this webhook")
        return backend

    def trusted(self, requester: str) -> bool:
        """Whether ``requester`` is one of :attr:`Settings.trusted_controllers`."""
        return self._trusted(requester) is not None

    def _identity(self, request: Request, pod: Pod) -> rbac.Identity:
        if self.trusted(request.user):
            return rbac.Identity(user=f"{rbac.SA_PREFIX}{request.namespace}:{pod.service_account}")
        return rbac.Identity(user=request.user, groups=request.groups)

    def _identity_note(self, request: Request, pod: Pod, identity: rbac.Identity) -> str:
        if self.trusted(request.user):
            return (
                f" (a pod created by the controller {request.user} is authorised as its "
                f"service account {identity.user}: bind that service account, or set the "
                "workload's serviceAccountName to one that is bound)"
            )
        if pod.controlled:
            return (
                f" (the pod names a controller owner, but {request.user or 'the requester'} "
                "is not a trusted controller, so the pod is authorised as its creator, not "
                "as its service account; if this is an operator that creates pods for "
                "users, the platform admins can trust it with --trusted-controller)"
            )
        return ""

    def _deny(
        self,
        request: Request,
        pod: Pod,
        who: str,
        reason: Reason,
        message: str,
        *,
        dept: str = "",
        queue: str = "",
        sku: str = "",
    ) -> Generator[_Step, Any, Response]:
        text = f"pod {pod.display_name} (as {who}): {message}"
        if not request.dry_run:
            yield ledger.Denial(
                at=self.clock(),
                namespace=request.namespace,
                department=dept,
                queue=queue or pod.labels.get(LABEL_QUEUE, ""),
                sku=sku,
                subject=who,
                reason=reason.value,
                message=text,
            )
        return Response(allowed=False, reason=reason, message=text)


@dataclass(frozen=True)
class _Lookup:
    """Read the allocation that a pod claims."""

    allocation_id: str


@dataclass(frozen=True)
class _Reserve:
    """Reserve in the ledger (a dry run decides and records nothing)."""

    org: Org
    request: ledger.ReserveRequest
    dry_run: bool = False


_Step = _Lookup | _Reserve | ledger.Denial
"""What a decision asks of the store; a Denial step records it for the audit trail."""


def _dry_run(store: Store, step: _Reserve) -> ledger.Reservation:
    wish = step.request
    return ledger.reserve(
        store,
        step.org,
        demand=wish.demand,
        request_uid=wish.request_uid,
        namespace=wish.namespace,
        grants=wish.grants,
        subject=wish.subject,
        pod_name=wish.pod_name,
        ttl=wish.ttl,
        dry_run=True,
        now=wish.now,
    )


def _store_down(pod: Pod, detail: str) -> Response:
    return Response(
        allowed=False,
        reason=Reason.STORE_UNAVAILABLE,
        message=(
            f"GPU pod {pod.display_name} was not admitted because gpupool cannot check its "
            f"quota right now ({detail}). GPU pods are never admitted unchecked: retry in a "
            "minute; if it persists, tell the platform admins that the gpupool store is down."
        ),
    )


def _tokens(names: GpuNames) -> tuple[bytes, ...]:
    """Byte strings of which one occurs in every body that could ask for a GPU."""
    tokens = {PREFIX}
    for name in (*names.native, *demand_mod.USER_RESOURCES):
        domain, slash, _ = name.partition("/")
        tokens.add(domain + slash if slash else name)
    for annotation in names.annotations:
        domain, slash, _ = annotation.partition("/")
        # a key without a domain ("mps", "gpu-memory") is matched with its JSON quotes
        tokens.add(domain + slash if slash else f'"{annotation}"')
    return tuple(sorted(t.encode() for t in tokens))


def _containers(wanted: PodDemand) -> tuple[decision.Container, ...]:
    """The pod's GPU containers, as the decision takes them."""
    return tuple(
        decision.Container(
            name=c.container.name,
            request=c.request,
            init=c.container.init,
            restartable=c.container.restartable,
        )
        for c in wanted.containers
    )


def _what(amount: Resources, sku: str) -> str:
    return (
        f"{amount.slices} slice(s) of SKU {sku} ({amount.memory_mib} MiB GPU memory, "
        f"{amount.compute_pct}% of a GPU in compute)"
    )


def _globs(patterns: Sequence[str]) -> Callable[[str], re.Match[str] | None]:
    """One compiled matcher for shell-style globs (fnmatch, case-sensitive)."""
    if not patterns:
        return lambda _text: None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


__all__ = ["Admitter", "MalformedReview", "Settings"]
