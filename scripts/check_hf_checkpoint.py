#!/usr/bin/env python3
"""Checks that a syncoder checkpoint loads in transformers unchanged and gives the loss that
`syncoder loss` reports: loads DIR with AutoModelForCausalLM/AutoTokenizer, formats each
instruction/response record of DATA with the checkpoint's own chat template, scores the
assistant turn (its tokens and <|im_end|>), and compares the mean with `syncoder loss`.

    python3 scripts/check_hf_checkpoint.py checkpoints/smoke/latest-dir data/sample/syncode-sample.jsonl
"""

import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ckpt, data = sys.argv[1], sys.argv[2]
    binary = os.environ.get("SYNCODER", "target/release/syncoder")
    model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    total, count = 0.0, 0
    for line in open(data):
        r = json.loads(line)
        user = [{"role": "user", "content": r["instruction"]}]
        full = user + [{"role": "assistant", "content": r["response"]}]
        ids = tok.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"]
        prompt = tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert ids[: len(prompt)] == prompt, "the prompt is not a prefix of the conversation"
        end = len(ids) - 1 - ids[::-1].index(im_end)
        labels = [-100] * len(ids)
        labels[len(prompt) : end + 1] = ids[len(prompt) : end + 1]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        lp = torch.log_softmax(logits[:-1].double(), -1)
        for t in range(len(ids) - 1):
            if labels[t + 1] != -100:
                total -= lp[t, labels[t + 1]].item()
                count += 1
    hf = total / count
    out = subprocess.run([binary, "loss", "--model", ckpt, "--data", data], check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout)
    print(json.dumps({"transformers_loss": hf, "transformers_tokens": count, "syncoder": ours}))
    assert count == ours["supervised_tokens"], "different supervised token counts"
    assert abs(hf - ours["loss"]) <= 1e-4 * max(1.0, abs(hf)), "losses differ"
    print("OK: transformers and syncoder agree")


if __name__ == "__main__":
    main()
