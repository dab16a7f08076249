#!/usr/bin/env python3
"""PyTorch baseline for `syncoder bench attention`: forward and backward time and TFLOP/s of
causal attention at one shape (rows of --seq-len tokens, one document per row, bf16), through
`torch.nn.functional.scaled_dot_product_attention` (PyTorch picks its flash / cuDNN / efficient
backend) and, where the `flash-attn` package is installed, FlashAttention-2's
`flash_attn_varlen_func` on the packed tokens (the varlen call syncoder's kernel corresponds to).
Same FLOPs convention as syncoder: forward 4·D·H per visible (query, key) pair, backward 2.5x.

    python3 scripts/bench_torch_attention.py --seq-len 4096 --heads 16 --kv-heads 16 --head-dim 128 \\
        [--batch 1] [--reps 10] [--warmup 3] [--json out.json] [--device cpu]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F


def causal_forward_flops(batch, t, heads, d):
    return 4.0 * d * heads * batch * (t * (t + 1) / 2.0)


def mean_seconds(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / max(reps, 1)


def sdpa(q, k, v):
    # q [B, H, T, D], k/v [B, Hkv, T, D]
    if q.shape[1] != k.shape[1]:
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except TypeError:  # PyTorch before 2.5: repeat the kv heads
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to smoke-test this script")
    a = ap.parse_args()
    if a.heads % a.kv_heads:
        raise SystemExit("--heads must be a multiple of --kv-heads")
    dev = a.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    b, t, h, hkv, d = a.batch, a.seq_len, a.heads, a.kv_heads, a.head_dim
    fwd_flops = causal_forward_flops(b, t, h, d)

    def make(heads):
        return torch.randn(b, heads, t, d, device=dev, dtype=dtype, requires_grad=True)

    q, k, v = make(h), make(hkv), make(hkv)
    dout = torch.randn(b, h, t, d, device=dev, dtype=dtype)
    impls = [("PyTorch %s scaled_dot_product_attention" % torch.__version__, lambda: sdpa(q, k, v))]
    try:
        from flash_attn import flash_attn_varlen_func

        qp = q.detach().transpose(1, 2).reshape(b * t, h, d).contiguous().requires_grad_()
        kp = k.detach().transpose(1, 2).reshape(b * t, hkv, d).contiguous().requires_grad_()
        vp = v.detach().transpose(1, 2).reshape(b * t, hkv, d).contiguous().requires_grad_()
        cu = torch.arange(0, (b + 1) * t, t, device=dev, dtype=torch.int32)
        impls.append(("flash_attn_varlen_func (FlashAttention-2)",
                      lambda: flash_attn_varlen_func(qp, kp, vp, cu, cu, t, t, causal=True).transpose(0, 1)))
        dout_fa = dout.transpose(1, 2).reshape(b * t, h, d).transpose(0, 1).contiguous()
    except ImportError:
        dout_fa = None

    rows = []
    for name, f in impls:
        g = dout_fa if name.startswith("flash_attn") else dout

        def forward():
            with torch.no_grad():
                f()

        def both():
            f().backward(g)

        fwd_s = mean_seconds(forward, dev, a.warmup, a.reps)
        both_s = mean_seconds(both, dev, a.warmup, a.reps)
        bwd_s = max(both_s - fwd_s, 1e-9)
        rows.append({
            "implementation": name,
            "forward_ms": fwd_s * 1e3,
            "backward_ms": bwd_s * 1e3,
            "forward_tflops": fwd_flops / fwd_s / 1e12,
            "backward_tflops": 2.5 * fwd_flops / bwd_s / 1e12,
            "total_tflops": 3.5 * fwd_flops / both_s / 1e12,
        })

    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print("PyTorch attention: %s (%s), %d x %d tokens, %d heads / %d kv heads, head dim %d, causal\n"
          % (name, str(dtype).replace("torch.", ""), b, t, h, hkv, d))
    print("| %-44s | %9s | %9s | %10s | %10s | %12s |" % ("implementation", "fwd ms", "bwd ms", "fwd TF/s", "bwd TF/s",
                                                         "fwd+bwd TF/s"))
    print("|%s|%s|%s|%s|%s|%s|" % ("-" * 46, "-" * 11, "-" * 11, "-" * 12, "-" * 12, "-" * 14))
    for r in rows:
        print("| %-44s | %9.3f | %9.3f | %10.2f | %10.2f | %12.2f |" % (
            r["implementation"][:44], r["forward_ms"], r["backward_ms"], r["forward_tflops"], r["backward_tflops"],
            r["total_tflops"]))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"device": name, "batch": b, "seq_len": t, "heads": h, "kv_heads": hkv, "head_dim": d,
                       "forward_flops": fwd_flops, "timings": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
