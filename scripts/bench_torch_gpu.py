#!/usr/bin/env python3
"""PyTorch + transformers baseline for `syncoder bench train --device cuda`: the same full
training step (bf16 weights and activations, forward with loss, backward, global-norm clipping,
AdamW with fp32 master weights and moments as torch keeps them for bf16 params via
`foreach` AdamW on fp32 copies) of a randomly initialised model from a config.json, on one GPU.
Prints the same table rows: step ms, tokens/s, MFU (same FLOPs formula and peak), peak memory
(torch.cuda.max_memory_reserved, and allocated).

    python3 scripts/bench_torch_gpu.py --model-config configs/models/qwen2.5-coder-0.5b.json \\
        --seq-len 4096 --batch 1 [--steps 10] [--warmup 3] [--liger] [--json out.json]

--liger applies Liger-Kernel's Qwen2 patches (fused RMSNorm, RoPE, SwiGLU, linear cross-entropy)
when the package is installed.
"""

import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

# Dense bf16 peaks (TFLOP/s), the same table as src/device.rs.
PEAKS = [(("GH200",), 989.4), (("H200",), 989.4), (("H100", "PCIE"), 756.0), (("H100", "NVL"), 835.0),
         (("H100",), 989.4), (("H800",), 989.4), (("A100",), 312.0), (("A800",), 312.0),
         (("L40S",), 362.1), (("B200",), 2250.0)]


def peak_tflops(name):
    up = name.upper()
    for keys, v in PEAKS:
        if all(k in up for k in keys):
            return v
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-config", required=True)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--liger", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu to smoke-test this script")
    args = ap.parse_args()

    with open(args.model_config) as f:
        raw = json.load(f)
    cfg = Qwen2Config(**{k: v for k, v in raw.items() if k not in ("architectures", "torch_dtype", "dtype")})
    cfg._attn_implementation = args.attn
    label = "PyTorch %s + transformers (%s)" % (torch.__version__, args.attn)
    if args.liger:
        try:
            from liger_kernel.transformers import apply_liger_kernel_to_qwen2
            apply_liger_kernel_to_qwen2()
            label += " + Liger-Kernel"
        except ImportError:
            print("liger-kernel is not installed: running without it")
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    model = Qwen2ForCausalLM(cfg).to(dev, dtype=torch.bfloat16).train()
    params = [p for p in model.parameters() if p.requires_grad]
    masters = [p.detach().float().clone() for p in params]
    opt = torch.optim.AdamW(masters, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len), device=dev)
    n_params = sum(p.numel() for p in params)
    if not cfg.tie_word_embeddings:
        # The input embedding is a lookup, not a matmul (syncoder's Qwen2Config::matmul_parameters).
        n_params -= cfg.vocab_size * cfg.hidden_size
    d = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    fpt = 6 * n_params + 12 * cfg.num_hidden_layers * d * args.seq_len

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = [p.grad for p in params]
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        for m, g in zip(masters, grads):
            m.grad = g.float()
        opt.step()
        with torch.no_grad():
            for p, m in zip(params, masters):
                p.copy_(m)
        for p in params:
            p.grad = None
        return loss, norm

    first = None
    for _ in range(args.warmup):
        loss, _ = step()
        first = first if first is not None else loss.item()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    tps = args.batch * args.seq_len / dt
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_tflops(name)
    achieved = tps * fpt / 1e12
    rep = {
        "baseline": label, "device": name, "parameters": n_params, "seq_len": args.seq_len, "batch": args.batch,
        "step_ms": dt * 1e3, "tokens_per_s": tps, "flops_per_token": fpt, "achieved_tflops": achieved,
        "peak_tflops": peak, "mfu": achieved / peak if peak else None,
        "peak_memory_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "peak_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "first_loss": first, "last_loss": loss.item(),
    }
    print(f"| {label} | {name} | {args.batch} x {args.seq_len} | {dt * 1e3:.1f} ms | {tps:.0f} tok/s | "
          f"{achieved:.1f} TFLOP/s | MFU {100 * rep['mfu']:.1f}% | "
          f"peak {rep['peak_memory_reserved_gib']:.2f} GiB reserved, {rep['peak_memory_allocated_gib']:.2f} GiB allocated |"
          if peak else f"| {label} | {name} | {dt * 1e3:.1f} ms | {tps:.0f} tok/s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=2)


if __name__ == "__main__":
    main()
