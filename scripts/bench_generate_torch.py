#!/usr/bin/env python3
"""Greedy generation with transformers on CPU, the baseline of `benches/generate.rs`: a random
Qwen2 from CONFIG, BATCH prompts of PROMPT tokens, NEW tokens each (min_new_tokens = NEW, so no
early stop), median of RUNS after a warm-up. Prints one table row in the bench's format.

    python3 scripts/bench_generate_torch.py CONFIG.json BATCH PROMPT NEW RUNS --threads 2
"""

import argparse
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("batch", type=int)
    ap.add_argument("prompt", type=int)
    ap.add_argument("new", type=int)
    ap.add_argument("runs", type=int)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(a.config)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    ids = torch.tensor([[(i * 7919 + b * 131) % cfg.vocab_size for i in range(a.prompt)] for b in range(a.batch)])
    mask = torch.ones_like(ids)
    prefill, total = [], []
    with torch.inference_mode():
        for _ in range(a.runs + 1):
            t = time.perf_counter()
            model(ids, attention_mask=mask, use_cache=True)
            prefill.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=a.new,
                                 min_new_tokens=a.new, pad_token_id=0)
            total.append(time.perf_counter() - t)
            assert out.shape[1] == a.prompt + a.new
    p, t = statistics.median(prefill[1:]), statistics.median(total[1:])
    decode = a.batch * (a.new - 1) / max(t - p, 1e-9)
    print(f"| transformers {__import__('transformers').__version__} | {a.batch} | {a.prompt} | {a.new} | {p:.3f} | "
          f"{decode:.1f} | {a.batch * a.new / t:.1f} |")


if __name__ == "__main__":
    main()
