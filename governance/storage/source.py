"""The organisation in force, as readers keep it: re-read only when a revision changes."""

from __future__ import annotations

import time
from collections.abc import Callable

from governance.config import build_org
from governance.errors import NoOrganisation
from governance.model import Org
from governance.storage.store import Store


class OrgSource:
    """The organisation in force, re-read only when a new revision was applied.

    :meth:`get` asks the store for the newest revision number at most every
    ``refresh_s`` seconds (one indexed ``max()`` query) and rebuilds the Org only when
    it changed, so it is cheap enough to call on every admission request.
    """

    def __init__(
        self,
        store: Store,
        *,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._org: Org | None = None
        self._revision = 0
        self._checked_at: float | None = None

    @property
    def revision(self) -> int:
        """The revision of the Org that :meth:`get` returns (0 before the first)."""
        return self._revision

    def get(self) -> Org:
        now = self.clock()
        if (
            self._org is not None
            and self._checked_at is not None
            and now - self._checked_at < self.refresh_s
        ):
            return self._org
        revision = self.store.latest_revision()
        self._checked_at = now
        if self._org is None or revision != self._revision:
            latest = self.store.latest_config()
            if latest is None:
                raise NoOrganisation(
                    "no configuration has been applied to this governance store yet: "
                    "run `gpupool apply -f org.yaml` first",
                    source=self.store.safe_url,
                )
            self._org = build_org(
                latest.document, source=latest.source or f"store revision {latest.revision}"
            )
            self._revision = latest.revision
        return self._org


__all__ = ["OrgSource"]
