#!/usr/bin/env python3
"""Writes tests/fixtures/exec_eval/: a few problems of our own in each execution benchmark's
real schema (HumanEval, HumanEval+, MBPP as Google published it, MBPP+, MultiPL-E), and samples
files of known-correct and known-wrong solutions whose pass@1 the tests count by hand.

The problems are the project's own (not copied from the benchmarks); only the field names and
layout follow each dataset's schema. Run from the repository root:

    python3 scripts/make_exec_eval_fixtures.py
"""
import json
import os

OUT = "tests/fixtures/exec_eval"


def write(name, rows):
    with open(os.path.join(OUT, name), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def humaneval():
    # openai/openai_humaneval: task_id, prompt, canonical_solution, test, entry_point.
    probs = [
        {
            "task_id": "Fixture/0",
            "prompt": 'def add_pair(a: int, b: int) -> int:\n    """Return the sum of a and b.\n    >>> add_pair(2, 3)\n    5\n    """\n',
            "canonical_solution": "    return a + b\n",
            "test": "\n\nMETADATA = {'author': 'syncoder', 'dataset': 'test'}\n\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n    assert candidate(0, 0) == 0\n",
            "entry_point": "add_pair",
        },
        {
            "task_id": "Fixture/1",
            "prompt": 'def count_vowels(s: str) -> int:\n    """Count the vowels (a, e, i, o, u; either case) in s.\n    >>> count_vowels("Hello")\n    2\n    """\n',
            "canonical_solution": "    return sum(1 for c in s.lower() if c in 'aeiou')\n",
            "test": "\n\ndef check(candidate):\n    assert candidate('Hello') == 2\n    assert candidate('AEIOU') == 5\n    assert candidate('xyz') == 0\n",
            "entry_point": "count_vowels",
        },
        {
            "task_id": "Fixture/2",
            "prompt": 'from typing import List\n\n\ndef running_max(xs: List[int]) -> List[int]:\n    """The largest element seen so far at each position.\n    >>> running_max([1, 3, 2])\n    [1, 3, 3]\n    """\n',
            "canonical_solution": "    out, m = [], None\n    for x in xs:\n        m = x if m is None else max(m, x)\n        out.append(m)\n    return out\n",
            "test": "\n\ndef check(candidate):\n    assert candidate([1, 3, 2]) == [1, 3, 3]\n    assert candidate([]) == []\n    assert candidate([5, 4]) == [5, 5]\n",
            "entry_point": "running_max",
        },
        {
            "task_id": "Fixture/3",
            "prompt": 'def is_even(n: int) -> bool:\n    """Whether n is even.\n    >>> is_even(4)\n    True\n    """\n',
            "canonical_solution": "    return n % 2 == 0\n",
            "test": "\n\ndef check(candidate):\n    assert candidate(4) is True\n    assert candidate(7) is False\n",
            "entry_point": "is_even",
        },
    ]
    write("humaneval.jsonl", probs)
    # HumanEval+ (evalplus/humanevalplus): the same fields; its `test` holds the base and the
    # extra inputs together. Here: more inputs, one of which the "almost" solution fails.
    plus = [dict(p) for p in probs]
    plus[0]["test"] += "    assert candidate(10**12, 10**12) == 2 * 10**12\n"
    plus[1]["test"] += "    assert candidate('') == 0\n    assert candidate('yY') == 0\n"
    plus[2]["test"] += "    assert candidate([-3, -5, -1]) == [-3, -3, -1]\n"
    plus[3]["test"] += "    assert candidate(0) is True\n    assert candidate(-3) is False\n"
    write("humanevalplus.jsonl", plus)
    # Samples: hand count on HumanEval = 2 of 4 pass (0 and 2); on HumanEval+ = 1 of 4 (0 only:
    # running_max starting from 0 fails the negative input).
    samples = [
        # passes: a completion continuing the prompt, cut at the stop token before the extra code
        {"task_id": "Fixture/0", "completion": "    return a + b\n\n\ndef unused():\n    raise SystemExit(1)\n"},
        # wrong answer: counts only lower-case vowels
        {"task_id": "Fixture/1", "solution": "def count_vowels(s):\n    return sum(1 for c in s if c in 'aeiou')\n"},
        # passes HumanEval, fails HumanEval+ (starts from 0): a chat reply with prose and a fence
        {
            "task_id": "Fixture/2",
            "reply": "Here is a solution:\n\n```python\ndef running_max(xs):\n    out, m = [], 0\n    for x in xs:\n        m = max(m, x)\n        out.append(m)\n    return out\n\nprint(running_max([1, 2]))\n```\n\nIt keeps the maximum so far.",
        },
        # crash: raises before returning
        {"task_id": "Fixture/3", "solution": "def is_even(n):\n    return [][n]\n"},
    ]
    write("humaneval_samples.jsonl", samples)


def mbpp():
    # google-research-datasets/mbpp (full): task_id, text, code, test_list, test_setup_code,
    # challenge_test_list.
    probs = [
        {
            "task_id": 9001,
            "text": "Write a function to return the product of the digits of a non-negative integer.",
            "code": "def digit_product(n):\n    p = 1\n    for c in str(n):\n        p *= int(c)\n    return p",
            "test_list": ["assert digit_product(123) == 6", "assert digit_product(0) == 0", "assert digit_product(99) == 81"],
            "test_setup_code": "",
            "challenge_test_list": [],
        },
        {
            "task_id": 9002,
            "text": "Write a function to find the second smallest distinct value in a list.",
            "code": "def second_smallest(xs):\n    return sorted(set(xs))[1]",
            "test_list": ["assert second_smallest([4, 1, 3]) == 3", "assert second_smallest([2, 2, 5, 1]) == 2"],
            "test_setup_code": "import math",
            "challenge_test_list": [],
        },
        {
            "task_id": 9003,
            "text": "Write a function that loops until a counter reaches n and returns n.",
            "code": "def reach(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i",
            "test_list": ["assert reach(5) == 5", "assert reach(0) == 0"],
            "test_setup_code": "",
            "challenge_test_list": [],
        },
    ]
    write("mbpp.jsonl", probs)
    # evalplus/mbppplus: task_id, code, prompt, source_file, test_imports, test_list, test.
    plus = [
        {
            "task_id": p["task_id"],
            "code": p["code"],
            "prompt": p["text"],
            "source_file": "syncoder fixture",
            "test_imports": ["import math"] if p["task_id"] == 9002 else [],
            "test_list": p["test_list"],
            "test": "\n".join(p["test_list"]) + "\n" + extra,
        }
        for p, extra in zip(
            probs,
            [
                "assert digit_product(1000) == 0\nassert digit_product(7) == 7\n",
                "assert second_smallest([-1, -1, 0]) == 0\n",
                "assert reach(100000) == 100000\n",
            ],
        )
    ]
    write("mbppplus.jsonl", plus)
    # Samples: on MBPP 2 of 3 pass (9001, 9002); on MBPP+ 1 of 3 (9002; 9001's "starts at 0
    # only for n == 0" passes the base asserts but not 1000; 9003 never stops: a timeout).
    samples = [
        {"task_id": 9001, "solution": "def digit_product(n):\n    if n == 0:\n        return 0\n    p = 1\n    while n:\n        p *= n % 10\n        n //= 10\n    return p if p else 1\n"},
        {"task_id": 9002, "reply": "```python\ndef second_smallest(xs):\n    s = sorted(set(xs))\n    return s[1]\n```"},
        {"task_id": 9003, "solution": "def reach(n):\n    while True:\n        pass\n"},
    ]
    write("mbpp_samples.jsonl", samples)


def multipl_e():
    # nuprl/MultiPL-E (humaneval-LANG): name, language, prompt, doctests, original,
    # prompt_terminology, tests, stop_tokens.
    common = {"doctests": "transform", "original": "syncoder fixture", "prompt_terminology": "reworded"}
    langs = {
        "sh": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "#!/bin/bash\n# Add two integers.\n#\n# $1 is an integer\n# $2 is an integer\nadd() {\n",
                    "tests": '}\n\ncandidate() {\n    add "$@"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate "2" "3") = "5" ]]\n    [[ $(candidate "-1" "1") = "0" ]]\n}\n\nrun_test\n',
                    "stop_tokens": ["\n}"],
                },
                {
                    "name": "Fixture_1_upper",
                    "prompt": "#!/bin/bash\n# Upper-case a word.\n#\n# $1 is a string\nupper() {\n",
                    "tests": '}\n\ncandidate() {\n    upper "$@"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate "abc") = "ABC" ]]\n}\n\nrun_test\n',
                    "stop_tokens": ["\n}"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "    echo $(( $1 + $2 ))\n}\n\necho not part of it\n"},
                {"task_id": "Fixture_1_upper", "completion": "    echo \"$1\"\n}\n"},
            ],
            1,
        ),
        "js": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "//Add two numbers.\nfunction add(a, b){\n",
                    "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n  assert.deepEqual(candidate(2, 3),5);\n  assert.deepEqual(candidate(-1, 1),0);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
                },
                {
                    "name": "Fixture_1_rev",
                    "prompt": "//Reverse an array.\nfunction rev(xs){\n",
                    "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = rev;\n  assert.deepEqual(candidate([1, 2, 3]),[3, 2, 1]);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
                },
                {
                    "name": "Fixture_2_half",
                    "prompt": "//Half of an even number.\nfunction half(n){\n",
                    "tests": "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = half;\n  assert.deepEqual(candidate(8),4);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "  return a + b;\n}\n\nfunction extra() { throw new Error('x'); }\n"},
                {"task_id": "Fixture_1_rev", "completion": "  return xs;\n}\n"},
                {"task_id": "Fixture_2_half", "reply": "```javascript\nfunction half(n){\n  return n / 2;\n}\n```"},
            ],
            2,
        ),
        "cpp": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "#include<assert.h>\n#include<bits/stdc++.h>\n// Add two integers.\nlong add(long a, long b) {\n",
                    "tests": "}\nint main() {\n    auto candidate = add;\n    assert(candidate((2), (3)) == (5));\n    assert(candidate((-1), (1)) == (0));\n}\n",
                    "stop_tokens": ["\n}"],
                },
                {
                    "name": "Fixture_1_sq",
                    "prompt": "#include<assert.h>\n#include<bits/stdc++.h>\n// Square an integer.\nlong sq(long x) {\n",
                    "tests": "}\nint main() {\n    auto candidate = sq;\n    assert(candidate((3)) == (9));\n}\n",
                    "stop_tokens": ["\n}"],
                },
                {
                    "name": "Fixture_2_neg",
                    "prompt": "#include<assert.h>\n#include<bits/stdc++.h>\n// Negate an integer.\nlong neg(long x) {\n",
                    "tests": "}\nint main() {\n    auto candidate = neg;\n    assert(candidate((3)) == (-3));\n}\n",
                    "stop_tokens": ["\n}"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "    return a + b;\n}\n"},
                {"task_id": "Fixture_1_sq", "completion": "    return x * x\n}\n"},  # compile error: no `;`
                {"task_id": "Fixture_2_neg", "completion": "    return x;\n}\n"},  # assertion fails
            ],
            1,
        ),
        "java": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\nimport java.security.*;\nimport java.math.*;\nimport java.io.*;\nimport java.util.stream.*;\nclass Problem {\n    // Add two integers.\n    public static long add(long a, long b) {\n",
                    "tests": "    }\n    public static void main(String[] args) {\n    assert(add((2l), (3l)) == (5l));\n    assert(add((-1l), (1l)) == (0l));\n    }\n\n}\n",
                    "stop_tokens": ["\n    }\n"],
                },
                {
                    "name": "Fixture_1_max",
                    "prompt": "import java.util.*;\nclass Problem {\n    // The larger of two integers.\n    public static long larger(long a, long b) {\n",
                    "tests": "    }\n    public static void main(String[] args) {\n    assert(larger((2l), (3l)) == (3l));\n    }\n\n}\n",
                    "stop_tokens": ["\n    }\n"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "        return a + b;\n    }\n"},
                {"task_id": "Fixture_1_max", "completion": "        return a;\n    }\n"},
            ],
            1,
        ),
        "php": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "<?php\n// Add two integers.\nfunction add($a, $b) {\n",
                    "tests": "function candidate(...$args) {\n    return add(...$args);\n}\n\nfunction test(): void {\n    if (candidate(2, 3) !== 5) { throw new Exception(\"Test failed!\"); }\n    if (candidate(-1, 1) !== 0) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
                    "stop_tokens": ["\nfunction", "\n?>", "\n//", "\n#"],
                },
                {
                    "name": "Fixture_1_twice",
                    "prompt": "<?php\n// Twice a number.\nfunction twice($x) {\n",
                    "tests": "function candidate(...$args) {\n    return twice(...$args);\n}\n\nfunction test(): void {\n    if (candidate(4) !== 8) { throw new Exception(\"Test failed!\"); }\n}\n\ntest();",
                    "stop_tokens": ["\nfunction", "\n?>", "\n//", "\n#"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "    return $a + $b;\n}\n\nfunction extra() { exit(1); }\n"},
                {"task_id": "Fixture_1_twice", "completion": "    return $x + 2;\n}\n"},
            ],
            1,
        ),
        "ts": (
            [
                {
                    "name": "Fixture_0_add",
                    "prompt": "//Add two numbers.\nfunction add(a: number, b: number): number {\n",
                    "tests": "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n  assert.deepEqual(candidate(2, 3),5);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nclass"],
                },
                {
                    "name": "Fixture_1_len",
                    "prompt": "//The length of a string.\nfunction len(s: string): number {\n",
                    "tests": "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = len;\n  assert.deepEqual(candidate(\"abc\"),3);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nclass"],
                },
                {
                    "name": "Fixture_2_neg",
                    "prompt": "//Negate a number.\nfunction neg(x: number): number {\n",
                    "tests": "declare var require: any;\nconst assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = neg;\n  assert.deepEqual(candidate(3),-3);\n}\n\ntest();",
                    "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nclass"],
                },
            ],
            [
                {"task_id": "Fixture_0_add", "completion": "  return a + b;\n}\n"},
                # a type error: tsc refuses it (a compile error)
                {"task_id": "Fixture_1_len", "completion": "  const n: string = s.length;\n  return n;\n}\n"},
                {"task_id": "Fixture_2_neg", "completion": "  return x;\n}\n"},
            ],
            1,
        ),
    }
    counts = {}
    for lang, (probs, samples, passing) in langs.items():
        rows = [dict(p, language=lang, **common) for p in probs]
        # The java fixture's first prompt imports org.javatuples like MultiPL-E's; the JDK has
        # no such package, so drop that import for the fixture to compile without the jar.
        if lang == "java":
            for r in rows:
                r["prompt"] = r["prompt"].replace("import org.javatuples.*;\n", "")
        write(f"multipl-e-{lang}.jsonl", rows)
        write(f"multipl-e-{lang}_samples.jsonl", samples)
        counts[lang] = (passing, len(probs))
    return counts


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    humaneval()
    mbpp()
    print(multipl_e())
