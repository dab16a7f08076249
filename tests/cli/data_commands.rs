//! `syncoder data inspect` and `syncoder data decontam` on the project's sample shard.

use crate::common::repo;
use std::process::Command;

fn syncoder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspect_counts_tokens_and_languages() {
    let out = syncoder(&[
        "data",
        "inspect",
        "data/sample",
        "--tokenizer",
        "data/sample/tokenizer",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = r["records"].as_u64().unwrap();
    assert_eq!(r["samples"].as_u64().unwrap(), records);
    let (tokens, sup) = (r["tokens"].as_u64().unwrap(), r["supervised_tokens"].as_u64().unwrap());
    assert!(sup > 0 && sup < tokens);
    assert!(r["length_p50"].as_u64().unwrap() <= r["length_p90"].as_u64().unwrap());
    assert!(r["length_p99"].as_u64().unwrap() <= r["length_max"].as_u64().unwrap());
    let langs = r["languages"].as_object().unwrap();
    assert_eq!(langs.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), records);
    assert_eq!(langs["rust"], 42);

    // Too-long samples are dropped and counted under --overflow drop.
    let out = syncoder(&[
        "data",
        "inspect",
        "data/sample",
        "--tokenizer",
        "data/sample/tokenizer",
        "--json",
        "--max-seq-len",
        "75",
        "--overflow",
        "drop",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["dropped_too_long"].as_u64().unwrap() > 0);
    assert_eq!(
        r["samples"].as_u64().unwrap() + r["dropped_too_long"].as_u64().unwrap(),
        records
    );
}

#[test]
fn decontam_drops_exactly_the_overlapping_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("train.jsonl");
    let rows = [
        r#"{"id": "clean", "instruction": "Write a function that adds two numbers", "response": "def add(a, b): return a + b"}"#,
        r#"{"id": "leak", "instruction": "Please solve: GIVEN an array of integers nums and an integer target, return indices of the two numbers", "response": "Use a hash map."}"#,
        r#"{"id": "nine", "instruction": "an array of integers nums and an integer target,", "response": "Only nine words match."}"#,
    ];
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let bench = tmp.path().join("bench.jsonl");
    std::fs::write(
        &bench,
        r#"{"id": 1, "messages": [{"role": "user", "content": "Given an array of integers nums and an integer target, return indices of the two numbers such that they add up to target."}]}"#.to_string() + "\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("clean");
    let out = syncoder(&[
        "data",
        "decontam",
        data.to_str().unwrap(),
        "--against",
        bench.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept 2, dropped 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let kept = std::fs::read_to_string(out_dir.join("train.jsonl")).unwrap();
    assert!(kept.contains("\"clean\"") && kept.contains("\"nine\"") && !kept.contains("\"leak\""));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("dropped.txt")).unwrap().trim(),
        "leak"
    );

    std::fs::write(&bench, "{\"id\": 1}\n").unwrap();
    let out = syncoder(&[
        "data",
        "decontam",
        data.to_str().unwrap(),
        "--against",
        bench.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bench.jsonl:1"));
}
