//! `syncoder loss` matches transformers on a tiny model with the project's sample tokenizer:
//! same mean loss over the same supervised tokens (fixture of
//! `scripts/make_template_fixtures.py`).

use std::process::Command;

#[test]
fn loss_command_matches_transformers() {
    let dir = crate::common::fixtures().join("loss_model");
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["loss", "--model"])
        .arg(&dir)
        .arg("--data")
        .arg(dir.join("data.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(got["supervised_tokens"], want["supervised_tokens"]);
    assert_eq!(got["samples"], want["samples"]);
    let (g, w) = (got["loss"].as_f64().unwrap(), want["loss"].as_f64().unwrap());
    assert!(((g - w) / w).abs() <= 1e-5, "loss {g} vs transformers {w}");
}

#[test]
fn loss_command_reports_missing_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["loss", "--model"])
        .arg(tmp.path())
        .args(["--data", "nothing.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
}
