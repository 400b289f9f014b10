"""The AdmissionReview wire format (admission.k8s.io/v1): untrusted JSON in, core values out.

pydantic checks the shape of what the API server sends (only the fields the webhook
reads; everything else is ignored) and :func:`parse_review` converts it at once to the
frozen dataclasses below, which the rest of the webhook works on. A body that is not an
AdmissionReview raises :class:`MalformedReview`, which the HTTP edge answers with a 400
and the reason.

Exceptions::

    ValueError
     └── MalformedReview   the body is not an admission.k8s.io/v1 AdmissionReview
                           (or its Pod is not a Pod); ``reason`` says why
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from governance.contract import Reason

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class MalformedReview(ValueError):
    """The request body is not an AdmissionReview the webhook can answer."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# -- the untrusted shape (pydantic) ----------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Kind(_Model):
    group: str = ""
    version: str = ""
    kind: str


class _UserInfo(_Model):
    username: str = ""
    groups: list[str] | None = None


class _Request(_Model):
    uid: str = Field(min_length=1, max_length=128)
    kind: _Kind
    subResource: str | None = None
    name: str | None = None
    namespace: str | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: _UserInfo = Field(default_factory=_UserInfo)
    # Validated straight from the body's bytes into the few Pod fields the webhook
    # reads (no intermediate dict of the whole pod): the cheap path of non-GPU pods.
    object: _Pod | None = None
    oldObject: _Pod | None = None
    dryRun: bool | None = None


class _Review(_Model):
    apiVersion: str
    kind: str
    request: _Request


class _Present(_Model):
    """Any JSON object, its content skipped."""


class _HeadRequest(_Model):
    """The request without its objects' content (for bodies known to ask for no GPU)."""

    uid: str = Field(min_length=1, max_length=128)
    kind: _Kind
    subResource: str | None = None
    namespace: str | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: _UserInfo = Field(default_factory=_UserInfo)
    object: _Present | None = None
    oldObject: _Present | None = None
    dryRun: bool | None = None


class _HeadReview(_Model):
    apiVersion: str
    kind: str
    request: _HeadRequest


Quantity = str | int | float


class _Resources(_Model):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None


class _Container(_Model):
    name: str
    resources: _Resources | None = None
    restartPolicy: str | None = None
    env: list[dict[str, Any]] | None = None


class _OwnerReference(_Model):
    apiVersion: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class _Metadata(_Model):
    name: str | None = None
    generateName: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[_OwnerReference] | None = None


class _PodSpec(_Model):
    containers: list[_Container] = Field(default_factory=list)
    initContainers: list[_Container] | None = None
    serviceAccountName: str | None = None
    schedulerName: str | None = None
    nodeSelector: dict[str, str] | None = None


class _Pod(_Model):
    metadata: _Metadata = Field(default_factory=_Metadata)
    spec: _PodSpec = Field(default_factory=_PodSpec)


_Request.model_rebuild()
_Review.model_rebuild()


# -- core values -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Container:
    name: str
    init: bool
    """An init container (``spec.initContainers``)."""
    restartable: bool
    """A sidecar: an init container with ``restartPolicy: Always``."""
    index: int
    """Position in ``spec.containers`` or ``spec.initContainers`` (JSON Patch paths)."""
    limits: Mapping[str, Quantity]
    requests: Mapping[str, Quantity]
    env: Sequence[Mapping[str, Any]]

    @property
    def path(self) -> str:
        return f"/spec/{'initContainers' if self.init else 'containers'}/{self.index}"

    def resource_names(self) -> set[str]:
        return set(self.limits) | set(self.requests)


class OwnerReference(NamedTuple):
    """One of ``metadata.ownerReferences`` (a named tuple rather than a frozen dataclass:
    one is built per owner of every pod parsed, and a tuple costs a third as much)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool


@dataclass(frozen=True, kw_only=True)
class Pod:
    name: str
    generate_name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str
    controlled: bool
    """Names a controller (an ownerReference with ``controller: true``): the pod's
    author writes it, so it decides nothing about identity."""
    owners: tuple[OwnerReference, ...]
    """``metadata.ownerReferences``, in order."""
    containers: tuple[Container, ...]
    """Init containers first (in order), then the app containers."""
    scheduler_name: str | None
    node_selector: Mapping[str, str]
    has_labels: bool
    has_annotations: bool

    @property
    def display_name(self) -> str:
        if self.name:
            return f"{self.namespace}/{self.name}"
        if self.generate_name:
            return f"{self.namespace}/{self.generate_name}*"
        return f"{self.namespace}/(unnamed)"


@dataclass(frozen=True, kw_only=True)
class Request:
    """One admission request, as the webhook needs it."""

    uid: str
    kind: str
    """``group/version/kind`` of the object, e.g. ``/v1/Pod``."""
    sub_resource: str
    operation: str
    namespace: str
    user: str
    groups: tuple[str, ...]
    dry_run: bool
    object: _Pod | None
    """The request's object, read as a Pod (only the fields the webhook needs)."""
    old_object: _Pod | None
    api_version: str

    @property
    def is_pod(self) -> bool:
        return self.kind == "/v1/Pod" and not self.sub_resource


def _errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_review(body: bytes | str, *, head_only: bool = False) -> Request:
    """The admission request in ``body``; MalformedReview if it is not one.

    ``head_only``: skip the objects (``object`` and ``oldObject`` come back None), for a
    body that the caller already knows asks for no GPU."""
    model: type[_Review] | type[_HeadReview] = _HeadReview if head_only else _Review
    try:
        review = model.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedReview(f"not an {API_VERSION} {KIND}: {_errors(exc)}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # pragma: no cover - pydantic wraps
        raise MalformedReview(f"not an {API_VERSION} {KIND}: {exc}") from None
    if review.kind != KIND:
        raise MalformedReview(f"kind is {review.kind!r}, expected {KIND!r}")
    if review.apiVersion not in (API_VERSION, "admission.k8s.io/v1beta1"):
        raise MalformedReview(f"apiVersion is {review.apiVersion!r}, expected {API_VERSION!r}")
    r = review.request
    if isinstance(r, _HeadRequest) and r.kind.kind == "Pod" and not r.subResource:
        if r.operation in ("CREATE", "UPDATE") and r.object is None:
            raise MalformedReview("request.object is missing: a Pod object is required")
        if r.operation == "UPDATE" and r.oldObject is None:
            raise MalformedReview("request.oldObject is missing: a Pod oldObject is required")
    return Request(
        uid=r.uid,
        kind=f"{r.kind.group}/{r.kind.version}/{r.kind.kind}",
        sub_resource=r.subResource or "",
        operation=r.operation,
        namespace=r.namespace or "",
        user=r.userInfo.username,
        groups=tuple(r.userInfo.groups or ()),
        dry_run=bool(r.dryRun),
        object=r.object if isinstance(r, _Request) else None,
        old_object=r.oldObject if isinstance(r, _Request) else None,
        api_version=review.apiVersion,
    )


def _container(c: _Container, *, init: bool, index: int) -> Container:
    res = c.resources
    return Container(
        name=c.name,
        init=init,
        restartable=init and c.restartPolicy == "Always",
        index=index,
        limits=(res.limits or {}) if res else {},
        requests=(res.requests or {}) if res else {},
        env=c.env or [],
    )


def parse_pod(obj: Mapping[str, Any] | _Pod | None, *, namespace: str, what: str = "object") -> Pod:
    """The Pod in an admission request's ``object``; MalformedReview if it is not one."""
    if obj is None:
        raise MalformedReview(f"request.{what} is missing: a Pod {what} is required")
    if isinstance(obj, _Pod):
        pod = obj
    else:
        try:
            pod = _Pod.model_validate(obj)
        except ValidationError as exc:
            raise MalformedReview(f"request.{what} is not a Pod: {_errors(exc)}") from None
    meta, spec = pod.metadata, pod.spec
    containers = [
        _container(c, init=True, index=i) for i, c in enumerate(spec.initContainers or ())
    ] + [_container(c, init=False, index=i) for i, c in enumerate(spec.containers)]
    return Pod(
        name=meta.name or "",
        generate_name=meta.generateName or "",
        namespace=meta.namespace or namespace,
        labels=meta.labels or {},
        annotations=meta.annotations or {},
        service_account=spec.serviceAccountName or "default",
        controlled=any(ref.controller for ref in meta.ownerReferences or ()),
        owners=tuple(
            OwnerReference(ref.apiVersion, ref.kind, ref.name, ref.uid, bool(ref.controller))
            for ref in meta.ownerReferences or ()
        ),
        containers=tuple(containers),
        scheduler_name=spec.schedulerName,
        node_selector=spec.nodeSelector or {},
        has_labels=meta.labels is not None,
        has_annotations=meta.annotations is not None,
    )


# -- the answer ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Response:
    """The webhook's answer to one admission request."""

    allowed: bool
    reason: Reason
    message: str = ""
    patch: Sequence[Mapping[str, Any]] = ()
    warnings: Sequence[str] = field(default_factory=tuple)

    @property
    def code(self) -> int:
        return self.reason.http_code

    @property
    def decision(self) -> str:
        return "allowed" if self.allowed else "denied"


_ALLOWED_HEAD = b'{"apiVersion":"%s","kind":"AdmissionReview","response":{"uid":'
_ALLOWED_TAIL = b',"allowed":true}}'


def render(request_uid: str, response: Response, *, api_version: str = API_VERSION) -> bytes:
    """The AdmissionReview JSON that carries ``response``."""
    if response.allowed and not response.patch and not response.warnings:
        # the answer to most requests (non-GPU pods), written without json.dumps
        return (
            _ALLOWED_HEAD % api_version.encode() + json.dumps(request_uid).encode() + _ALLOWED_TAIL
        )
    body: dict[str, Any] = {"uid": request_uid, "allowed": response.allowed}
    if not response.allowed:
        body["status"] = {
            "code": response.code,
            "message": response.message,
            "reason": response.reason.value,
            "status": "Failure",
        }
    if response.patch:
        body["patchType"] = "JSONPatch"
        body["patch"] = base64.b64encode(to_json(list(response.patch))).decode()
    if response.warnings:
        body["warnings"] = list(response.warnings)
    # pydantic-core's serialiser: compact JSON, UTF-8, several times json.dumps's speed
    return to_json({"apiVersion": api_version, "kind": KIND, "response": body})
