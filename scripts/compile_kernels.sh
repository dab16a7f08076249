#!/usr/bin/env bash
# Compiles every kernels/*.cu to cubin for sm_80 (A100) and sm_90a (H100/H200, the SASS the fatbins ship) through ptxas, so
# register, shared-memory and syntax errors show on a machine without a GPU; warnings fail, and so does any register spill.
# Prints ptxas's resource use per entry point (registers, spills, static shared memory); the dynamic shared memory of
# the flash-attention tiles is the launcher's (src/ops/flash_attention.rs: forward 24/48 KiB, backward 32/48 KiB at
# head dim 64/128), checked against the 48 KiB limit by its tests and the CPU kernel harness.
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
    nvcc -std=c++17 -O3 -cubin -arch="$arch" -Werror all-warnings -Xptxas -warn-spills,-v $defines \
      -o "$out/$(basename "${cu%.cu}")_$arch.cubin" "$cu" 2>"$out/ptxas.log" || { cat "$out/ptxas.log" >&2; exit 1; }
    # One line per entry: arch, name, registers, spill bytes, static shared memory.
    awk -v arch="$arch" '
      /Compiling entry function/ { split($0, q, "'"'"'"); name = q[2] }
      /spill stores/ { spill = $5 + $9 }
      /Used [0-9]+ registers/ { regs = $5; smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11);
                                printf "  %-7s %-34s %4d registers  %4d B spilled  %6d B static shared\n", arch, name, regs, spill, smem
                                if (spill > 0) bad = 1 }
      END { exit bad }' "$out/ptxas.log" || { echo "compile_kernels: $cu spills registers for $arch" >&2; exit 1; }
    n=$((n + 1))
  done
done
echo "compile_kernels: $n cubins (sm_80, sm_90a) from $(ls kernels/*.cu | wc -l) kernel files"
