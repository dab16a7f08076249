#!/usr/bin/env python3
"""Writes tests/fixtures/generation/expected.json: transformers' greedy `generate` on the
project's tiny fixture models (f32), for the generation parity test. For each case it records
the prompt ids, the generated ids, and the smallest gap between the two largest logits over the
steps (the test is only meaningful where that gap is far above float rounding).

    python3 scripts/make_generation_fixtures.py
"""

import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")


def greedy(model, prompt_ids, max_new_tokens, eos):
    out = model.generate(
        torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=0,
        output_scores=True,
        return_dict_in_generate=True,
    )
    ids = out.sequences[0, len(prompt_ids):].tolist()
    gap = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores)
    return ids, gap


def main():
    torch.manual_seed(0)
    cases = []
    for name, prompts in [
        ("tied_gqa2", [[5, 17, 99, 3], [200, 1, 1, 1, 40, 41, 42, 43, 44, 45, 46], [7]]),
        ("untied_gqa4", [[11, 12, 13, 14, 15, 16, 17, 18], [250, 3]]),
    ]:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(FIX, name), dtype=torch.float32).eval()
        for p in prompts:
            ids, gap = greedy(model, p, 24, None)
            cases.append({"model": name, "prompt_ids": p, "max_new_tokens": 24, "expected": ids, "min_gap": gap})
    # A chat prompt through the tokenizer and template of the model with a tokenizer; stops
    # at <|im_end|> / <|endoftext|> if they come.
    name = "loss_model"
    d = os.path.join(FIX, name)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d)
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    for text in ["Write a function that adds two numbers.", "Explain recursion in Rust."]:
        msgs = [{"role": "user", "content": text}]
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        ids, gap = greedy(model, prompt, 40, eos)
        cases.append(
            {
                "model": name,
                "chat": text,
                "prompt_ids": prompt,
                "max_new_tokens": 40,
                "expected": ids,
                "text": tok.decode(ids, skip_special_tokens=True),
                "min_gap": gap,
            }
        )
    for c in cases:
        assert c["min_gap"] > 1e-4, f"near-tie in {c['model']} {c['prompt_ids'][:4]}: pick another prompt"
    os.makedirs(os.path.join(FIX, "generation"), exist_ok=True)
    with open(os.path.join(FIX, "generation", "expected.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases; min gap {min(c['min_gap'] for c in cases):.2e}")


if __name__ == "__main__":
    main()
