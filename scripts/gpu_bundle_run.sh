#!/usr/bin/env bash
# run.sh of the GPU bundle (scripts/gpu-bundle.sh copies this file there): validates a GPU node
# and benchmarks it with only the node's NVIDIA driver (580 or newer) and its CUDA 13 or CUDA 12
# libraries, no network, no Rust toolchain. It picks the bundle's cu13 or cu12 build to match.
#
#   target/gpu-bundle/run.sh OUT_DIR
#
# Writes to OUT_DIR: node.txt (nvidia-smi, driver), selftest.txt/.json (every kernel vs its CPU
# twin + a training step), bench_*.txt/.json (syncoder and, where python3 has torch, the PyTorch
# baseline at seq 4096, and both at seq 8192 for memory), and results.md, the table for
# BENCHMARKS.md. Exits 3 without a GPU, 4 below driver 580, 2 without the CUDA libraries, 1
# when the selftest fails. SEQ, BATCH, STEPS override the shape; STEP_TIMEOUT (seconds, default
# 600) bounds each step, so a hung kernel ends that step and the rest still run; SANITIZE=1 runs
# the selftest once more under compute-sanitizer's memcheck at the end (sanitizer.txt).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: run.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
seq="${SEQ:-4096}"; batch="${BATCH:-1}"; steps="${STEPS:-10}"
model="$here/qwen2.5-coder-0.5b.json"
step_timeout="${STEP_TIMEOUT:-600}"
t() {  # t CMD...: one step, killed after STEP_TIMEOUT seconds (exit 124, noted in the log)
  timeout -k 10 "$step_timeout" "$@"
  local rc=$?
  [[ $rc == 124 || $rc == 137 ]] && echo "run.sh: '$1 ${2:-}' passed STEP_TIMEOUT=${step_timeout}s and was killed" >&2
  return $rc
}

# The kernels are compiled by CUDA 13.0 (PTX ISA 9.0 beside the sm_80/sm_90a SASS), which the
# NVIDIA 580 driver branch and newer load.
min_driver=580

# 1. The device: an NVIDIA driver that answers and at least one GPU.
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "host: $(uname -srm); $(ldd --version 2>&1 | head -1)"
} > "$out/node.txt"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >>"$out/node.txt" 2>&1; then
  cat "$out/node.txt"
  cat >&2 <<MSG
run.sh: no NVIDIA GPU here: \`nvidia-smi\` is $(command -v nvidia-smi >/dev/null 2>&1 && echo "present but finds no GPU (see $out/node.txt)" || echo "not installed").
This bundle checks and benchmarks an NVIDIA GPU (A100, H100, H200) with driver $min_driver or newer;
copy the folder to a GPU node and run it there: run.sh OUT_DIR.
MSG
  exit 3
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >> "$out/node.txt" 2>&1
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
if [[ -z "$driver" || "${driver%%.*}" -lt $min_driver ]]; then
  cat "$out/node.txt"
  echo "run.sh: NVIDIA driver ${driver:-unknown} is older than $min_driver, the oldest that loads these kernels (built with CUDA 13.0); update the driver" >&2
  exit 4
fi

# 2. The CUDA libraries the binary links (cuBLAS and the cuBLASLt it loads, cuRAND): version 13 (a CUDA
# 13 toolkit or PyTorch's cu130 wheels) or version 12 (PyTorch's cu12x wheels). Searched in the
# driver's container folder, the toolkit folders, the nvidia-* wheels beside python3, and the
# system's library cache.
dirs=()
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [[ -d "$d" ]] && dirs+=("$d"); done
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13 /usr/local/cuda-12; do
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
have() {  # have SONAME: found in a searched folder, one of LD_LIBRARY_PATH, or the system cache
  local d
  local -a user=()
  IFS=: read -r -a user <<< "${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}" "${user[@]}"; do [[ -n "$d" && -e "$d/$1" ]] && return 0; done
  ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 "
}
variant=""
for v in 13 12; do
  if have "libcublas.so.$v" && have "libcublasLt.so.$v" && have libcurand.so.10; then
    variant="cu$v"; break
  fi
done
export LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "build: ${variant:-none found}"
} >> "$out/node.txt"
if [[ -z "$variant" ]]; then
  cat "$out/node.txt"
  echo "run.sh: neither the CUDA 13 nor the CUDA 12 libraries (libcublas, libcublasLt, libcurand.so.10) were found; install PyTorch with CUDA (its nvidia-* wheels) or a CUDA toolkit, or set CUDA_HOME / LD_LIBRARY_PATH" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin="$work/syncoder"
gunzip -c "$here/$variant/syncoder.gz" > "$bin" && chmod +x "$bin"
echo "run.sh: using the $variant build (driver $driver)"
{
  echo "--- ldd"
  ldd "$bin" 2>&1 | grep -E "cuda|cublas|nvrtc|curand|not found"
} >> "$out/node.txt"
cat "$out/node.txt"
if ldd "$bin" | grep -q "not found"; then
  echo "run.sh: some libraries of the $variant build were not found (see $out/node.txt); set CUDA_HOME or LD_LIBRARY_PATH" >&2
  exit 2
fi

status=0
echo "== selftest"
t "$bin" selftest --device cuda --json "$out/selftest.json" 2>&1 | tee "$out/selftest.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || status=1
if [[ ! -s "$out/selftest.json" ]]; then
  # The selftest did not finish its checks (the device refused, or a check crashed): the benches
  # below still run, each bounded by STEP_TIMEOUT, since their logs say more about what broke.
  echo "run.sh: the selftest did not finish on this node (see $out/selftest.txt); going on with the benches" >&2
  status=1
fi

# The attention alone: the shape of the flash-attention goal (head dim 128, T 4096) and the
# Qwen2.5-Coder-0.5B shape (14 query / 2 kv heads, head dim 64); PyTorch's SDPA (and
# flash_attn_varlen_func where installed) beside it.
have_torch_cuda=0
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && have_torch_cuda=1
for shape in "16 16 128" "14 2 64"; do
  read -r h kv d <<<"$shape"
  echo "== syncoder bench attention, seq 4096, heads $h/$kv, head dim $d"
  t "$bin" bench attention --device cuda --seq-len 4096 --heads "$h" --kv-heads "$kv" --head-dim "$d" \
    --json "$out/attention_syncoder_d$d.json" 2>&1 | tee "$out/attention_syncoder_d$d.txt"
  if [[ $have_torch_cuda == 1 ]]; then
    t python3 "$here/bench_torch_attention.py" --seq-len 4096 --heads "$h" --kv-heads "$kv" --head-dim "$d" \
      --json "$out/attention_torch_d$d.json" 2>&1 | tee "$out/attention_torch_d$d.txt"
  fi
done

echo "== syncoder bench train, seq $seq"
t "$bin" bench train --device cuda --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
  --json "$out/bench_syncoder.json" 2>"$out/bench_syncoder.log" | tee "$out/bench_syncoder.txt"

have_torch=0
python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null && have_torch=1
if [[ $have_torch == 1 ]]; then
  echo "== PyTorch baseline, seq $seq"
  t python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
    --json "$out/bench_torch.json" 2>&1 | tee "$out/bench_torch.txt"
  if python3 -c "import liger_kernel" 2>/dev/null; then
    t python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len "$seq" --batch "$batch" --steps "$steps" \
      --liger --json "$out/bench_torch_liger.json" 2>&1 | tee "$out/bench_torch_liger.txt"
  fi
fi

if [[ "${SKIP_8192:-0}" != 1 ]]; then
  echo "== memory at seq 8192"
  t "$bin" bench train --device cuda --model-config "$model" --seq-len 8192 --batch 1 --steps 2 --warmup 1 \
    --no-op-times --json "$out/bench_syncoder_8192.json" 2>"$out/bench_syncoder_8192.log" | tee "$out/bench_syncoder_8192.txt"
  if [[ $have_torch == 1 ]]; then
    t python3 "$here/bench_torch_gpu.py" --model-config "$model" --seq-len 8192 --batch 1 --steps 2 --warmup 1 \
      --json "$out/bench_torch_8192.json" 2>&1 | tee "$out/bench_torch_8192.txt"
  fi
fi

if [[ "${SANITIZE:-0}" == 1 ]] && command -v compute-sanitizer >/dev/null; then
  echo "== selftest under compute-sanitizer memcheck"
  t compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" selftest --device cuda 2>&1 | tee "$out/sanitizer.txt"
  [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi

if command -v python3 >/dev/null; then
  python3 "$here/summarize.py" "$out" > "$out/results.md" && cat "$out/results.md"
fi
exit $status
