#!/usr/bin/env python3
"""Combines the JSON files that the GPU bundle's run.sh wrote into results.md (the table for
BENCHMARKS.md): selftest verdict, syncoder vs PyTorch tokens/s, MFU and peak memory, with the
ratios measured in the same run. Standard library only."""

import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def main():
    d = sys.argv[1]
    st = load(d, "selftest.json")
    sy, th = load(d, "bench_syncoder.json"), load(d, "bench_torch.json")
    lg = load(d, "bench_torch_liger.json")
    sy8, th8 = load(d, "bench_syncoder_8192.json"), load(d, "bench_torch_8192.json")
    node = open(os.path.join(d, "node.txt")).read().splitlines() if os.path.exists(os.path.join(d, "node.txt")) else []
    print("## GPU bundle results\n")
    print("```")
    print("\n".join(node[:3]))
    print("```\n")
    if st:
        res = st["results"]
        failed = [r for r in res if not r["passed"]]
        print(f"selftest on {st['device']}: {len(res) - len(failed)} of {len(res)} checks passed")
        for r in failed:
            print(f"- FAIL {r['check']} [{r['dtype']}]: rel. error {r['rel_err']:.3e} > {r['tolerance']:.0e} {r['note']}")
        print()
    else:
        print("selftest: no result\n")
    rows = []
    def row(label, r, mem_key):
        if not r:
            return
        mfu = r.get("mfu")
        mem = r.get(mem_key)
        rows.append(f"| {label} | {r['batch']} x {r['seq_len']} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | "
                    f"{'%.1f%%' % (100 * mfu) if mfu is not None else 'n/a'} | {'%.2f' % mem if mem is not None else 'n/a'} |")
    row("syncoder (fused kernels)", sy, "peak_memory_gib")
    row(th["baseline"] if th else "PyTorch", th, "peak_memory_reserved_gib")
    row(lg["baseline"] if lg else "PyTorch + Liger", lg, "peak_memory_reserved_gib")
    row("syncoder, seq 8192", sy8, "peak_memory_gib")
    row((th8["baseline"] + ", seq 8192") if th8 else "PyTorch 8192", th8, "peak_memory_reserved_gib")
    if rows:
        print("| run | batch x seq | step ms | tokens/s | MFU | peak memory GiB |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()
    if sy and th:
        print(f"syncoder / PyTorch tokens/s: {sy['tokens_per_s'] / th['tokens_per_s']:.2f}x (goal >= 1.2x)")
    if sy and sy.get("mfu") is not None:
        print(f"syncoder MFU: {100 * sy['mfu']:.1f}% of {sy['peak_tflops']} TFLOP/s ({sy['peak_source']}) (goal >= 50%)")
    for r, label in ((sy, f"seq {sy['seq_len']}" if sy else ""), (sy8, "seq 8192")):
        if r and r.get("peak_memory_gib") and r.get("planned_peak_gib"):
            print(f"peak memory at {label}: measured {r['peak_memory_gib']:.2f} GiB, `syncoder plan` "
                  f"{r['planned_peak_gib']:.2f} GiB (plan / measured {r['planned_peak_gib'] / r['peak_memory_gib']:.2f})")
    if sy and sy.get("kernels_per_step") is not None:
        print(f"device calls per step (one micro-batch): {sy['kernels_per_step']:.0f} of our kernels + "
              f"{sy['gemms_per_step']:.0f} cuBLAS calls (candle's own kernels not counted; goal <= 1500 launches), "
              f"{sy['host_reads_per_step']:.0f} host reads (loss and gradient norm at the step's end)")
    if sy8 and th8 and sy8.get("peak_memory_gib") and th8.get("peak_memory_reserved_gib"):
        print(f"peak memory at seq 8192, syncoder / PyTorch: "
              f"{sy8['peak_memory_gib'] / th8['peak_memory_reserved_gib']:.2f}x (goal <= 0.5x)")
    attention(d)
    if sy and sy.get("op_families"):
        print("\n| op family (isolated fwd+bwd) | calls | ms per step |\n|---|---|---|")
        for f in sy["op_families"]:
            print(f"| {f['family']} | {f['calls']} | {f['ms_per_step']:.2f} |")


def attention(d):
    """The attention benches: every implementation's row, and flash / FlashAttention-2 (or SDPA)."""
    for hd in (128, 64):
        ours, torch_ = load(d, "attention_syncoder_d%d.json" % hd), load(d, "attention_torch_d%d.json" % hd)
        if not ours:
            continue
        print(f"\nattention, {ours['batch']} x {ours['seq_len']} tokens, {ours['heads']}/{ours['kv_heads']} heads, "
              f"head dim {hd}\n")
        print("| implementation | fwd ms | bwd ms | fwd+bwd TFLOP/s |\n|---|---|---|---|")
        rows = ours["timings"] + (torch_["timings"] if torch_ else [])
        for r in rows:
            print(f"| {r['implementation']} | {r['forward_ms']:.3f} | {r['backward_ms']:.3f} | {r['total_tflops']:.1f} |")
        flash = next((r for r in ours["timings"] if r["implementation"].startswith("flash")), None)
        for r in (torch_["timings"] if torch_ else []):
            if flash:
                print(f"\nsyncoder flash / {r['implementation']}, fwd+bwd throughput: "
                      f"{flash['total_tflops'] / r['total_tflops']:.2f}x" + (" (goal >= 0.8x)" if "FlashAttention-2" in r["implementation"] else ""))


if __name__ == "__main__":
    main()
