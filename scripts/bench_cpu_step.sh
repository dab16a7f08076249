#!/usr/bin/env bash
# One CPU training step, syncoder vs PyTorch eager, same machine, same thread count, one run.
# Usage: scripts/bench_cpu_step.sh [threads]   (needs: pip install torch transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
export RAYON_NUM_THREADS=$threads
ours=$(cargo bench --bench train_step --quiet 2>/dev/null)
theirs=$(python3 scripts/bench_torch.py --threads "$threads" | tail -1)
printf '%s\n' "$ours" | sed -n '1,4p'
printf '%s\n' "$theirs"
step_ours=$(printf '%s\n' "$ours" | sed -n '3p' | awk -F'|' '{print $4}')
step_theirs=$(printf '%s\n' "$theirs" | awk -F'|' '{print $4}')
echo
echo "ratio syncoder / PyTorch step time: $(python3 -c "print(f'{$step_ours/$step_theirs:.2f}')")"
printf '%s\n' "$ours" | sed -n '5,$p'
