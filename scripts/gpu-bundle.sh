#!/usr/bin/env bash
# Builds, on a machine without a GPU, the self-contained GPU check bundle target/gpu-bundle/:
# the stripped `syncoder` binary built with `--features cuda` (linked against the CUDA 13.0
# libraries from PyPI and a link-time stub of the driver library), the Qwen2.5-Coder-0.5B
# config, the PyTorch baseline script, and run.sh. Copy the folder to a GPU node and run
# `run.sh OUT_DIR` there (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/cuda_toolkit.sh --link)"
target="${CARGO_TARGET_DIR:-target}"
cargo build --profile gpu-release --locked --features cuda --bin syncoder
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out"
cp "$target/gpu-release/syncoder" "$out/syncoder"
strip "$out/syncoder"
cp configs/models/qwen2.5-coder-0.5b.json "$out/"
cp scripts/bench_torch_gpu.py "$out/bench_torch_gpu.py"
cp scripts/gpu_bundle_summarize.py "$out/summarize.py"
cp scripts/gpu_bundle_run.sh "$out/run.sh"
chmod +x "$out/run.sh" "$out/syncoder"
size=$(du -sb "$out" | cut -f1)
echo "gpu-bundle: $out, $((size / 1024 / 1024)) MiB"
ls -la "$out"
if (( size >= 60 * 1024 * 1024 )); then
  echo "gpu-bundle: the bundle is over 60 MiB" >&2
  exit 1
fi
