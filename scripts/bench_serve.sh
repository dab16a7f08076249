#!/usr/bin/env bash
# Serve throughput vs concurrency beside transformers' generate (BENCHMARKS.md, "serve").
# Makes a random Qwen2 (hidden 512, 8 layers, the sample tokenizer's 640 tokens; or CONFIG) with
# `syncoder init`, builds the release binary, and runs scripts/bench_serve.py on it.
# Usage: scripts/bench_serve.sh [CONFIG.json] [concurrency list] [new tokens] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-}; levels=${2:-1,4,16,64}; new=${3:-64}; threads=${4:-2}
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if [ -z "$config" ]; then
  config=$dir/config.json
  python3 - "$config" <<'PY'
import json, sys
c = json.load(open("tests/fixtures/loss_model/config.json"))
c.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, layer_types=["full_attention"] * 8,
         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096)
json.dump(c, open(sys.argv[1], "w"))
PY
fi
target/release/syncoder init --config "$config" --out "$dir/model" >/dev/null
cp tests/fixtures/loss_model/tokenizer.json tests/fixtures/loss_model/tokenizer_config.json "$dir/model/"
python3 scripts/bench_serve.py --syncoder target/release/syncoder --model "$dir/model" \
  --concurrency "$levels" --new "$new" --threads "$threads"
