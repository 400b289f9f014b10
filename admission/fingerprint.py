"""What identifies a pod at admission, as one digest: for recognising a reinvocation. Pure.

kube-apiserver gives every call to a webhook a new request uid, reinvocations included
(``reinvocationPolicy: IfNeeded``: another mutating webhook, such as Istio's sidecar
injector, changed the pod after gpupool did, so gpupool is called again). The pod then
carries the allocation id gpupool wrote, but under a uid the ledger has never seen. The
id alone proves nothing: anyone can copy it onto a pod. So each reservation records the
digest of what the pod was when it was admitted, and a presented id is honoured only
for a pod with the same digest (see docs/protocol.md, "Reinvocation"):

- who asks: ``userInfo.username`` (a reinvocation comes from the same request);
- which pod: namespace, name or ``generateName`` (a pod created from ``generateName``
  has no name yet), every owner reference (API version, kind, name, uid), the service
  account;
- what it holds: every container's GPU resources, limits and requests, *as gpupool
  wrote them* (the grant rendered by the pool's backend), read as quantities (the API
  server sends ``3000`` back as ``3k``), and the data plane's GPU annotations.

The other webhooks' changes (a sidecar without GPUs, labels, volumes, env) do not
enter it; a change of the GPU demand, of the pod's name or owners, or another
requester, gives another digest: a new request, charged anew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from admission.demand import GpuNames
from admission.review import Pod, Quantity, Request
from governance import quantity
from governance.backends.base import ContainerChanges, PodChanges

GpuShape = dict[str, dict[str, str]]
"""Container name -> {``limits:<resource>`` or ``requests:<resource>``: value}."""


def granted(
    pod: Pod,
    changes: Mapping[str, ContainerChanges],
    pod_changes: PodChanges,
    names: GpuNames,
) -> tuple[GpuShape, dict[str, str]]:
    """The GPU resources and annotations the pod will have once patched: each granted
    container's backend resources (limits, and requests equal to them), every other
    container's GPU resources unchanged (see :func:`admission.patch.build`)."""
    shape: GpuShape = {}
    for container in pod.containers:
        done = changes.get(container.name)
        if done is None:
            fields = _fields(container.limits, container.requests, names)
        else:
            fields = _fields(done.resources, done.resources, names)
        if fields:
            shape[container.name] = fields
    annotations = {k: v for k, v in pod_changes.annotations.items() if k in names.annotations}
    return shape, annotations


def present(pod: Pod, names: GpuNames) -> tuple[GpuShape, dict[str, str]]:
    """The GPU resources and annotations the pod has now."""
    shape: GpuShape = {}
    for container in pod.containers:
        fields = _fields(container.limits, container.requests, names)
        if fields:
            shape[container.name] = fields
    annotations = {k: v for k, v in pod.annotations.items() if k in names.annotations}
    return shape, annotations


def digest(request: Request, pod: Pod, gpu: tuple[GpuShape, Mapping[str, str]]) -> str:
    """64 hex digits (SHA-256) of the requester, the pod's identity and ``gpu``."""
    shape, annotations = gpu
    fields = [
        request.user,
        request.namespace or pod.namespace,
        pod.name,
        pod.generate_name,
        str(len(pod.owners)),
    ]
    for o in pod.owners:
        fields += (o.api_version, o.kind, o.name, o.uid, "1" if o.controller else "0")
    fields += (pod.service_account, str(len(shape)))
    for container in sorted(shape):
        resources = shape[container]
        fields += (container, str(len(resources)))
        for key in sorted(resources):
            fields += (key, resources[key])
    fields.append(str(len(annotations)))
    for key in sorted(annotations):
        fields += (key, annotations[key])
    # each field prefixed by its length: unambiguous whatever the texts hold, and a few
    # microseconds (json.dumps of the same took as long as the rest of the digest)
    text = "".join(f"{len(f)}:{f}" for f in fields)
    return hashlib.sha256(text.encode()).hexdigest()


def _fields(
    limits: Mapping[str, Quantity], requests: Mapping[str, Quantity], names: GpuNames
) -> dict[str, str]:
    out = {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            if names.is_gpu(name):
                out[f"{kind}:{name}"] = _value(value)
    return out


def _value(value: Quantity) -> str:
    """The quantity's value in one spelling (``3k`` and ``3000`` alike)."""
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return str(int(value))  # what quantity.normal gives a whole number, sooner
    try:
        return quantity.normal(quantity.parse(value).value)
    except quantity.InvalidQuantity:
        return f"text:{value}"


__all__ = ["GpuShape", "digest", "granted", "present"]
