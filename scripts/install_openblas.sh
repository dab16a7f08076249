#!/usr/bin/env bash
# Installs Debian's OpenBLAS runtime (libopenblas0), which a build with `--features openblas`
# loads at run time for its CPU matrix products (src/ops/blas.rs). Nothing to do if present.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  exit 0
fi
run() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libopenblas0
