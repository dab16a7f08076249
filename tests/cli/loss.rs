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

/// `syncoder loss` with a tokenizer directory whose template is `name` (a fixture of
/// `template_loss/`), over the multi-turn thinking conversations there.
fn loss_with_template(name: &str, extra: &[&str]) -> std::process::Output {
    let model = crate::common::fixtures().join("loss_model");
    let templates = crate::common::fixtures().join("template_loss");
    let tok = tempfile::tempdir().unwrap();
    std::fs::copy(model.join("tokenizer.json"), tok.path().join("tokenizer.json")).unwrap();
    std::fs::copy(
        templates.join(format!("{name}.tokenizer_config.json")),
        tok.path().join("tokenizer_config.json"),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["loss", "--model"])
        .arg(&model)
        .arg("--tokenizer")
        .arg(tok.path())
        .arg("--data")
        .arg(templates.join("think.jsonl"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn loss_over_generation_blocks_matches_transformers_assistant_masks() {
    let dir = crate::common::fixtures().join("template_loss");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for name in ["chatml_generation", "r1_generation"] {
        let out = loss_with_template(name, &[]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &want[name];
        assert_eq!(got["supervised_tokens"], want["supervised_tokens"], "{name}");
        assert_eq!(got["samples"], want["samples"], "{name}");
        let (g, w) = (got["loss"].as_f64().unwrap(), want["loss"].as_f64().unwrap());
        assert!(((g - w) / w).abs() <= 1e-5, "{name}: loss {g} vs transformers {w}");
    }
    // The R1-like template rewrites earlier turns: the prefix rule refuses it, naming the file
    // and line of the conversation and the policies that can train it.
    let out = loss_with_template("r1_generation", &["--mask", "prefix"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("think.jsonl:2") && err.contains("per_turn"), "{err}");
    // per_turn: one sample per assistant turn (1 + 2 + 3 + 2).
    let out = loss_with_template("r1_generation", &["--mask", "per_turn"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["samples"], 8);
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
