"""The configuration in force, as its readers keep it: one snapshot per revision.

"The organisation and its policy, kept current" exists here once, for every reader: the
webhook (:mod:`admission.organisation` refreshes it off the event loop), the console,
``gpupool check`` and ``gpupool set quota`` (:func:`load`, once).
:meth:`SnapshotSource.get` asks the store for the newest revision number at most every
``refresh_s`` seconds (one indexed ``max()`` query) and builds a new
:class:`~governance.snapshot.Snapshot` (the document validated, the policy compiled)
only when the revision changed, so it is cheap enough to call on every request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from governance import config
from governance.errors import NoOrganisation
from governance.model import Org
from governance.rbac import EMPTY, Policy
from governance.snapshot import Snapshot
from governance.storage.store import ConfigRevision, Store


def load(store: Store) -> Snapshot | None:
    """The snapshot of the newest revision, or None before the first apply; a
    ConfigError when that revision no longer validates."""
    latest = store.latest_config()
    return None if latest is None else of_revision(latest)


def of_revision(latest: ConfigRevision) -> Snapshot:
    """The snapshot of one stored revision (its document validated, its policy
    compiled); a ConfigError when it no longer validates."""
    source = latest.source or f"store revision {latest.revision}"
    org = config.build_org(latest.document, source=source)
    return Snapshot.build(org, revision=latest.revision, source=source)


def no_organisation(store: Store) -> NoOrganisation:
    """The error of a store that no configuration was ever applied to."""
    return NoOrganisation(
        "no configuration has been applied to this governance store yet: "
        "run `gpupool apply -f org.yaml` first",
        source=store.safe_url,
    )


class SnapshotSource:
    """The snapshot in force, rebuilt only when a new revision was applied.

    Thread-safe: readers get the snapshot in force without waiting; a refresh that is
    due is made by one caller at a time. ``on_new`` is called with each new snapshot
    (in the thread that built it): the webhook moves it out of the garbage collector's
    sight there.
    """

    def __init__(
        self,
        store: Store,
        *,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_new: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self.on_new = on_new
        self._snapshot: Snapshot | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    @property
    def revision(self) -> int:
        """The revision of the snapshot in force (0 before the first)."""
        found = self._snapshot
        return 0 if found is None else found.revision

    def get(self) -> Snapshot:
        """The snapshot in force; NoOrganisation before the first apply."""
        found = self.current()
        if found is None:
            raise no_organisation(self.store)
        return found

    def current(self) -> Snapshot | None:
        """The snapshot in force, or None before the first apply."""
        found = self._snapshot
        checked = self._checked_at
        if found is not None and checked is not None and self.clock() - checked < self.refresh_s:
            return found
        with self._lock:
            now = self.clock()
            found = self._snapshot
            checked = self._checked_at
            if found is not None and checked is not None and now - checked < self.refresh_s:
                return found  # another thread refreshed meanwhile
            revision = self.store.latest_revision()
            self._checked_at = now
            if revision == 0:
                return None
            if found is None or revision != found.revision:
                latest = self.store.latest_config()
                if latest is None:
                    return None
                found = self._snapshot = of_revision(latest)
                if self.on_new is not None:
                    self.on_new(found)
            return found

    # The console's two callables (dashboard.shared.Console): the organisation, and
    # the policy that answers who may view what.

    def org(self) -> Org | None:
        """The organisation in force, or None before the first apply."""
        found = self.current()
        return None if found is None else found.org

    def policy(self) -> Policy:
        """The policy in force (before the first apply: nobody is bound to anything)."""
        found = self.current()
        return EMPTY if found is None else found.policy


__all__ = ["SnapshotSource", "load", "no_organisation", "of_revision"]
