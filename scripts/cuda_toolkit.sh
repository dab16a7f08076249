#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit pieces this project needs from PyPI into a virtual environment
# outside the clone (no GPU, no NVIDIA installer, no root), and prints the environment to use it.
#
#   eval "$(scripts/cuda_toolkit.sh)"          # nvcc + headers: compile kernels, `cargo check --features cuda`
#   eval "$(scripts/cuda_toolkit.sh --link)"   # also the runtime libraries and a driver stub: link binaries
#   eval "$(scripts/cuda_toolkit.sh --link12)" # link against the CUDA 12 sonames instead (libcublas.so.12, ...)
#
# --link12 is for the GPU bundle's variant that runs on nodes whose only CUDA libraries are
# PyTorch's CUDA 12 wheels: the kernels are still compiled by nvcc 13.0 (PyPI has no CUDA 12
# nvcc), so the driver floor stays 580; cudarc is built for CUDA 12.8 (CUDARC_CUDA_VERSION) and
# the binary links link-time stubs carrying the CUDA 12 sonames (scripts/make_link_stubs.sh).
#
# The toolkit is pinned to 13.0.x: NVIDIA driver branch 580 supports CUDA 13.0, and PTX from a
# newer toolkit would not load there. SYNCODER_CUDA_HOME chooses where it goes.
set -euo pipefail
home="${SYNCODER_CUDA_HOME:-$HOME/.cache/syncoder/cuda-13.0}"
link=0
[[ "${1:-}" == "--link" ]] && link=1
link12=0
[[ "${1:-}" == "--link12" ]] && link12=1
log="$home.log"
if [[ ! -x "$home/venv/bin/python" ]]; then
  python3 -m venv "$home/venv" >&2
fi
py="$home/venv/bin/python"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cu="$site/nvidia/cu13"
pkgs=("nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*"
      "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*")
if [[ $link == 1 ]]; then
  # cuBLAS / cuBLASLt, NVRTC and cuRAND of CUDA 13.0 (candle's CUDA backend links them).
  pkgs+=("nvidia-cublas==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-curand==10.4.0.*")
fi
stamp="$home/.installed-$link"
if [[ ! -f "$stamp" ]]; then
  "$py" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" >"$log" 2>&1 \
    || { cat "$log" >&2; echo "cuda_toolkit.sh: pip install failed (log above)" >&2; exit 1; }
  touch "$stamp"
fi
[[ -x "$cu/bin/nvcc" ]] || { echo "cuda_toolkit.sh: no nvcc at $cu/bin/nvcc" >&2; exit 1; }
echo "export CUDA_ROOT='$cu'"
echo "export CUDA_PATH='$cu'"
echo "export CUDA_COMPUTE_CAP=80"
echo "export PATH='$cu/bin':\"\$PATH\""
if [[ $link == 1 ]]; then
  # The wheels ship versioned sonames only; the linker wants lib*.so. The driver library comes
  # from the GPU node at run time: at link time a stub with the same soname stands in for it.
  # cudarc's build script searches $CUDA_ROOT/lib/stubs, so no linker flags are needed.
  linkdir="$cu/lib/stubs"
  mkdir -p "$linkdir"
  for lib in "$cu"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    ln -sf "$lib" "$linkdir/${base%%.so.*}.so"
  done
  if [[ ! -f "$linkdir/libcuda.so" ]]; then
    "$(dirname "$0")/make_link_stubs.sh" "$linkdir" 13 cuda >&2
  fi
fi
if [[ $link12 == 1 ]]; then
  # cudarc's build script searches $CUDA_HOME/lib (and CUDA_PATH, CUDA_ROOT): all three point at
  # the CUDA 12 stubs; nvcc 13.0 comes from PATH.
  # The CUDA 12 runtime is small and real (candle-kernels links libcudart); the large libraries
  # are stubs.
  root12="$home/cu12-link"
  if [[ ! -f "$root12/lib/libcudart.so" ]]; then
    "$py" -m pip install --quiet --disable-pip-version-check "nvidia-cuda-runtime-cu12==12.8.*" >"$log" 2>&1 \
      || { cat "$log" >&2; echo "cuda_toolkit.sh: pip install failed (log above)" >&2; exit 1; }
    "$(dirname "$0")/make_link_stubs.sh" "$root12/lib" 12 cuda cublas cublasLt nvrtc curand >&2
    ln -sf "$site/nvidia/cuda_runtime/lib/libcudart.so.12" "$root12/lib/libcudart.so"
  fi
  echo "export CUDA_ROOT='$root12' CUDA_PATH='$root12' CUDA_HOME='$root12'"
  echo "export NVCC='$cu/bin/nvcc'"
  echo "export CUDARC_CUDA_VERSION=12080"
fi
