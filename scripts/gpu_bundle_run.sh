#!/usr/bin/env bash
# run.sh of the GPU bundle (scripts/gpu-bundle.sh copies this file there): validates a GPU node
# and benchmarks it with only the node's NVIDIA driver and CUDA 13 libraries, no network, no
# Rust toolchain.
#
#   target/gpu-bundle/run.sh OUT_DIR
#
# Writes to OUT_DIR: node.txt (nvidia-smi, driver), selftest.txt/.json (every kernel vs its CPU
# twin + a training step), bench_*.txt/.json (syncoder and, where python3 has torch, the PyTorch
# baseline at seq 4096, and both at seq 8192 for memory), and results.md, the table for
# BENCHMARKS.md. Exits non-zero when the selftest fails. SEQ, BATCH, STEPS override the shape.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: run.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
seq="${SEQ:-4096}"; batch="${BATCH:-1}"; steps="${STEPS:-10}"
model="$here/qwen2.5-coder-0.5b.json"

# The CUDA 13 libraries the binary links (cuBLAS, cuBLASLt, NVRTC, cuRAND, cudart): from the
# toolkit if the node has one, else from the nvidia-* wheels beside PyTorch.
dirs=()
# The driver's own folder in containers that mount it (libcuda.so.1).
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [[ -d "$d" ]] && dirs+=("$d"); done
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13; do
  [[ -n "$d" ]] || continue
  for sub in lib64 lib targets/x86_64-linux/lib; do [[ -d "$d/$sub" ]] && dirs+=("$d/$sub"); done
done
if command -v python3 >/dev/null; then
  while IFS= read -r d; do [[ -n "$d" ]] && dirs+=("$d"); done < <(python3 - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
seen = set()
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(r, "nvidia", "*", "lib")):
        if d not in seen and os.path.isdir(d):
            seen.add(d); print(d)
PY
)
fi
export LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin="$here/syncoder"

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "--- ldd"
  ldd "$bin" 2>&1 | grep -E "cuda|cublas|nvrtc|curand|not found"
} > "$out/node.txt"
cat "$out/node.txt"
if ldd "$bin" | grep -q "not found"; then
  echo "run.sh: some CUDA libraries were not found (see $out/node.txt); set CUDA_HOME or LD_LIBRARY_PATH" >&2
  exit 2
fi

status=0
echo "== selftest"
"$bin" selftest --device cuda --json "$out/selftest.json" 2>&1 | tee "$out/selftest.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || status=1

echo "== syncoder bench train, seq $seq"
"$bin" bench train --device cuda --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
  --json "$out/bench_syncoder.json" 2>"$out/bench_syncoder.log" | tee "$out/bench_syncoder.txt"

have_torch=0
python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null && have_torch=1
if [[ $have_torch == 1 ]]; then
  echo "== PyTorch baseline, seq $seq"
  python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
    --json "$out/bench_torch.json" 2>&1 | tee "$out/bench_torch.txt"
  if python3 -c "import liger_kernel" 2>/dev/null; then
    python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
      --liger --json "$out/bench_torch_liger.json" 2>&1 | tee "$out/bench_torch_liger.txt"
  fi
fi

if [[ "${SKIP_8192:-0}" != 1 ]]; then
  echo "== memory at seq 8192"
  "$bin" bench train --device cuda --model-config "$model" --seq-len 8192 --batch 1 --steps 2 --warmup 1 \
    --no-op-times --json "$out/bench_syncoder_8192.json" 2>"$out/bench_syncoder_8192.log" | tee "$out/bench_syncoder_8192.txt"
  if [[ $have_torch == 1 ]]; then
    python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len 8192 --batch 1 --steps 2 --warmup 1 \
      --json "$out/bench_torch_8192.json" 2>&1 | tee "$out/bench_torch_8192.txt"
  fi
fi

if command -v python3 >/dev/null; then
  python3 "$here/summarize.py" "$out" > "$out/results.md" && cat "$out/results.md"
fi
exit $status
