"""GPU check: a real PyTorch process attributed to a slice through the real NVML backend.

Run on a machine with an NVIDIA GPU and PyTorch (the device tool's machine; not CI).
There is no kubelet there, so the two Kubernetes-side inputs are stood in for at their
boundaries: the process's ``/proc/<pid>/cgroup`` is written under a temporary
``--proc-root`` as containerd + systemd + cgroup v2 write it, and the pod comes as API
JSON into the pod index, with the gpupool labels and the ``gpupool.io/slices``
annotation the webhook writes. NVML, the sampler, attribution and the collector are
the real ones. It prints the DCGM and per-slice series while the process runs.

    python3 bench/gpu_slice_check.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest

from exporter.backends.nvml import NvmlBackend
from exporter.cgroups import ProcCgroupResolver
from exporter.collector import SnapshotCollector
from exporter.pods import PodIndex
from exporter.sampler import Sampler
from governance import contract

UID = "0b7e4c1a-5f6d-4e2b-9a8c-3d2e1f0a9b8c"
CID = "9f" * 32
LOAD = """
import time, torch
hold = torch.empty(6 * 1024**3, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
print("ready", flush=True)
end = time.time() + 20
while time.time() < end:
    a @ a
torch.cuda.synchronize()
"""


def main() -> None:
    worker = subprocess.Popen([sys.executable, "-c", LOAD], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    print("worker pid", worker.pid, worker.stdout.readline().strip(), flush=True)
    with tempfile.TemporaryDirectory() as proc_root:
        cgroup = Path(proc_root) / str(worker.pid) / "cgroup"
        cgroup.parent.mkdir()
        cgroup.write_text(
            "0::/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n"
        )
        grant = contract.SliceGrant(
            count=1, memory_mib=20480, compute_pct=50, backend="hami", pool="h200", sku="h200-half"
        )
        index = PodIndex()
        index.apply(
            "ADDED",
            {
                "metadata": {
                    "uid": UID,
                    "namespace": "research",
                    "name": "torch-check",
                    "labels": {
                        contract.LABEL_DEPARTMENT: "research",
                        contract.LABEL_QUEUE: "training",
                        contract.LABEL_SKU: "h200-half",
                    },
                    "annotations": {
                        contract.ANNOTATION_SLICES: contract.dump_slices({"trainer": grant})
                    },
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {"name": "trainer", "containerID": f"containerd://{CID}"}
                    ],
                },
            },
        )
        sampler = Sampler(
            backend=NvmlBackend(),
            hostname="gpu-check",
            interval_s=1.0,
            resolve=ProcCgroupResolver(Path(proc_root)).resolve,
            pods=index,
        )
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(lambda: sampler.snapshot))
        for _ in range(10):
            sampler.tick()
            time.sleep(1.0)
        text = generate_latest(registry).decode()
    worker.wait()
    wanted = (
        "gpupool_slice_",
        "gpupool_gpu_allocated_",
        "gpupool_unattributed_",
        "gpupool_exporter_backend_errors",
        "gpupool_exporter_attribution",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    )
    for line in text.splitlines():
        if line.startswith(wanted):
            print(line)


if __name__ == "__main__":
    main()
