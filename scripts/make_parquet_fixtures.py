#!/usr/bin/env python3
"""Small Parquet shards for tests/data/shards.rs (run by hand; needs pyarrow)."""

import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "parquet")


def main():
    os.makedirs(OUT, exist_ok=True)
    msgs = [
        [{"role": "user", "content": "Reverse a list in Python?"}, {"role": "assistant", "content": "`xs[::-1]`"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rust hello world"},
         {"role": "assistant", "content": "fn main() { println!(\"hello\"); }"}],
        [{"role": "user", "content": "Bad: no answer"}],
    ]
    pq.write_table(pa.table({"id": [1, 2, 3], "language": ["python", "rust", None], "messages": msgs}),
                   os.path.join(OUT, "messages.parquet"), row_group_size=2)
    pq.write_table(pa.table({"instruction": ["Add two ints in C", "Square in Go"],
                             "response": ["int add(int a, int b) { return a + b; }", "func sq(x int) int { return x * x }"],
                             "system": [None, "You write Go."]}),
                   os.path.join(OUT, "instruction.parquet"))
    pq.write_table(pa.table({"prompt": ["a"], "completion": ["b"]}), os.path.join(OUT, "wrong_columns.parquet"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
