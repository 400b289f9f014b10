"""Exceptions of the governance core.

    GpupoolError
     ├── ConfigError            invalid configuration (file, path inside it, reason)
     │    └── NoOrganisation    no organisation was ever applied to the store
     ├── PlacementError         a request that cannot be placed (unknown SKU, queue...)
     ├── Forbidden              the caller may not make this change (RBAC said no)
     └── StoreError             the store failed
          ├── StoreUnavailable  the database cannot be reached; nothing was recorded
          ├── StoreBusy         another writer holds the lock (only when asked not to wait)
          └── StoreConflict     the database aborted the transaction to break a deadlock
                                or a serialisation conflict; running it again is safe

Each carries its context as attributes; only the CLI turns them into exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from governance.contract import Reason


class GpupoolError(Exception):
    """Base of every gpupool error."""


class ConfigError(GpupoolError):
    def __init__(self, message: str, *, source: str = "", path: str = "") -> None:
        self.source = source
        self.path = path
        self.reason = message
        where = ": ".join(part for part in (source, path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class NoOrganisation(ConfigError):
    """The store holds no configuration revision: nothing was ever applied to it. Not an
    outage (the store answers): the fix is ``gpupool apply -f org.yaml``."""


class PlacementError(GpupoolError):
    """A request that names something that does not exist or is not offered."""

    def __init__(self, reason: Reason, message: str, *, choices: Sequence[str] = ()) -> None:
        self.code = reason
        self.choices = tuple(choices)
        if choices:
            message = f"{message} Valid choices: {', '.join(choices)}."
        super().__init__(message)


class Forbidden(GpupoolError):
    """The caller may not make this change; ``code`` is the reason code (Forbidden)
    and the message names who, what, and whom to ask."""

    def __init__(self, message: str, *, subject: str, department: str) -> None:
        self.code = Reason.FORBIDDEN
        self.subject = subject
        self.department = department
        super().__init__(message)


class StoreError(GpupoolError):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be reached. Nothing was recorded."""


class StoreConflict(StoreError):
    """PostgreSQL chose this transaction to break a deadlock (SQLSTATE 40P01) or a
    serialisation conflict (40001) and rolled it back. Nothing was recorded, and the same
    transaction may simply run again: the ledger does, a bounded number of times."""


class StoreBusy(StoreError):
    """Another connection holds the write lock, and the caller asked not to wait for it
    (``Store.write(wait=False)``). Nothing was recorded: try again, or wait elsewhere."""
