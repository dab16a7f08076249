#!/usr/bin/env bash
# Installs what `--features mpi` needs: Debian's Open MPI (mpicc, mpirun, libmpi) and libclang
# (rsmpi generates its bindings with bindgen at build time). Root or sudo; a no-op when present.
set -euo pipefail
if command -v mpicc >/dev/null && command -v mpirun >/dev/null && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends libopenmpi-dev openmpi-bin libclang-dev >/dev/null
