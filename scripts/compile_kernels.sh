#!/usr/bin/env bash
# Compiles every kernels/*.cu to cubin for sm_80 (A100) and sm_90a (H100/H200, the SASS the fatbins ship) through ptxas, so
# register, shared-memory and syntax errors show on a machine without a GPU; warnings fail.
# Needs nvcc on PATH: eval "$(scripts/cuda_toolkit.sh)" first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The -D flags build.rs passes: every `pub const NAME: TYPE = DIGITS;` of the constants file.
defines=$(sed -nE 's/^pub const ([A-Z_]+): [a-z0-9]+ = ([0-9]+);.*/-D\1=\2/p' src/ops/kernel_constants.rs)
[ -n "$defines" ] || { echo "compile_kernels: no constants read from src/ops/kernel_constants.rs" >&2; exit 1; }
n=0
for cu in kernels/*.cu; do
  for arch in sm_80 sm_90a; do
    nvcc -std=c++17 -O3 -cubin -arch="$arch" -Werror all-warnings -Xptxas -warn-spills $defines \
      -o "$out/$(basename "${cu%.cu}")_$arch.cubin" "$cu"
    n=$((n + 1))
  done
done
echo "compile_kernels: $n cubins (sm_80, sm_90a) from $(ls kernels/*.cu | wc -l) kernel files"
