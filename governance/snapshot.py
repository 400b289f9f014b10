"""A snapshot of the organisation, built once per configuration revision.

Every reader of the configuration in force (the webhook, ``gpupool check``,
``gpupool set quota``, the console, the simulator) decides against a
:class:`Snapshot`: the revision's number, its validated :class:`~governance.model.Org`,
its compiled RBAC :class:`~governance.rbac.Policy`, and the indexes the decision reads
on every request (which department owns a namespace, the queues of a department, the
SKUs each queue offers) built at once. A revision is validated and compiled when it is
first read, never again on a request; :mod:`governance.storage.source` re-reads the store
only when the revision changes (as Kueue's scheduler takes one snapshot of its cache per
cycle, ``pkg/cache/scheduler/snapshot.go``).

Pure: no I/O. Immutable once built, so any number of threads may read one while the
next is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance import rbac
from governance.model import Org


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The organisation of one configuration revision, ready for decisions."""

    revision: int
    """The store's configuration revision (0: not from a store)."""
    source: str
    """Where the document came from (a file, ``gpupool set quota``...), for messages."""
    org: Org
    policy: rbac.Policy
    """Compiled from :attr:`org`'s role bindings: the one RBAC truth of this revision."""

    @classmethod
    def build(cls, org: Org, *, revision: int = 0, source: str = "") -> Snapshot:
        """Compile ``org``'s policy and build the indexes the decision reads, now (the
        first request of a revision then pays for none of it)."""
        for department in org.departments:
            org.queues_of(department)
        for queue in org.queues.values():
            org.offered_skus(queue)
        return cls(
            revision=revision,
            source=source,
            org=org,
            policy=rbac.Policy.compile(org.role_bindings),
        )


__all__ = ["Snapshot"]
