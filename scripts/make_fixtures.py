#!/usr/bin/env python3
"""Golden fixtures for syncoder's parity tests, made with PyTorch + transformers.

Run by hand (never at test time); commit what it writes under tests/fixtures/:

    pip install torch transformers safetensors
    cargo build --release                      # for the `syncoder init` check
    python3 scripts/make_fixtures.py [--syncoder target/release/syncoder]

For each tiny random Qwen2 model (one with tied embeddings and GQA ratio 2, one untied with GQA
ratio 4) it writes the model (config.json + model.safetensors) and `expected.safetensors`:
input ids, labels, logits, the mean loss over supervised tokens, gradients of that loss for a few
parameters, and a packed row (two documents, position ids restarting) with its logits.

With --syncoder it also runs `syncoder init`, loads the result with
transformers.AutoModelForCausalLM.from_pretrained and records its logits, which the Rust test
compares with syncoder's own forward of the same init (same seed).
"""

import argparse
import json
import os
import subprocess
import tempfile

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

MODELS = {
    "tied_gqa2": dict(
        vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512,
    ),
    "untied_gqa4": dict(
        vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=512,
    ),
}

# Parameters whose gradients are recorded.
GRAD_PARAMS = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.bias",
    "model.layers.0.input_layernorm.weight",
    "model.layers.1.self_attn.v_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.1.mlp.gate_proj.weight",
    "model.norm.weight",
]


def build(name, cfg):
    torch.manual_seed(1234 + len(name))
    config = Qwen2Config(**cfg, use_sliding_window=False, attn_implementation="eager")
    model = Qwen2ForCausalLM(config).float()
    with torch.no_grad():
        # Non-trivial biases and norm weights, so wrong handling of either shows.
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.08)
    model.eval()
    return model


def make_model_fixture(name, cfg):
    out = os.path.join(FIXTURES, name)
    os.makedirs(out, exist_ok=True)
    model = build(name, cfg)
    model.save_pretrained(out, safe_serialization=True)
    v = cfg["vocab_size"]
    g = torch.Generator().manual_seed(7)
    rows, seq = 2, 24
    input_ids = torch.randint(0, v, (rows, seq), generator=g)
    labels = input_ids.clone()
    labels[0, :5] = -100          # an unsupervised prompt
    labels[1, 10:13] = -100       # and a hole in the middle
    out_ = model(input_ids=input_ids, labels=labels)
    out_.loss.backward()
    params = dict(model.named_parameters())
    grad_names = GRAD_PARAMS + ([] if cfg["tie_word_embeddings"] else ["lm_head.weight"])
    tensors = {
        "input_ids": input_ids.to(torch.int64),
        "labels": labels.to(torch.int64),
        "logits": out_.logits.detach().float().contiguous(),
        "loss": out_.loss.detach().float().reshape(()),
    }
    for gname in grad_names:
        tensors["grad." + gname] = params[gname].grad.detach().float().contiguous()

    # A packed row: documents of 9 and 15 tokens, position ids restarting at the second.
    model.zero_grad()
    doc_a = torch.randint(0, v, (9,), generator=g)
    doc_b = torch.randint(0, v, (15,), generator=g)
    packed = torch.cat([doc_a, doc_b]).unsqueeze(0)
    positions = torch.cat([torch.arange(9), torch.arange(15)]).unsqueeze(0)
    # Block-diagonal causal mask (additive, 4-D), so transformers' eager attention stays within
    # each document.
    seg = torch.cat([torch.zeros(9, dtype=torch.long), torch.ones(15, dtype=torch.long)])
    allowed = (seg[:, None] == seg[None, :]) & torch.ones(24, 24, dtype=torch.bool).tril()
    mask = torch.zeros(24, 24).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
    with torch.no_grad():
        packed_logits = model(input_ids=packed, position_ids=positions, attention_mask=mask).logits[0]
        alone_a = model(input_ids=doc_a.unsqueeze(0)).logits[0]
        alone_b = model(input_ids=doc_b.unsqueeze(0)).logits[0]
    # transformers must have masked across the boundary too, or this fixture would be wrong.
    torch.testing.assert_close(packed_logits, torch.cat([alone_a, alone_b]), rtol=1e-5, atol=1e-5)
    tensors["packed_ids"] = packed[0].to(torch.int64)
    tensors["packed_positions"] = positions[0].to(torch.int64)
    tensors["packed_logits"] = packed_logits.float().contiguous()
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    print(f"{name}: loss {out_.loss.item():.6f}, wrote {out}")


def make_init_fixture(syncoder):
    """`syncoder init` output must load in transformers; record its logits."""
    out = os.path.join(FIXTURES, "init")
    os.makedirs(out, exist_ok=True)
    cfg = dict(MODELS["untied_gqa4"], model_type="qwen2", hidden_act="silu",
               initializer_range=0.02, use_sliding_window=False)
    cfg_path = os.path.join(out, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([syncoder, "init", "--config", cfg_path, "--out", tmp, "--seed", "7"], check=True)
        model = AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="eager").float().eval()
        g = torch.Generator().manual_seed(11)
        ids = torch.randint(0, cfg["vocab_size"], (1, 20), generator=g)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        std = model.model.layers[0].mlp.up_proj.weight.std().item()
    save_file({"input_ids": ids[0].to(torch.int64), "logits": logits.float().contiguous()},
              os.path.join(out, "expected.safetensors"))
    print(f"init: transformers loaded `syncoder init` output (up_proj std {std:.4f}), wrote {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--syncoder", default=os.path.join(HERE, "..", "target", "release", "syncoder"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, cfg in MODELS.items():
        make_model_fixture(name, cfg)
    make_init_fixture(args.syncoder)


if __name__ == "__main__":
    main()
