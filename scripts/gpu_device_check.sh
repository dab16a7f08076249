#!/usr/bin/env bash
# The one prepared call for a lent GPU machine (the `device` tool of this workplace), run from the
# repository root there after `scripts/gpu-bundle.sh` built target/gpu-bundle/ here:
#
#   scripts/gpu_device_check.sh OUT_DIR
#
# 1. the bundle's run.sh (selftest of every kernel against its CPU twin, attention and training
#    benches beside PyTorch, and PyTorch + Liger-Kernel where the wheel in .whl/ installs);
# 2. the smoke fine-tune (configs/smoke.toml) on the GPU in bf16, then the same run SIGKILLed after
#    its step-100 checkpoint and resumed, its losses compared with the uninterrupted run's;
# 3. NCCL on one GPU: `syncoder launch --nproc-per-node 1` runs every collective of a world-size-1
#    NCCL communicator (selftest --comm), then the smoke fine-tune as one launched rank with ZeRO-1
#    and with ZeRO-2 (the sharded update and gather through NCCL), compared with step 2's run;
# 4. the selftest under compute-sanitizer's memcheck, in the time left (SANITIZE=0 skips it).
# BUDGET (seconds, default 420) bounds the whole script, STEP_TIMEOUT each bench; the bundle's
# own switches pass through (SKIP_8192=1 for a shorter run).
# Every step has a time limit; everything lands in OUT_DIR/gpu-check.tgz, plus results.md and the
# logs' tails (the tool returns at most 8 files).
set -uo pipefail
out="${1:?usage: gpu_device_check.sh OUT_DIR}"
budget="${BUDGET:-420}"  # seconds for the whole script
o=/tmp/gpu-check
rm -rf "$o" && mkdir -p "$o"
left() { echo $((budget - SECONDS)); }
finish() {
  tar czf "$out/gpu-check.tgz" -C "$o" .
  cp "$o/bundle/results.md" "$out/" 2>/dev/null
  cat "$o/bundle/results.md" 2>/dev/null
  echo "gpu_device_check: ${SECONDS}s"
}
trap finish EXIT

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv > "$o/clocks.txt" 2>&1

echo "== bundle"
STEP_TIMEOUT="${STEP_TIMEOUT:-90}" SANITIZE=0 timeout -k 5 $(( $(left) - 120 )) \
  bash target/gpu-bundle/run.sh "$o/bundle" > "$o/bundle.log" 2>&1
echo "bundle rc=$?" | tee -a "$o/bundle.log"
tail -c 3000 "$o/bundle.log"

variant="$(grep -oE '^build: cu1[23]' "$o/bundle/node.txt" | cut -d' ' -f2)"
[[ -n "$variant" ]] || exit 1
export "$(grep '^LD_LIBRARY_PATH=' "$o/bundle/node.txt")"
gunzip -c "target/gpu-bundle/$variant/syncoder.gz" > /tmp/syncoder && chmod +x /tmp/syncoder

echo "== smoke fine-tune on the GPU (bf16)"
timeout -k 5 60 /tmp/syncoder train --config configs/smoke.toml --set run.device=cuda --set run.dtype=bf16 \
  --set run.output_dir=/tmp/gpu-smoke > "$o/smoke_train.log" 2>&1
echo "smoke rc=$?" | tee -a "$o/smoke_train.log"
tail -c 1500 "$o/smoke_train.log"
cp /tmp/gpu-smoke/smoke/metrics.jsonl "$o/smoke_metrics.jsonl" 2>/dev/null
ls -R /tmp/gpu-smoke > "$o/smoke_files.txt" 2>&1

echo "== the same fine-tune killed (SIGKILL) after its step-100 checkpoint, then resumed"
SYNCODER_FAULT=kill-after-save:100 timeout -k 5 60 /tmp/syncoder train --config configs/smoke.toml \
  --set run.device=cuda --set run.dtype=bf16 --set run.output_dir=/tmp/gpu-smoke --run-name resumed \
  > "$o/resume_train.log" 2>&1
echo "killed run rc=$? (137 expected)" | tee -a "$o/resume_train.log"
timeout -k 5 60 /tmp/syncoder train --config /tmp/gpu-smoke/resumed/run.toml --resume latest \
  >> "$o/resume_train.log" 2>&1
echo "resumed run rc=$?" | tee -a "$o/resume_train.log"
cp /tmp/gpu-smoke/resumed/metrics.jsonl "$o/resumed_metrics.jsonl" 2>/dev/null
python3 - "$o/smoke_metrics.jsonl" "$o/resumed_metrics.jsonl" <<'PY' | tee "$o/resume_compare.txt"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
la = {m["step"]: m["loss"] for m in a}
lb = {m["step"]: m["loss"] for m in b}
same = [s for s in lb if s in la and la[s] == lb[s]]
diff = [(s, la[s], lb[s]) for s in lb if s in la and la[s] != lb[s]]
print(f"resume on the GPU: {len(same)} of {len(lb)} steps with the uninterrupted run's loss to the bit; "
      f"steps {min(lb)}..{max(lb)}; first differences: {diff[:3]}")
PY

echo "== NCCL: a launched world-size-1 communicator, then 1-rank ZeRO-1 and ZeRO-2 fine-tunes"
timeout -k 5 60 /tmp/syncoder launch --nproc-per-node 1 -- selftest --comm --device cuda > "$o/nccl_comm.txt" 2>&1
echo "nccl selftest --comm rc=$?" | tee -a "$o/nccl_comm.txt"
cat "$o/nccl_comm.txt"
for z in zero1 zero2; do
  timeout -k 5 60 /tmp/syncoder launch --nproc-per-node 1 -- train --config configs/smoke.toml --set run.device=cuda \
    --set run.dtype=bf16 --set run.output_dir=/tmp/gpu-smoke --run-name "$z" --set "train.optimizer_sharding=$z" \
    > "$o/${z}_train.log" 2>&1
  echo "$z launched run rc=$?" | tee -a "$o/${z}_train.log"
  tail -c 600 "$o/${z}_train.log"
  cp "/tmp/gpu-smoke/$z/metrics.jsonl" "$o/${z}_metrics.jsonl" 2>/dev/null
  ls "/tmp/gpu-smoke/$z/step-00000200/training_state" >> "$o/${z}_train.log" 2>&1
done
python3 - "$o/smoke_metrics.jsonl" "$o/zero1_metrics.jsonl" "$o/zero2_metrics.jsonl" <<'PY' | tee "$o/zero_compare.txt"
import json, sys
def losses(p):
    try:
        return {m["step"]: m["loss"] for m in map(json.loads, open(p))}
    except OSError:
        return {}
base = losses(sys.argv[1])
for name, p in (("ZeRO-1", sys.argv[2]), ("ZeRO-2", sys.argv[3])):
    z = losses(p)
    common = sorted(set(base) & set(z))
    if not common:
        print(f"{name} over one launched rank: no metrics to compare")
        continue
    rel = [abs(z[s] - base[s]) / max(abs(base[s]), 1e-12) for s in common]
    print(f"{name} over one launched rank (NCCL) vs the plain run: {len(common)} steps, max relative loss "
          f"difference {max(rel):.2e} (first 10 steps {max(rel[:10]):.2e}); final {z[common[-1]]:.4f} vs {base[common[-1]]:.4f}")
PY

t=$(( $(left) - 10 ))
if [[ "${SANITIZE:-1}" == 1 ]] && (( t > 20 )) && command -v compute-sanitizer >/dev/null; then
  echo "== selftest under compute-sanitizer memcheck (${t}s)"
  timeout -k 5 "$t" compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/syncoder selftest --device cuda \
    > "$o/sanitizer.txt" 2>&1
  echo "sanitizer rc=$?" | tee -a "$o/sanitizer.txt"
  grep -E "ERROR SUMMARY|Invalid|rc=" "$o/sanitizer.txt" | head -20
fi
