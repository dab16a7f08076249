#!/usr/bin/env python3
"""Throughput of `syncoder serve` (continuous batching) against concurrency, beside transformers'
`generate` on the same model with the same batch: the benchmark of BENCHMARKS.md ("serve").

    python3 scripts/bench_serve.py --syncoder target/release/syncoder --model DIR \
        [--concurrency 1,4,16,64] [--new 64] [--threads 2]

MODEL is a Hugging Face Qwen2 directory with tokenizer files (`scripts/bench_serve.sh` makes a
random one with `syncoder init`). For each concurrency C, C clients each send one chat request at
once (greedy, `max_tokens = NEW`, `ignore_eos` so every reply has NEW tokens) after a warm-up
request; throughput is the generated tokens over the wall time from the first send to the last
reply. transformers generates the same C chat prompts as one left-padded batch
(`min_new_tokens = max_new_tokens = NEW`, greedy) with the same thread count. Prints a markdown
table.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request


def prompts(n):
    return [f"Request {i}: write a function that {['sorts', 'reverses', 'sums', 'parses'][i % 4]} "
            f"a list of {['numbers', 'strings', 'records'][i % 3]} in {['Rust', 'Python', 'Go'][i % 3]}."
            for i in range(n)]


def post(url, body):
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.load(r)


def bench_serve(binary, model, concurrency, new, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    server = subprocess.Popen([binary, "serve", "--model", model, "--port", "0", "--name", "m",
                               "--max-num-seqs", str(max(concurrency)), "--max-queue", "1024"],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stderr.readline()
        url = "http://" + line.split("http://")[1].split()[0]
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        body = lambda p: {"model": "m", "messages": [{"role": "user", "content": p}], "max_tokens": new,
                          "temperature": 0, "ignore_eos": True}
        post(url, body("warm-up"))
        out = {}
        for c in concurrency:
            results = [None] * c
            def one(i, p):
                results[i] = post(url, body(p))
            ts = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(prompts(c))]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            dt = time.perf_counter() - t0
            tokens = sum(r["usage"]["completion_tokens"] for r in results)
            assert tokens == c * new, (tokens, c * new)
            out[c] = tokens / dt
        return out
    finally:
        server.terminate()
        server.wait()


def bench_transformers(model_dir, concurrency, new, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = {}
    with torch.no_grad():
        warm = tok.apply_chat_template([[{"role": "user", "content": "warm-up"}]], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True, padding=True)
        model.generate(**warm, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        for c in concurrency:
            batch = tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts(c)],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True,
                                            padding=True)
            t0 = time.perf_counter()
            gen = model.generate(**batch, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            dt = time.perf_counter() - t0
            tokens = (gen.shape[1] - batch["input_ids"].shape[1]) * c
            out[c] = tokens / dt
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--syncoder", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    ours = bench_serve(a.syncoder, a.model, levels, a.new, a.threads)
    theirs = bench_transformers(a.model, levels, a.new, a.threads)
    print(f"| concurrency | syncoder serve (tokens/s) | transformers generate, same batch (tokens/s) | ratio |")
    print("|---:|---:|---:|---:|")
    for c in levels:
        print(f"| {c} | {ours[c]:.1f} | {theirs[c]:.1f} | {ours[c] / theirs[c]:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
