#!/usr/bin/env bash
# Builds, on a machine without a GPU, the self-contained GPU check bundle target/gpu-bundle/:
#   cu13/syncoder.gz  linked against the CUDA 13 libraries (libcublas.so.13, ...)
#   cu12/syncoder.gz  linked against the CUDA 12 sonames (nodes whose only CUDA libraries are
#                     PyTorch's cu12x wheels)
# both `--features cuda`, gpu-release profile, linked by zig against glibc 2.28 (checked with
# objdump -T), stripped and gzipped; plus the Qwen2.5-Coder-0.5B config, the PyTorch baseline
# script and run.sh, which picks the build that matches the node's libraries. Copy the folder
# to a GPU node and run `run.sh OUT_DIR` there (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
glibc=2.28
triple=x86_64-unknown-linux-gnu
target="${CARGO_TARGET_DIR:-target}"
out=target/gpu-bundle
eval "$(scripts/zig_toolchain.sh)"
rm -rf "$out"
mkdir -p "$out"

build() {  # build VARIANT TOOLKIT_FLAG
  local variant="$1" flag="$2"
  (
    eval "$(scripts/cuda_toolkit.sh "$flag")"
    # candle-kernels asks for `-lmoe` among the dynamic libraries; GNU ld falls back to its
    # libmoe.a, zig's linker does not. A linker script named libmoe.so, in a folder cudarc
    # already puts on the search path, points it at the archive.
    mkdir -p "$CUDA_ROOT/lib/stubs"
    echo 'INPUT(-l:libmoe.a)' > "$CUDA_ROOT/lib/stubs/libmoe.so"
    CARGO_TARGET_DIR="$target/bundle-$variant" cargo zigbuild --profile gpu-release --locked --features cuda \
      --bin syncoder --target "$triple.$glibc"
  )
  local bin="$target/bundle-$variant/$triple/gpu-release/syncoder"
  mkdir -p "$out/$variant"
  cp "$bin" "$out/$variant/syncoder"
  strip "$out/$variant/syncoder"
  # Nothing newer than the chosen glibc, and no libstdc++ beyond GCC 8's (RHEL 8).
  local newest
  newest="$(objdump -T "$out/$variant/syncoder" | grep -oE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/GLIBC_//' | sort -uV | tail -1)"
  if [[ "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -1)" != "$glibc" ]]; then
    echo "gpu-bundle: $variant needs GLIBC_$newest, above $glibc" >&2
    objdump -T "$out/$variant/syncoder" | grep -E "GLIBC_$newest" | head >&2
    exit 1
  fi
  if objdump -T "$out/$variant/syncoder" | grep -qE 'GLIBCXX_3\.4\.(2[6-9]|3[0-9])|CXXABI_1\.3\.1[2-9]'; then
    echo "gpu-bundle: $variant needs a libstdc++ newer than GCC 8's" >&2
    exit 1
  fi
  echo "gpu-bundle: $variant: newest glibc symbol GLIBC_$newest; needs $(readelf -d "$out/$variant/syncoder" | grep -oE '\[lib[^]]+\]' | tr -d '[]' | tr '\n' ' ')"
  gzip -9 "$out/$variant/syncoder"
}

build cu13 --link
build cu12 --link12
cp configs/models/qwen2.5-coder-0.5b.json "$out/"
cp scripts/bench_torch_gpu.py "$out/bench_torch_gpu.py"
cp scripts/bench_torch_attention.py "$out/bench_torch_attention.py"
cp scripts/gpu_bundle_summarize.py "$out/summarize.py"
cp scripts/gpu_bundle_run.sh "$out/run.sh"
chmod +x "$out/run.sh"
size=$(du -sb "$out" | cut -f1)
echo "gpu-bundle: $out, $((size / 1024 / 1024)) MiB"
ls -laR "$out"
if (( size >= 60 * 1024 * 1024 )); then
  echo "gpu-bundle: the bundle is over 60 MiB" >&2
  exit 1
fi
