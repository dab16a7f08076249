//! The command line's manners: `--version` names the commit and features; a `--set` mistake
//! is blamed on the `--set`, in words, with the closest key; `--set key=` unsets a key.

use crate::common::{repo, syncoder_in_repo as syncoder};
use std::process::Command;

#[test]
fn version_names_the_commit_and_the_features() {
    let out = syncoder(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("syncoder {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("features: "), "{text}");
    let head = Command::new("git")
        .current_dir(repo())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(head) = head {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(text.contains(&head), "{text} (HEAD {head})");
    }
}

#[test]
fn set_mistakes_are_the_sets_and_an_empty_set_unsets() {
    let out = syncoder(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        "optim.learning_rate=1e-4",
        "--dry-run",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.starts_with("error: --set optim.learning_rate=1e-4: key `optim.learning_rate`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `lr`?") && !err.contains("smoke.toml"),
        "{err}"
    );
    let out = syncoder(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        "data.seq_len=-3",
        "--dry-run",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected a whole number ≥ 0") && !err.contains("usize"),
        "{err}"
    );
    // The smoke run starts from `model.init_config`; unsetting it and setting `model.path`
    // instead trains from a local model.
    // Its own output dir: the repository's `checkpoints/smoke` may hold the README's smoke run.
    let model = repo().join("tests/fixtures/loss_model");
    let out_dir = tempfile::tempdir().unwrap();
    let out = syncoder(&[
        "train",
        "--config",
        "configs/smoke.toml",
        "--set",
        "model.init_config=",
        "--set",
        &format!("model.path={}", model.display()),
        "--set",
        &format!("run.output_dir={}", out_dir.path().display()),
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("init_config") && text.contains("loss_model"), "{text}");
}
