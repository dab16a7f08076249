#!/usr/bin/env bash
# Greedy generation on CPU, syncoder vs transformers, same config, machine and threads, one run.
# Usage: scripts/bench_generate.sh CONFIG.json [batch] [prompt] [new] [runs] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; batch=${2:-1}; prompt=${3:-64}; new=${4:-64}; runs=${5:-3}; threads=${6:-2}
export RAYON_NUM_THREADS=$threads
ours=$(cargo bench --bench generate --quiet -- "$config" "$batch" "$prompt" "$new" "$runs" 2>/dev/null)
theirs=$(python3 scripts/bench_generate_torch.py "$config" "$batch" "$prompt" "$new" "$runs" --threads "$threads" 2>/dev/null | tail -1)
printf '%s\n' "$ours"
printf '%s\n' "$theirs"
a=$(printf '%s\n' "$ours" | tail -1 | awk -F'|' '{print $8}')
b=$(printf '%s\n' "$theirs" | awk -F'|' '{print $8}')
echo
echo "ratio syncoder / transformers generated tokens/s: $(python3 -c "print(f'{$a/$b:.2f}')")"
