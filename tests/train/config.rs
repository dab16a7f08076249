//! The run config: the shipped configs parse, and unknown keys, wrong types, impossible values
//! and bad `--set` overrides are rejected with the key's path; missing files are named.

use syncoder::train::RunConfig;

const BASE: &str = r#"
[model]
init_config = "configs/models/smoke-tiny.json"
tokenizer = "data/sample/tokenizer"

[batch]
micro_batch_rows = 2
global_rows = 8

[[stage]]
name = "a"
data = ["data/sample/syncode-sample.jsonl"]
steps = 10
"#;

fn err(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    format!("{:#}", RunConfig::parse(text, &sets).expect_err("should be rejected"))
}

#[test]
fn every_shipped_config_parses() {
    let dir = crate::common::repo().join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "toml") {
            RunConfig::load(&e.path(), &[]).unwrap_or_else(|err| panic!("{}: {err:#}", e.path().display()));
            n += 1;
        }
    }
    assert!(n >= 5, "smoke + three model sizes + the paper recipe");
}

#[test]
fn the_paper_recipe_has_two_stages_and_its_hyperparameters() {
    let path = crate::common::repo().join("configs/paper-syncoder-32b.toml");
    let c = RunConfig::load(&path, &[]).unwrap();
    assert_eq!(c.stages.len(), 2);
    assert_eq!(c.global_rows().unwrap(), 2048);
    assert_eq!(c.data.seq_len, 32768);
    let s = c.stage_schedule(0);
    assert_eq!((s.lr, s.warmup_steps), (3e-4, 100));
    assert_eq!(s.kind, syncoder::train::schedule::ScheduleKind::Cosine);
    assert_eq!(c.model.hub.as_deref(), Some("Qwen/Qwen2.5-Coder-32B"));
}

#[test]
fn accumulation_follows_the_global_batch() {
    let c = RunConfig::parse(BASE, &[]).unwrap();
    assert_eq!(c.accumulation_steps().unwrap(), 4);
    let c = RunConfig::parse(BASE, &["batch.global_rows=2".into()]).unwrap();
    assert_eq!(c.accumulation_steps().unwrap(), 1);
    let text = BASE.replace("global_rows = 8", "global_tokens = 16384");
    let c = RunConfig::parse(&text, &["data.seq_len=1024".into()]).unwrap();
    assert_eq!(c.accumulation_steps().unwrap(), 8);
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let e = err(&format!("{BASE}\n[optim]\nlrr = 1e-4\n"), &[]);
    assert!(e.contains("optim") && e.contains("lrr"), "{e}");
    let e = err(&BASE.replace("steps = 10", "steps = 10\nwarmup = 3"), &[]);
    assert!(e.contains("stage[0]") && e.contains("warmup"), "{e}");
    let e = err(&format!("{BASE}\n[trainer]\nx = 1\n"), &[]);
    assert!(e.contains("trainer"), "{e}");
    let e = err(BASE, &["optim.bogus=1"]);
    assert!(e.contains("optim") && e.contains("bogus"), "{e}");
}

#[test]
fn wrong_types_are_named_with_their_path() {
    let e = err(&format!("{BASE}\n[optim]\nlr = \"fast\"\n"), &[]);
    assert!(e.contains("optim.lr"), "{e}");
    let e = err(&BASE.replace("micro_batch_rows = 2", "micro_batch_rows = -2"), &[]);
    assert!(e.contains("batch.micro_batch_rows"), "{e}");
    let e = err(BASE, &["data.overflow=wrap"]);
    assert!(e.contains("data.overflow"), "{e}");
}

#[test]
fn impossible_values_are_named_with_their_key() {
    let e = err(&BASE.replace("global_rows = 8", "global_rows = 7"), &[]);
    assert!(e.contains("batch.global_rows") && e.contains("micro_batch_rows"), "{e}");
    let e = err(
        &BASE.replace("global_rows = 8", "global_rows = 8\nglobal_tokens = 99"),
        &[],
    );
    assert!(
        e.contains("exactly one of `batch.global_rows` and `batch.global_tokens`"),
        "{e}"
    );
    let e = err(BASE, &["run.world_size=3"]);
    assert!(e.contains("batch.global_rows") && e.contains("world_size (3)"), "{e}");
    let e = err(BASE, &["optim.lr=0"]);
    assert!(e.contains("optim.lr"), "{e}");
    let e = err(BASE, &["optim.beta2=1.0"]);
    assert!(e.contains("optim.beta2"), "{e}");
    let e = err(BASE, &["data.max_seq_len=9999", "data.seq_len=512"]);
    assert!(e.contains("data.max_seq_len"), "{e}");
    let e = err(BASE, &["model.path=/x"]);
    assert!(e.contains("exactly one of `model.path`"), "{e}");
    let e = err(&BASE.replace("steps = 10", ""), &[]);
    assert!(e.contains("stage[0].steps"), "{e}");
    let e = err(BASE, &["stage.0.lr=-1"]);
    assert!(e.contains("stage[0].lr"), "{e}");
    let e = err(BASE, &["run.dtype=fp8"]);
    assert!(e.contains("run.dtype"), "{e}");
    let e = err(&BASE.replace("[[stage]]", "[[stagex]]"), &[]);
    assert!(e.contains("stagex"), "{e}");
}

#[test]
fn set_overrides_reach_nested_keys_and_arrays() {
    let c = RunConfig::parse(
        BASE,
        &["optim.lr=1e-4".into(), "stage.0.steps=99".into(), "run.name=abc".into()],
    )
    .unwrap();
    assert_eq!(c.optim.lr, 1e-4);
    assert_eq!(c.stages[0].steps, Some(99));
    assert_eq!(c.run.name, "abc");
    let e = err(BASE, &["stage.3.steps=1"]);
    assert!(e.contains("out of range"), "{e}");
    let e = err(BASE, &["optim"]);
    assert!(e.contains("section.key=value"), "{e}");
}

#[test]
fn math_hash_ignores_bookkeeping_keys() {
    let a = RunConfig::parse(BASE, &[]).unwrap();
    let b = RunConfig::parse(BASE, &["checkpoint.every_steps=7".into(), "run.name=other".into()]).unwrap();
    let c = RunConfig::parse(BASE, &["optim.weight_decay=0.1".into()]).unwrap();
    assert_eq!(a.math_hash(), b.math_hash());
    assert_ne!(a.math_hash(), c.math_hash());
}

#[test]
fn the_cli_names_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_syncoder");
    let out = std::process::Command::new(bin)
        .args(["train", "--config", "no/such.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such.toml"));
    let repo = env!("CARGO_MANIFEST_DIR");
    let cfg = tmp.path().join("c.toml");
    let text = BASE
        .replace("configs/", &format!("{repo}/configs/"))
        .replace("data/sample/tokenizer", &format!("{repo}/data/sample/tokenizer"))
        .replace("data/sample/syncode-sample.jsonl", "missing-shard.jsonl");
    std::fs::write(
        &cfg,
        format!("[run]\noutput_dir = \"{}\"\n{text}", tmp.path().display()),
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("missing-shard.jsonl") && e.contains("stage[0].data"), "{e}");
}
