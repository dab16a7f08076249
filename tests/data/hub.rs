//! `hf://datasets/...` sources, without network: offline with an empty cache gives a clear error;
//! offline with the dataset in the Hugging Face cache reads it from there.

use std::process::Command;
use syncoder::data::hub::HubSource;

fn validate(src: &str, cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "validate", src])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cache)
        .env("HF_HUB_CACHE", cache.join("hub"))
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn offline_without_cache_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = validate("hf://datasets/acme/code-sft", tmp.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acme/code-sft") && err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn offline_reads_the_cached_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("hub/datasets--acme--code-sft");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit).join("data");
    std::fs::create_dir_all(&snap).unwrap();
    let rec = r#"{"instruction": "q", "response": "a"}"#;
    std::fs::write(snap.join("train-0.jsonl"), format!("{rec}\n{rec}\n")).unwrap();
    std::fs::write(snap.join("test-0.jsonl"), format!("{rec}\n")).unwrap();
    let out = validate("hf://datasets/acme/code-sft", tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 records in 2 files, 0 bad"));
    let out = validate("hf://datasets/acme/code-sft/data/train-*.jsonl", tmp.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 records in 1 files, 0 bad"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // `@REVISION` reads that revision's snapshot (the cache maps the name to its commit).
    let older = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(repo.join("refs/v1"), older).unwrap();
    let snap = repo.join("snapshots").join(older).join("data");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("train-0.jsonl"), format!("{rec}\n")).unwrap();
    let out = validate("hf://datasets/acme/code-sft@v1", tmp.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 records in 1 files, 0 bad"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = validate("hf://datasets/acme/code-sft@v2", tmp.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at revision v2"));
}

#[test]
fn hub_sources_parse() {
    let s = HubSource::parse("hf://datasets/CSJianYang/CodeArena/CodeArena.jsonl").unwrap();
    assert_eq!(
        (s.owner.as_str(), s.name.as_str(), s.pattern.as_deref()),
        ("CSJianYang", "CodeArena", Some("CodeArena.jsonl"))
    );
    assert_eq!(HubSource::parse("hf://datasets/a/b").unwrap().pattern, None);
    assert!(HubSource::parse("hf://datasets/onlyowner").is_err());
    assert!(HubSource::parse("hf://models/a/b").is_err());
    let s = HubSource::parse("hf://datasets/CSJianYang/CodeArena@05a5f4c/CodeArena.jsonl").unwrap();
    assert_eq!(
        (s.name.as_str(), s.revision.as_deref(), s.pattern.as_deref()),
        ("CodeArena", Some("05a5f4c"), Some("CodeArena.jsonl"))
    );
    assert!(HubSource::parse("hf://datasets/a/b@").is_err());
}
