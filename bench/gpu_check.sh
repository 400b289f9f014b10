#!/usr/bin/env bash
# GPU check of the exporter's NVML backend (run once on a lent GPU machine through the
# device tool; not part of CI). Starts `python -m exporter --backend nvml`, scrapes it
# idle, while a PyTorch process holds ~8 GiB and runs bf16 matmuls, and after; prints
# the GPU series, the unattributed-process series and the exporter's self-metrics.
# Needs on the machine: python3 with torch, nvidia-ml-py, prometheus-client, click, pyyaml.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
PORT=${PORT:-19400}
scrape() {
  python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$PORT/metrics', timeout=5).read().decode())" > "$OUT/$1.prom" || echo "scrape $1 failed"
}
show() {
  echo "=== $1"
  grep -E '^(DCGM_FI_|gpupool_unattributed|gpupool_slice|gpupool_gpu_allocated|gpupool_exporter_(backend_errors|gpu_healthy|attribution|sample_duration|samples|up|scrape_duration_seconds_(sum|count)))' "$OUT/$1.prom" \
    | sed -E 's/\{[^}]*UUID="([^"]{0,12})[^"]*"[^}]*\}/{UUID=\1..}/' | sort
}
nvidia-smi --query-gpu=name,uuid,driver_version,memory.used,memory.total --format=csv
python3 -c "import pynvml, prometheus_client, click, yaml, torch; print('deps ok: torch', torch.__version__, 'prometheus_client', prometheus_client.__version__)"
python3 -m exporter --backend nvml --port "$PORT" --interval 1 --no-kubernetes > "$OUT/exporter.log" 2>&1 &
EXP=$!
sleep 4
scrape idle
python3 - > "$OUT/torch.log" 2>&1 <<'PY' &
import os, time, torch
print("torch pid", os.getpid(), flush=True)
hold = torch.empty(8 * 1024**3, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
start = time.time()
n = 0
while time.time() - start < 25:
    b = a @ a
    n += 1
torch.cuda.synchronize()
print("matmuls", n, flush=True)
PY
TORCH=$!
sleep 14
scrape busy
nvidia-smi --query-compute-apps=pid,used_memory --format=csv
sleep 4
scrape busy2
wait $TORCH
sleep 4
scrape after
kill $EXP; wait $EXP 2>/dev/null
cat "$OUT/torch.log"
show idle; show busy2; show after
echo "=== exporter log"; tail -20 "$OUT/exporter.log"
