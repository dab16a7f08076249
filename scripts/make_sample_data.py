#!/usr/bin/env python3
"""Writes data/sample/syncode-sample.jsonl: a small SynCode-Instruct-style shard of short code
instruction/response pairs across several languages, generated from the project's own templates
(no dataset is copied). Deterministic; re-run by hand after editing:

    python3 scripts/make_sample_data.py
"""

import json
import os
import random

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sample", "syncode-sample.jsonl")

# Binary integer tasks: (task name, description, expression per language family).
BINARY = [
    ("add", "returns the sum of two integers", {"c": "a + b", "py": "a + b"}),
    ("subtract", "returns the first integer minus the second", {"c": "a - b", "py": "a - b"}),
    ("multiply", "returns the product of two integers", {"c": "a * b", "py": "a * b"}),
    ("larger", "returns the larger of two integers", {"c": "a > b ? a : b", "py": "a if a > b else b"}),
    ("smaller", "returns the smaller of two integers", {"c": "a < b ? a : b", "py": "a if a < b else b"}),
    ("average", "returns the integer average of two integers", {"c": "(a + b) / 2", "py": "(a + b) // 2"}),
]
UNARY = [
    ("square", "returns the square of an integer", {"c": "x * x", "py": "x * x"}),
    ("twice", "returns twice an integer", {"c": "2 * x", "py": "2 * x"}),
    ("is_even", "tells whether an integer is even", {"c": "x % 2 == 0", "py": "x % 2 == 0"}),
    ("absolute", "returns the absolute value of an integer", {"c": "x < 0 ? -x : x", "py": "-x if x < 0 else x"}),
]


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def function(lang, name, params, expr_c, expr_py, boolean):
    ret = "bool" if boolean else "int"
    if lang == "python":
        return f"def {name}({', '.join(p + ': int' for p in params)}) -> {ret}:\n    return {expr_py}"
    if lang == "rust":
        t = "bool" if boolean else "i64"
        args = ", ".join(p + ": i64" for p in params)
        body = expr_c if "?" not in expr_c else expr_py.replace(" if ", " ").replace(" else ", " ")
        if "?" in expr_c:
            cond, rest = expr_c.split(" ? ")
            yes, no = rest.split(" : ")
            body = f"if {cond} {{ {yes} }} else {{ {no} }}"
        return f"fn {name}({args}) -> {t} {{\n    {body}\n}}"
    if lang == "go":
        t = "bool" if boolean else "int"
        if "?" in expr_c:
            cond, rest = expr_c.split(" ? ")
            yes, no = rest.split(" : ")
            body = f"if {cond} {{\n\t\treturn {yes}\n\t}}\n\treturn {no}"
        else:
            body = f"return {expr_c}"
        return f"func {camel(name)}({', '.join(params)} int) {t} {{\n\t{body}\n}}"
    if lang == "javascript":
        return f"function {camel(name)}({', '.join(params)}) {{\n  return {expr_c};\n}}"
    if lang == "typescript":
        t = "boolean" if boolean else "number"
        return f"function {camel(name)}({', '.join(p + ': number' for p in params)}): {t} {{\n  return {expr_c};\n}}"
    if lang == "c":
        t = "bool" if boolean else "int"
        return f"{t} {name}({', '.join('int ' + p for p in params)}) {{\n    return {expr_c};\n}}"
    if lang == "java":
        t = "boolean" if boolean else "int"
        return f"static {t} {camel(name)}({', '.join('int ' + p for p in params)}) {{\n    return {expr_c};\n}}"
    if lang == "ruby":
        return f"def {name}({', '.join(params)})\n  {expr_py}\nend"
    raise ValueError(lang)


LANGS = ["python", "rust", "go", "javascript", "typescript", "c", "java", "ruby"]
ASKS = [
    "Write a {lang} function `{fn}` that {desc}.",
    "In {lang}, how do I write a function that {desc}?",
    "Implement `{fn}` in {lang}: it {desc}.",
    "Give me a short {lang} function which {desc}.",
]
INTROS = ["Here is a simple version:", "Sure:", "This does it:", "A direct implementation:"]

# A few longer, hand-written tasks.
EXTRA = [
    ("python", "Reverse a string in Python.", "Slicing with a step of -1 reverses it:\n\n```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```"),
    ("rust", "Reverse a string in Rust.", "Collect the characters in reverse order:\n\n```rust\nfn reverse(s: &str) -> String {\n    s.chars().rev().collect()\n}\n```"),
    ("python", "Compute a factorial iteratively in Python.", "```python\ndef factorial(n: int) -> int:\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n```"),
    ("rust", "Sum a slice of integers in Rust.", "```rust\nfn total(xs: &[i64]) -> i64 {\n    xs.iter().sum()\n}\n```"),
    ("javascript", "Count the vowels in a string with JavaScript.", "```javascript\nfunction countVowels(s) {\n  return (s.match(/[aeiou]/gi) || []).length;\n}\n```"),
    ("go", "Return the Fibonacci number n in Go.", "```go\nfunc Fib(n int) int {\n\ta, b := 0, 1\n\tfor i := 0; i < n; i++ {\n\t\ta, b = b, a+b\n\t}\n\treturn a\n}\n```"),
    ("sql", "Select the ten newest users.", "```sql\nSELECT id, name, created_at FROM users ORDER BY created_at DESC LIMIT 10;\n```"),
    ("bash", "Print the number of lines of every .py file.", "```bash\nwc -l $(find . -name '*.py')\n```"),
]


def main():
    rng = random.Random(2024)
    records = []
    for lang in LANGS:
        for fn, desc, expr in BINARY + UNARY:
            params = ["a", "b"] if (fn, desc, expr) in BINARY else ["x"]
            code = function(lang, fn, params, expr["c"], expr["py"], fn == "is_even")
            for k in range(4):
                ask = ASKS[(k + len(fn)) % len(ASKS)].format(lang=lang.title() if lang != "javascript" else "JavaScript",
                                                             fn=fn if lang in ("python", "rust", "c", "ruby") else camel(fn),
                                                             desc=desc)
                fence = {"python": "python", "rust": "rust", "go": "go", "javascript": "javascript",
                         "typescript": "typescript", "c": "c", "java": "java", "ruby": "ruby"}[lang]
                response = f"{INTROS[k]}\n\n```{fence}\n{code}\n```"
                records.append({"instruction": ask, "response": response, "language": lang})
    for lang, ask, response in EXTRA:
        records.append({"instruction": ask, "response": response, "language": lang})
    rng.shuffle(records)
    for i, r in enumerate(records):
        r["id"] = f"sample-{i:04d}"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"id": r["id"], "language": r["language"], "instruction": r["instruction"],
                                "response": r["response"]}, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
