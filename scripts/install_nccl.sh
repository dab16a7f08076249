#!/usr/bin/env bash
# Installs NVIDIA's NCCL library from its PyPI wheel (what PyTorch's CUDA 13 wheels depend on)
# into a virtual environment outside the clone, and prints the path of libnccl.so.2:
#
#   export SYNCODER_NCCL="$(scripts/install_nccl.sh)"
#
# No GPU is needed for what the tests do with it (its version, fresh unique ids handed from
# launched rank 0 to the others); multi-GPU runs open the same library. SYNCODER_NCCL_HOME
# chooses where it goes.
set -euo pipefail
home="${SYNCODER_NCCL_HOME:-$HOME/.cache/syncoder/nccl}"
version="2.32.6"
if [[ ! -x "$home/venv/bin/python" ]]; then
  python3 -m venv "$home/venv" >&2
fi
py="$home/venv/bin/python"
stamp="$home/.installed-$version"
if [[ ! -f "$stamp" ]]; then
  "$py" -m pip install --quiet --disable-pip-version-check "nvidia-nccl-cu13==$version" >&2 \
    || { echo "install_nccl.sh: pip install nvidia-nccl-cu13==$version failed" >&2; exit 1; }
  touch "$stamp"
fi
lib="$("$py" -c 'import nvidia.nccl as n, os; print(os.path.join(n.__path__[0], "lib", "libnccl.so.2"))')"
[[ -f "$lib" ]] || { echo "install_nccl.sh: no $lib" >&2; exit 1; }
echo "$lib"
