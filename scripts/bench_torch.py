#!/usr/bin/env python3
"""PyTorch eager baseline for `benches/train_step.rs`: one f32 CPU training step (forward with
loss + backward) of the same Qwen2 shape, batch 4 x 256, with transformers' Qwen2ForCausalLM.

    python3 scripts/bench_torch.py [--threads 2] [--iters 10]
"""

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=8192, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
                      use_sliding_window=False, attn_implementation=args.attn)
    model = Qwen2ForCausalLM(cfg).float().train()
    rows, seq = 4, 256
    ids = (torch.arange(rows * seq) * 7919 % cfg.vocab_size).reshape(rows, seq)
    fwd, bwd, total = [], [], []
    for i in range(args.iters + 2):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            total.append(t2 - t0)
    step = statistics.median(total)
    print(f"| PyTorch {torch.__version__} eager + transformers ({args.attn}) | {args.threads} | {step:.4f} | "
          f"{statistics.median(fwd):.4f} | {statistics.median(bwd):.4f} | {rows * seq / step:.0f} |")


if __name__ == "__main__":
    main()
