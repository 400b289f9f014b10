"""Exceptions of the governance core.

    GpupoolError
     ├── ConfigError            invalid configuration: every field error of a file
     │                          (each a FieldError: path inside it, reason, line)
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from governance.contract import Reason


class GpupoolError(Exception):
    """Base of every gpupool error."""


@dataclass(frozen=True, kw_only=True)
class FieldError:
    """One thing wrong in a configuration, where it is (as Kueue's ``field.Error``)."""

    path: str
    """Inside the document: ``departments[2].queues[0].quota.memory`` ("" for the whole
    document)."""
    reason: str
    line: int | None = None
    """The line of ``path`` in the file, when the document came from one."""

    @property
    def detail(self) -> str:
        """The reason, with the line when it is known."""
        return self.reason if self.line is None else f"{self.reason} (line {self.line})"

    def shown(self, source: str = "") -> str:
        """``FILE: PATH: REASON (line N)``."""
        return ": ".join(part for part in (source, self.path, self.detail) if part)


class ConfigError(GpupoolError):
    """An invalid configuration: every :class:`FieldError` found in it, in document
    order (a file is checked whole, so that one run shows everything to fix), shown one
    per line. ``path`` and ``reason`` are the first error's."""

    def __init__(
        self,
        message: str = "",
        *,
        source: str = "",
        path: str = "",
        errors: Sequence[FieldError] = (),
    ) -> None:
        self.source = source
        self.errors: tuple[FieldError, ...] = tuple(errors) or (
            FieldError(path=path, reason=message),
        )
        first = self.errors[0]
        self.path = first.path
        self.reason = first.detail
        super().__init__("\n".join(error.shown(source) for error in self.errors))

    def with_lines(self, line_of: Callable[[str], int | None]) -> ConfigError:
        """The same errors, each with the line of its path (``line_of``) where it had none."""
        errors = [
            e if e.line is not None or not e.path else replace(e, line=line_of(e.path))
            for e in self.errors
        ]
        found = ConfigError(source=self.source, errors=errors)
        found.__cause__ = self.__cause__
        return found


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
