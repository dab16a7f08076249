#!/usr/bin/env bash
# One CPU training step, syncoder vs PyTorch eager, same machine, same thread count, one run.
# Usage: scripts/bench_cpu_step.sh [threads]   (needs: pip install torch transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
export RAYON_NUM_THREADS=$threads
cargo bench --bench train_step --quiet 2>/dev/null | sed -n '1,3p'
python3 scripts/bench_torch.py --threads "$threads" | tail -1
