"""From a host PID to its pod and container: parsing ``/proc/<pid>/cgroup``.

The kubelet puts every container in a cgroup whose path names the pod UID and the
container id. The path's spelling depends on the cgroup version, the kubelet's cgroup
driver and the container runtime:

- cgroup v1 lists one line per hierarchy (``12:memory:/kubepods/...``), cgroup v2 one
  line ``0::/kubepods.slice/...``; a hybrid host lists both.
- cgroupfs driver: ``/kubepods[/burstable|/besteffort]/pod<uid>/<container id>``.
- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<uid with _ for ->.slice/<runtime>-<container id>.scope``,
  with ``cri-containerd-``, ``crio-`` or ``docker-`` as the runtime prefix; nested
  setups (kind, a kubelet in a systemd slice) add parents such as ``kubelet.slice``.
- static (mirror) pods have a 32-hex UID instead of a UUID.

``parse_cgroup`` is pure (text in, value out); ``ProcCgroupResolver`` reads the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.model import ContainerRef

MISS_PROCESS_GONE = "process_gone"
"""The process ended (or /proc is not the host's) before its cgroup could be read."""
MISS_NOT_A_POD = "not_a_pod"
"""The process runs outside any Kubernetes pod (a host process, a plain container)."""
MISS_UNKNOWN_POD = "unknown_pod"
"""The cgroup names a pod the node's pod watch does not know (yet)."""

_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"pod({_UUID}|[0-9a-f]{{32}})(?:\.slice)?$")
_CONTAINER = re.compile(
    r"^(?:(?P<runtime>cri-containerd|crio|docker|containerd|cri-o)-)?"
    r"(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_RUNTIME_NAMES = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "cri-o": "cri-o",
    "docker": "docker",
}


def parse_cgroup(text: str) -> ContainerRef | None:
    """The pod UID and container id named in a ``/proc/<pid>/cgroup`` file, or None.

    Lines of every hierarchy are tried, the unified (v2) line first: on a hybrid host
    the v1 lines name the same container.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    lines.sort(key=lambda line: not line.startswith("0::"))
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ref = _parse_path(parts[2])
        if ref is not None:
            return ref
    return None


def _parse_path(path: str) -> ContainerRef | None:
    segments = [segment for segment in path.split("/") if segment]
    for position, segment in enumerate(segments):
        pod = _POD.search(segment)
        if pod is None:
            continue
        # The container's cgroup is the pod's child; a deeper path (a process that
        # made its own sub-cgroup) still belongs to that container.
        if position + 1 >= len(segments):
            return None
        container = _CONTAINER.match(segments[position + 1])
        if container is None:
            return None
        runtime = _RUNTIME_NAMES.get(container.group("runtime") or "", "")
        return ContainerRef(
            pod_uid=pod.group(1).replace("_", "-"),
            container_id=container.group("id"),
            runtime=runtime,
        )
    return None


class ProcCgroupResolver:
    """Resolves host PIDs through ``<proc_root>/<pid>/cgroup``.

    In a pod the exporter needs ``hostPID: true`` (or the host's /proc mounted and
    passed as ``proc_root``): NVML reports host PIDs.
    """

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._proc_root = proc_root

    def resolve(self, pid: int) -> ContainerRef | str:
        try:
            text = (self._proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return MISS_PROCESS_GONE
        ref = parse_cgroup(text)
        return ref if ref is not None else MISS_NOT_A_POD


def strip_container_id(container_id: str) -> str:
    """``containerd://abc`` (a pod status's containerID) -> ``abc``."""
    _, sep, rest = container_id.partition("://")
    return rest if sep else container_id
