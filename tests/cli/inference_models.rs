//! The model of an inference command, found wherever a user points: a run directory (its
//! `latest` checkpoint), a step directory, a model without a tokenizer plus `--tokenizer`; a
//! path that does not exist says so. Output piped into `head` ends quietly, and `generate` never
//! runs past the model's context.

use crate::common::fixtures;
use std::path::Path;
use std::process::Command;

fn generate(model: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["generate", "--model"])
        .arg(model)
        .args(["--prompt", "hi", "--max-new-tokens", "3", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn a_run_directory_a_bare_model_with_tokenizer_and_a_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("loss_model");
    let direct = generate(&model, &[]);
    assert!(direct.status.success(), "{}", String::from_utf8_lossy(&direct.stderr));

    // A run directory: its `latest` names the step directory.
    let run = tmp.path().join("run");
    copy_dir(&model, &run.join("step-00000007"), &[]);
    std::fs::write(run.join("latest"), "step-00000007\n").unwrap();
    let via_run = generate(&run, &[]);
    assert!(via_run.status.success(), "{}", String::from_utf8_lossy(&via_run.stderr));
    assert_eq!(
        via_run.stdout, direct.stdout,
        "the run directory is its latest checkpoint"
    );

    // A model without tokenizer files (as `syncoder init` writes): told to pass --tokenizer.
    let bare = tmp.path().join("bare");
    copy_dir(&model, &bare, &["tokenizer.json", "tokenizer_config.json"]);
    let out = generate(&bare, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tokenizer"), "{err}");
    let out = generate(&bare, &["--tokenizer", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, direct.stdout);

    // A path that does not exist, and a directory that is no model.
    let out = generate(&tmp.path().join("nope"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && !err.contains("tokenizer.json"),
        "{err}"
    );
    let out = generate(tmp.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither a model directory"), "{err}");

    // A Hub id goes to the Hugging Face cache (here offline and empty: a clear error).
    let home = tmp.path().join("hf-home");
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args([
            "generate",
            "--model",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            "--prompt",
            "hi",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Hugging Face") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    // `loss` takes the run directory too.
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["loss", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(model.join("data.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn inference_on_a_device_this_build_lacks_or_in_a_cpu_dtype_it_cannot_run_is_refused() {
    let model = fixtures().join("loss_model");
    let out = generate(&model, &["--dtype", "bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("CPU inference runs in f32"),
        "{err}"
    );
    if cfg!(not(feature = "cuda")) {
        let out = generate(&model, &["--device", "cuda"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--features cuda"), "{err}");
    }
}

#[test]
fn output_piped_into_head_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    // 5,000 bad records: far more report lines than a pipe holds.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": 3}\n".repeat(5000)).unwrap();
    let script = format!(
        "'{}' data validate '{}' | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_syncoder"),
        bad.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    // Ended by SIGPIPE (128 + 13) like any Unix tool, not a panic (101).
    assert!(stdout.contains("status=141"), "{stdout}{stderr}");
}

#[test]
fn generate_refuses_more_new_tokens_than_the_context_leaves() {
    let model = fixtures().join("loss_model");
    // A number that would once have sized a 128 TB cache: refused, naming what fits.
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["generate", "--model"])
        .arg(&model)
        .args(["--prompt", "hi", "--max-new-tokens", "1000000000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("context of 1024 tokens") && err.contains("--max-new-tokens"),
        "{err}"
    );
    // What the context leaves is accepted.
    let fits: usize = err
        .split("use --max-new-tokens ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["generate", "--model"])
        .arg(&model)
        .args(["--prompt", "hi", "--max-new-tokens", &fits.to_string(), "--json"])
        .output()
        .unwrap();
    crate::common::ok(&out);
}
