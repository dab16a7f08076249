#!/usr/bin/env bash
# Installs zig and cargo-zigbuild from PyPI into a virtual environment outside the clone and
# prints the PATH to use them: `cargo zigbuild --target x86_64-unknown-linux-gnu.2.28` links
# against glibc 2.28 (RHEL 8, Ubuntu 20.04 and newer start the binary) whatever this machine
# has. SYNCODER_ZIG_HOME chooses where it goes.
#
#   eval "$(scripts/zig_toolchain.sh)"
set -euo pipefail
home="${SYNCODER_ZIG_HOME:-$HOME/.cache/syncoder/zig}"
if [[ ! -x "$home/bin/cargo-zigbuild" ]]; then
  python3 -m venv "$home" >&2
  "$home/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==0.13.*" "cargo-zigbuild==0.24.*" >&2 \
    || { echo "zig_toolchain.sh: pip install of ziglang/cargo-zigbuild failed" >&2; exit 1; }
fi
echo "export PATH='$home/bin':\"\$PATH\""
