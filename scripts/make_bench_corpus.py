#!/usr/bin/env python3
"""Writes a synthetic SynCode-style JSONL corpus for the data-pipeline benchmarks and the memory
check, built from the project's sample shard with varied, longer answers.

    python3 scripts/make_bench_corpus.py OUT.jsonl --records 40000      # ~ 20 MB
    python3 scripts/make_bench_corpus.py OUT.jsonl --bytes 2200000000   # >= 2 GB
"""

import argparse
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "data", "sample", "syncode-sample.jsonl")
WORDS = ("value index buffer result parser token stream error config handler request response cache "
         "thread lock queue vector matrix string number graph node edge tree") .split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--records", type=int, default=0)
    ap.add_argument("--bytes", type=int, default=0)
    args = ap.parse_args()
    base = [json.loads(l) for l in open(SAMPLE, encoding="utf-8")]
    rng = random.Random(7)
    written, n = 0, 0
    with open(args.out, "w", encoding="utf-8") as f:
        while (args.records and n < args.records) or (args.bytes and written < args.bytes):
            r = dict(base[n % len(base)])
            extra = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200)))
            r["id"] = f"bench-{n}"
            r["response"] = r["response"] + "\n\nNotes: " + extra
            line = json.dumps(r, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode())
            n += 1
    print(f"wrote {n} records, {written / 1e6:.1f} MB to {args.out}")


if __name__ == "__main__":
    main()
