"""The object store behind the demo's Kubernetes API stand-in: versions, lists, watches.

A DEMO STAND-IN, not Kubernetes: it keeps, in memory, the few kinds of object that the
real reconciler and exporter read (pods, Leases) and those the demo writes for people
to read (Events, Nodes), with the semantics those clients rely on:

- one resourceVersion counter for every write (etcd's revision), written on each
  object; an update that names an older version than the object's is a 409 Conflict;
- a list is consistent at one version, which a watch resumes from;
- a watch replays every change after its version, in order, then follows new ones,
  filtered by namespace and selectors as the API server filters them (an object that
  starts matching arrives as ADDED, one that stops matching as DELETED); a version
  older than the kept history is 410 Gone; BOOKMARK events carry the current version
  to a watch that asked for them.

Objects are kept as the JSON the API server sends (dicts built by the ``kubernetes``
client's models, see :mod:`demo.apiserver`), never changed in place: a write stores a
new dict, so a change in the history keeps the object as it was.

Exceptions (:class:`ApiError` and its subclasses) carry the HTTP code and the reason
the API server would give; the HTTP front turns them into ``Status`` objects.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

PODS = "pods"
LEASES = "leases"
EVENTS = "events"
NODES = "nodes"
KINDS = (PODS, LEASES, EVENTS, NODES)


class ApiError(Exception):
    """A request the API server refuses; ``code`` and ``reason`` as it says them."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class Gone(ApiError):
    code, reason = 410, "Expired"


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class Forbidden(ApiError):
    """An admission webhook denied the request (the API server answers 403, or the
    webhook's own code, with its message)."""

    code, reason = 403, "Forbidden"

    def __init__(self, message: str, *, code: int = 403, reason: str = "Forbidden") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


# -- selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""


def _field(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Selector:
    """A field selector and a label selector, equality-based (``a=b``, ``a==b``,
    ``a!=b``; labels also ``a`` and ``!a``), as the clients of the demo send them."""

    fields: tuple[_Requirement, ...] = ()
    labels: tuple[_Requirement, ...] = ()

    FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")

    @classmethod
    def parse(cls, field_selector: str = "", label_selector: str = "") -> Selector:
        return cls(
            fields=tuple(cls._terms(field_selector, fields=True)),
            labels=tuple(cls._terms(label_selector, fields=False)),
        )

    @classmethod
    def _terms(cls, text: str, *, fields: bool) -> Iterator[_Requirement]:
        for raw in filter(None, (t.strip() for t in text.split(","))):
            for op in ("!=", "==", "="):
                if op in raw:
                    key, value = (s.strip() for s in raw.split(op, 1))
                    requirement = _Requirement(key, "!=" if op == "!=" else "=", value)
                    break
            else:
                if fields:
                    raise BadRequest(f"field selector {raw!r}: expected key=value or key!=value")
                requirement = (
                    _Requirement(raw[1:].strip(), "!exists")
                    if raw.startswith("!")
                    else _Requirement(raw, "exists")
                )
            if fields and requirement.key not in cls.FIELDS:
                raise BadRequest(
                    f'field label not supported: "{requirement.key}" (this stand-in '
                    f"knows {', '.join(cls.FIELDS)})"
                )
            yield requirement

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.fields:
            value = _field(obj, req.key) or ""
            if (value == req.value) != (req.op == "="):
                return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for req in self.labels:
            present = req.key in labels
            if req.op == "exists" and not present:
                return False
            if req.op == "!exists" and present:
                return False
            if req.op == "=" and labels.get(req.key) != req.value:
                return False
            if req.op == "!=" and present and labels.get(req.key) == req.value:
                return False
        return True


# -- the store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    version: int
    type: str  # ADDED, MODIFIED, DELETED
    old: JSON | None
    new: JSON


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _versioned(obj: JSON, version: int) -> JSON:
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {})["resourceVersion"] = str(version)
    return out


class _Kind:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JSON] = {}
        self.changes: list[Change] = []
        self.versions: list[int] = []
        self.compacted = 0
        """Changes up to this version are no longer kept: a watch from before is Gone."""


class ObjectStore:
    """Objects of :data:`KINDS`, their versions and recent history; thread-safe.

    ``history`` changes are kept per kind for watches to resume from (the API server
    keeps about five minutes of them); ``bookmark_s`` is how often a watch that asked
    for bookmarks gets one while nothing changes.
    """

    def __init__(
        self,
        *,
        history: int = 20_000,
        bookmark_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._version = 1
        self._kinds = {kind: _Kind() for kind in KINDS}
        self._history = history
        self._bookmark_s = bookmark_s
        self._clock = clock
        self._closed = False

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def _kind(self, kind: str) -> _Kind:
        found = self._kinds.get(kind)
        if found is None:
            raise NotFound(f"the server could not find the requested resource ({kind})")
        return found

    def _record(self, kind: _Kind, type_: str, old: JSON | None, new: JSON) -> None:
        kind.changes.append(Change(self._version, type_, old, new))
        kind.versions.append(self._version)
        if len(kind.changes) > self._history:
            drop = len(kind.changes) - self._history
            kind.compacted = kind.versions[drop - 1]
            del kind.changes[:drop], kind.versions[:drop]
        self._cond.notify_all()

    # -- writes

    def create(self, kind: str, obj: JSON) -> JSON:
        with self._cond:
            k = self._kind(kind)
            key = _key(obj)
            if not key[1]:
                raise Invalid(f"{kind}: metadata.name: Required value: name or generateName")
            if key in k.objects:
                raise AlreadyExists(f'{kind} "{key[1]}" already exists')
            self._version += 1
            stored = _versioned(obj, self._version)
            k.objects[key] = stored
            self._record(k, "ADDED", None, stored)
            return copy.deepcopy(stored)

    def update(self, kind: str, obj: JSON) -> JSON:
        """Replace an object; a ``metadata.resourceVersion`` in ``obj`` must be the
        stored one (optimistic concurrency), none means "whatever is there"."""
        with self._cond:
            k = self._kind(kind)
            key = _key(obj)
            old = k.objects.get(key)
            if old is None:
                raise NotFound(f'{kind} "{key[1]}" not found')
            expected = (obj.get("metadata") or {}).get("resourceVersion")
            if expected and expected != old["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {kind} "{key[1]}": the object has '
                    "been modified; please apply your changes to the latest version and "
                    "try again"
                )
            self._version += 1
            stored = _versioned(obj, self._version)
            k.objects[key] = stored
            self._record(k, "MODIFIED", old, stored)
            return copy.deepcopy(stored)

    def modify(self, kind: str, namespace: str, name: str, change: Callable[[JSON], None]) -> JSON:
        """Read, change (``change`` edits a copy) and write one object atomically."""
        with self._cond:
            current = self.get(kind, namespace, name)
            change(current)
            current["metadata"].pop("resourceVersion", None)
            return self.update(kind, current)

    def delete(self, kind: str, namespace: str, name: str) -> JSON:
        with self._cond:
            k = self._kind(kind)
            old = k.objects.pop((namespace, name), None)
            if old is None:
                raise NotFound(f'{kind} "{name}" not found')
            self._version += 1
            gone = _versioned(old, self._version)
            self._record(k, "DELETED", old, gone)
            return copy.deepcopy(gone)

    def trim(self, kind: str, keep: int) -> int:
        """Delete the oldest objects of ``kind`` beyond the newest ``keep`` (as the API
        server lets Events expire); returns how many went."""
        with self._cond:
            k = self._kind(kind)
            extra = len(k.objects) - keep
            for namespace, name in list(k.objects)[: max(extra, 0)]:
                self.delete(kind, namespace, name)
            return max(extra, 0)

    # -- reads

    def get(self, kind: str, namespace: str, name: str) -> JSON:
        with self._cond:
            found = self._kind(kind).objects.get((namespace, name))
            if found is None:
                raise NotFound(f'{kind} "{name}" not found')
            return copy.deepcopy(found)

    def list(
        self, kind: str, *, namespace: str = "", selector: Selector | None = None
    ) -> tuple[list[JSON], int]:
        """The objects (sorted by namespace and name) and the version they are at."""
        selector = selector or Selector()
        with self._cond:
            items = [
                copy.deepcopy(obj)
                for key, obj in sorted(self._kind(kind).objects.items())
                if (not namespace or key[0] == namespace) and selector.matches(obj)
            ]
            return items, self._version

    def watch(
        self,
        kind: str,
        *,
        since: int | None,
        namespace: str = "",
        selector: Selector | None = None,
        timeout_s: float = 300.0,
        bookmarks: bool = False,
        stop: threading.Event | None = None,
    ) -> Iterator[JSON]:
        """Watch events (``{"type": ..., "object": ...}``) after version ``since``
        (None: the current objects as ADDED first), until ``timeout_s`` passes, the
        store closes or ``stop`` is set. A ``since`` older than the kept history
        yields one ERROR event (410 Expired) and ends."""
        selector = selector or Selector()
        deadline = self._clock() + timeout_s
        with self._cond:
            k = self._kind(kind)
            expired = since is not None and since < k.compacted
            position = self._version if since is None else since
            initial = [
                {"type": "ADDED", "object": copy.deepcopy(obj)}
                for key, obj in sorted(k.objects.items())
                if since is None
                and (not namespace or key[0] == namespace)
                and selector.matches(obj)
            ]
        if expired:
            yield _expired(position, k.compacted)
            return
        yield from initial
        next_bookmark = self._clock() + self._bookmark_s
        while True:
            pending: list[Change] = []
            bookmark = False
            with self._cond:
                if position < k.compacted:
                    expired = True
                else:
                    pending = k.changes[bisect.bisect_right(k.versions, position) :]
                if not pending and not expired:
                    now = self._clock()
                    if self._closed or (stop is not None and stop.is_set()) or now >= deadline:
                        return
                    if bookmarks and now >= next_bookmark:
                        position, bookmark = self._version, True
                        next_bookmark = now + self._bookmark_s
                    else:
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        self._cond.wait(timeout=min(max(wake - now, 0.01), 1.0))
                        continue
            if expired:
                yield _expired(position, k.compacted)
                return
            if bookmark:
                yield _bookmark(kind, position)
                continue
            for change in pending:
                event = _translate(change, namespace, selector)
                if event is not None:
                    yield event
                position = change.version

    def close(self) -> None:
        """End every watch (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _translate(change: Change, namespace: str, selector: Selector) -> JSON | None:
    """A change as a filtered watch sees it."""
    if namespace and _key(change.new)[0] != namespace:
        return None
    was = change.old is not None and selector.matches(change.old)
    now = selector.matches(change.new)
    if change.type == "DELETED":
        return {"type": "DELETED", "object": copy.deepcopy(change.new)} if was else None
    if now and not was:
        return {"type": "ADDED", "object": copy.deepcopy(change.new)}
    if was and not now:
        return {"type": "DELETED", "object": copy.deepcopy(change.new)}
    if now:
        return {"type": change.type, "object": copy.deepcopy(change.new)}
    return None


def _bookmark(kind: str, version: int) -> JSON:
    from demo import models

    return {"type": "BOOKMARK", "object": models.bookmark(kind, version)}


def _expired(requested: int, oldest: int) -> JSON:
    from demo import models

    return {
        "type": "ERROR",
        "object": models.status(
            410, "Expired", f"too old resource version: {requested} ({oldest})"
        ),
    }
