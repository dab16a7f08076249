#!/usr/bin/env bash
# Installs the language toolchains the execution-benchmark tests run beyond what the CI image
# has (python3, bash, node, g++, javac are there): PHP from Debian's packages and the TypeScript
# compiler from the npm registry. Root or sudo for apt; a no-op for what is present.
set -euo pipefail
sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
if ! command -v php >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  $sudo apt-get install -y -q --no-install-recommends php-cli >/dev/null
fi
if ! command -v tsc >/dev/null; then
  $sudo npm install -g --silent typescript@5.6.3 >/dev/null
fi
php --version | head -1
tsc --version
