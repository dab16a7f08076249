//! Crash safety and exact resume of `syncoder train` on CPU: runs killed with SIGKILL at chosen
//! points (mid-accumulation, during a checkpoint write, right after one) or at an arbitrary
//! moment, or stopped with SIGTERM, resume from `latest`; the SIGKILLed ones produce the per-step losses
//! and final weights of the uninterrupted run bit for bit. Also: the non-finite guards, refused
//! resumes with a changed recipe, and `ckpt inspect`.

use crate::common::ok;
use crate::tiny_run::latest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const STEPS: u64 = 12;

/// A tiny run: 12 steps of 2 micro-batches of 2 rows × 64 tokens, checkpoints every 3 steps.
fn config(out: &Path) -> PathBuf {
    crate::tiny_run::write_config(out, "base", 4, STEPS, "")
}

fn train(cfg: &Path, run: &str, extra: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncoder"));
    cmd.args(["train", "--config"])
        .arg(cfg)
        .args(["--run-name", run])
        .args(extra);
    if let Some(f) = fault {
        cmd.env("SYNCODER_FAULT", f);
    }
    cmd.output().unwrap()
}

/// A run in the background (stdout discarded).
fn spawn(cfg: &Path, run: &str, extra: &[&str], stderr: Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["train", "--config"])
        .arg(cfg)
        .args(["--run-name", run])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn killed(out: &Output) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "expected SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (step, loss, grad_norm, lr) per line of a run's metrics, exact as written.
fn losses(run_dir: &Path) -> Vec<(u64, String, String, String)> {
    crate::tiny_run::metric_lines(run_dir)
        .into_iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].to_string(),
                v["grad_norm"].to_string(),
                v["lr"].to_string(),
            )
        })
        .collect()
}

fn final_weights(run_dir: &Path) -> Vec<u8> {
    std::fs::read(run_dir.join(latest(run_dir)).join("model.safetensors")).unwrap()
}

struct Baseline {
    cfg: PathBuf,
    losses: Vec<(u64, String, String, String)>,
    weights: Vec<u8>,
}

/// The uninterrupted run, shared by the tests of this file. A static is never dropped, so its
/// directory is not a `TempDir` (which would leak ~150 MB into /tmp per test run): it is one
/// fixed directory in cargo's per-target scratch space, emptied at the start of every run.
fn baseline() -> &'static Baseline {
    static B: OnceLock<Baseline> = OnceLock::new();
    B.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resume-baseline");
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        let cfg = config(&root);
        ok(&train(&cfg, "base", &[], None));
        let dir = root.join("base");
        let losses = losses(&dir);
        assert_eq!(losses.len() as u64, STEPS);
        assert_eq!(latest(&dir), format!("step-{STEPS:08}"));
        // keep_last = 2: steps 9 and 12 remain.
        let mut steps: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("step-"))
            .collect();
        steps.sort();
        assert_eq!(steps, ["step-00000009", "step-00000012"]);
        Baseline {
            weights: final_weights(&dir),
            cfg,
            losses,
        }
    })
}

/// Kills a run at `fault`, resumes it, and checks it ends exactly like the baseline.
fn kill_and_resume(run: &str, fault: &str, expect_latest: &str) {
    let b = baseline();
    let dir = b.cfg.parent().unwrap().join(run);
    killed(&train(&b.cfg, run, &[], Some(fault)));
    assert_eq!(latest(&dir), expect_latest, "{fault}");
    ok(&train(&b.cfg, run, &["--resume", "latest"], None));
    assert_eq!(
        losses(&dir),
        b.losses,
        "{fault}: per-step losses differ from the uninterrupted run"
    );
    assert!(final_weights(&dir) == b.weights, "{fault}: final weights differ");
}

#[test]
fn resume_after_sigkill_mid_accumulation_is_exact() {
    kill_and_resume("mid-accum", "kill-at-micro:8:1", "step-00000006");
}

#[test]
fn resume_after_sigkill_right_after_a_checkpoint_is_exact() {
    kill_and_resume("after-save", "kill-after-save:6", "step-00000006");
}

#[test]
fn sigkill_during_a_save_leaves_the_previous_checkpoint_loadable() {
    let b = baseline();
    let run = "in-save";
    let dir = b.cfg.parent().unwrap().join(run);
    killed(&train(&b.cfg, run, &[], Some("kill-in-save:9")));
    // The half-written step 9 exists only under its temporary name; latest still names step 6,
    // which loads as a model and as a training checkpoint.
    assert!(dir.join(".tmp-step-00000009").is_dir());
    assert!(!dir.join("step-00000009").exists());
    assert_eq!(latest(&dir), "step-00000006");
    let step6 = dir.join("step-00000006");
    syncoder::model::Qwen2::load(&step6, candle_core::DType::F32, &candle_core::Device::Cpu, false).unwrap();
    let state = syncoder::train::checkpoint::read_state(&step6).unwrap();
    assert_eq!(state.step, 6);
    ok(&train(&b.cfg, run, &["--resume", "latest"], None));
    assert!(
        !dir.join(".tmp-step-00000009").exists(),
        "the stale temporary directory is cleaned up"
    );
    assert_eq!(losses(&dir), b.losses);
    assert!(final_weights(&dir) == b.weights);
}

#[test]
fn resume_after_sigkill_at_an_arbitrary_moment_is_exact() {
    let b = baseline();
    let run = "anytime";
    let dir = b.cfg.parent().unwrap().join(run);
    let mut child = spawn(&b.cfg, run, &[], Stdio::null());
    // Kill once the run is past its first checkpoint, wherever it is then.
    let t0 = Instant::now();
    while !dir.join("latest").exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    ok(&train(&b.cfg, run, &["--resume", "latest"], None));
    assert_eq!(losses(&dir), b.losses, "killed with {status:?}");
    assert!(final_weights(&dir) == b.weights);
}

#[test]
fn sigterm_saves_a_checkpoint_and_the_run_resumes() {
    let b = baseline();
    let run = "sigterm";
    let dir = b.cfg.parent().unwrap().join(run);
    // A longer run, so the signal surely arrives mid-run.
    let long = ["--set", "stage.0.steps=300"];
    let child = spawn(&b.cfg, run, &long, Stdio::piped());
    let t0 = Instant::now();
    let metrics = dir.join("metrics.jsonl");
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 4
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A requested stop is not a failure: no `error:`, and the shell's code for SIGTERM.
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by SIGTERM") && !err.contains("error:"), "{err}");
    let saved = latest(&dir);
    let state = syncoder::train::checkpoint::read_state(&dir.join(&saved)).unwrap();
    assert!(state.step < 300 && !state.complete);
    assert_eq!(
        losses(&dir).len() as u64,
        state.step,
        "the checkpoint is the last finished step"
    );
    assert!(dir.join("loss.svg").is_file(), "loss.svg is drawn at every checkpoint");
    // The printed command continues the run verbatim (the `--set` it was started with included).
    let hint = err
        .lines()
        .find_map(|l| l.split_once("continue with: ").map(|(_, c)| c.to_string()))
        .unwrap_or_else(|| panic!("no resume command: {err}"));
    let words = shlex::split(&hint).unwrap();
    assert_eq!(words[0], "syncoder", "{hint}");
    ok(&Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(&words[1..])
        .output()
        .unwrap());
    let steps: Vec<u64> = losses(&dir).iter().map(|l| l.0).collect();
    assert_eq!(steps, (1..=300).collect::<Vec<u64>>());
}

#[test]
fn resuming_another_runs_checkpoint_continues_that_run_and_never_overwrites_a_finished_one() {
    let b = baseline();
    let out_dir = b.cfg.parent().unwrap();
    let base = out_dir.join("base");
    let before = std::fs::read(base.join("metrics.jsonl")).unwrap();
    killed(&train(&b.cfg, "other", &[], Some("kill-after-save:3")));
    let step3 = out_dir.join("other/step-00000003");
    // No --run-name: the config says run.name = "base" (a complete run), but the checkpoint
    // belongs to "other", which is where the run continues.
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["train", "--config"])
        .arg(&b.cfg)
        .arg("--resume")
        .arg(&step3)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(latest(&out_dir.join("other")), format!("step-{STEPS:08}"));
    assert_eq!(losses(&out_dir.join("other")), b.losses);
    // Naming a directory that holds another run's checkpoints is refused without --force.
    let other = out_dir.join("other");
    let out = train(&b.cfg, "base", &["--resume", other.to_str().unwrap()], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    assert!(
        std::fs::read(base.join("metrics.jsonl")).unwrap() == before,
        "base was rewritten"
    );
    assert!(final_weights(&base) == b.weights);
}

#[test]
fn a_failed_start_leaves_no_run_directory() {
    let b = baseline();
    let out_dir = b.cfg.parent().unwrap();
    let out = train(&b.cfg, "nosuch", &["--resume", "latest"], None);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!out.status.success());
    let out = train(
        &b.cfg,
        "nomodel",
        &["--set", "model.init_config=/nonexistent.json"],
        None,
    );
    assert!(!out.status.success());
    let out = train(
        &b.cfg,
        "nodata",
        &["--set", "stage.0.data=[\"/nonexistent.jsonl\"]"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stage[0].data"), "{err}");
    for run in ["nosuch", "nomodel", "nodata"] {
        assert!(!out_dir.join(run).exists(), "{run}: a failed start left its directory");
    }
}

#[test]
fn dry_run_prints_the_plan_and_creates_nothing() {
    let b = baseline();
    let out_dir = b.cfg.parent().unwrap();
    let out = train(&b.cfg, "dry", &["--dry-run"], None);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("451,712 parameters"), "{text}");
    // 4 rows of 64 tokens per step, 12 steps.
    assert!(text.contains("256 tokens per step"), "{text}");
    assert!(text.contains("planned     12 optimizer steps, 3,072 tokens"), "{text}");
    assert!(text.contains("GiB peak per process"), "the memory estimate: {text}");
    assert!(text.contains("name = \"dry\""), "the resolved config: {text}");
    assert!(!out_dir.join("dry").exists(), "--dry-run created the run directory");
    // Mistakes a dry run exists to catch are caught.
    let out = train(&b.cfg, "dry", &["--dry-run", "--set", "batch.global_rows=3"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch.global_rows"));
    assert!(!out_dir.join("dry").exists());
}

#[test]
fn resuming_with_a_changed_recipe_is_refused_unless_forced() {
    let b = baseline();
    let run = "changed";
    let dir = b.cfg.parent().unwrap().join(run);
    killed(&train(&b.cfg, run, &[], Some("kill-after-save:3")));
    let out = train(&b.cfg, run, &["--resume", "latest", "--set", "optim.lr=1e-3"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("optim.lr: 0.003 → 0.001") && err.contains("--force"),
        "{err}"
    );
    // Keys that do not change the numbers may change.
    let out = train(
        &b.cfg,
        run,
        &["--resume", "latest", "--set", "checkpoint.every_steps=4"],
        Some("kill-after-save:4"),
    );
    killed(&out);
    ok(&train(
        &b.cfg,
        run,
        &["--resume", "latest", "--set", "optim.lr=1e-3", "--force"],
        None,
    ));
    assert_eq!(losses(&dir).len() as u64, STEPS);
    // A fresh start over existing checkpoints is refused too.
    let out = train(&b.cfg, run, &[], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume latest"));
}

#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let b = baseline();
    // One poisoned step: skipped and counted, the run goes on.
    let dir = b.cfg.parent().unwrap().join("one-nan");
    ok(&train(&b.cfg, "one-nan", &[], Some("nan-loss:5")));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, STEPS);
    assert_eq!(lines[4]["skipped"], true);
    assert!(lines[4]["loss"].is_null());
    assert_eq!(lines.iter().filter(|l| l["skipped"] == true).count(), 1);
    assert_eq!(b.losses[..4], losses(&dir)[..4]);
    let state = syncoder::train::checkpoint::read_state(&dir.join(latest(&dir))).unwrap();
    assert_eq!((state.skipped_steps, state.optimizer_updates), (1, STEPS - 1));

    // Five in a row (the default limit): the run stops with the last good state saved.
    let dir = b.cfg.parent().unwrap().join("five-nan");
    let out = train(
        &b.cfg,
        "five-nan",
        &[],
        Some("nan-loss:4,nan-loss:5,nan-loss:6,nan-loss:7,nan-loss:8"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 steps in a row had a non-finite loss"), "{err}");
    let saved = dir.join(latest(&dir));
    let state = syncoder::train::checkpoint::read_state(&saved).unwrap();
    assert_eq!((state.step, state.optimizer_updates, state.skipped_steps), (8, 3, 5));
    // The saved weights are those after step 3 (the last good update).
    let step3 = b.cfg.parent().unwrap().join("after-3");
    killed(&train(&b.cfg, "after-3", &[], Some("kill-after-save:3")));
    assert!(
        std::fs::read(saved.join("model.safetensors")).unwrap()
            == std::fs::read(step3.join("step-00000003/model.safetensors")).unwrap()
    );
}

#[test]
fn ckpt_inspect_describes_a_checkpoint() {
    let b = baseline();
    let run_dir = b.cfg.parent().unwrap().join("base");
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["ckpt", "inspect"])
        .arg(&run_dir)
        .output()
        .unwrap();
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("step 12, run complete"), "{text}");
    assert!(text.contains("451712 parameters"), "{text}");
    assert!(text.contains("AdamW state, 52 tensors"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["ckpt", "inspect", "--json"])
        .arg(run_dir.join("step-00000009"))
        .output()
        .unwrap();
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trainer_state"]["step"], 9);
    assert_eq!(v["trainer_state"]["complete"], false);
    assert!(v["trainer_state"]["loader"]["stats"]["records"].as_u64().unwrap() > 0);
    // Concise by default: the references to the buffered samples only with --full.
    let concise = v["trainer_state"]["loader"]["buffer"].as_str().unwrap();
    assert!(concise.contains("samples; --full shows them"), "{concise}");
    let full = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["ckpt", "inspect", "--json", "--full"])
        .arg(run_dir.join("step-00000009"))
        .output()
        .unwrap();
    ok(&full);
    let f: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
    let refs = f["trainer_state"]["loader"]["buffer"].as_str().unwrap();
    let n = refs.split_ascii_whitespace().count();
    assert!(
        n > 0 && concise.starts_with(&format!("({n} samples")),
        "{refs} / {concise}"
    );
    assert!(full.stdout.len() > out.stdout.len());
}

/// The weight files an inference loader takes from a model directory, as vLLM's default
/// loader picks them: every `*.safetensors` at the root, narrowed to the files of
/// `model.safetensors.index.json` only when that index exists.
fn vllm_weight_files(dir: &Path) -> Vec<String> {
    let mut all: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    all.sort();
    let index = dir.join("model.safetensors.index.json");
    if let Ok(text) = std::fs::read_to_string(index) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let listed: std::collections::BTreeSet<String> = v["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        all.retain(|f| listed.contains(f));
    }
    all
}

/// The weight files transformers' `from_pretrained` takes: `model.safetensors`, else the
/// index's files.
fn transformers_weight_files(dir: &Path) -> Vec<String> {
    if dir.join("model.safetensors").is_file() {
        return vec!["model.safetensors".into()];
    }
    let text = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let set: std::collections::BTreeSet<String> = v["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    set.into_iter().collect()
}

/// Every tensor in `files` is a parameter of the model `dir/config.json` describes, and every
/// parameter is there once.
fn assert_only_model_tensors(dir: &Path, files: &[String]) {
    let cfg = syncoder::model::Qwen2Config::from_file(&dir.join("config.json")).unwrap();
    let mut expected: Vec<String> = syncoder::model::qwen2::param_specs(&cfg)
        .into_iter()
        .map(|p| p.name)
        .collect();
    expected.sort();
    let mut found: Vec<String> = vec![];
    for f in files {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        found.extend(st.names().into_iter().map(|n| n.to_string()));
    }
    found.sort();
    assert_eq!(found, expected, "{}: the loaders would read {files:?}", dir.display());
}

#[test]
fn checkpoints_hold_only_model_weights_where_vllm_and_transformers_look() {
    let b = baseline();
    let out_dir = b.cfg.parent().unwrap();
    // A single-file checkpoint and a sharded one (with an index).
    killed(&train(&b.cfg, "layout", &[], Some("kill-after-save:3")));
    killed(&train(
        &b.cfg,
        "sharded",
        &["--set", "checkpoint.max_shard_bytes=400000"],
        Some("kill-after-save:3"),
    ));
    for run in ["layout", "sharded"] {
        let step = out_dir.join(run).join("step-00000003");
        let v = vllm_weight_files(&step);
        assert_only_model_tensors(&step, &v);
        assert_only_model_tensors(&step, &transformers_weight_files(&step));
        assert!(step.join("training_state/optimizer.safetensors").is_file());
    }
    assert!(vllm_weight_files(&out_dir.join("sharded/step-00000003")).len() > 1);

    // `ckpt export`: the model alone, in a new directory.
    let exported = out_dir.join("exported");
    ok(&Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["ckpt", "export"])
        .arg(out_dir.join("layout"))
        .arg("--out")
        .arg(&exported)
        .output()
        .unwrap());
    let mut names: Vec<String> = std::fs::read_dir(&exported)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    assert!(
        std::fs::read(exported.join("model.safetensors")).unwrap()
            == std::fs::read(out_dir.join("layout/step-00000003/model.safetensors")).unwrap()
    );
    // Not over an existing, non-empty directory.
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["ckpt", "export"])
        .arg(out_dir.join("layout"))
        .arg("--out")
        .arg(&exported)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn checkpoints_of_the_earlier_layout_still_resume_exactly() {
    let b = baseline();
    let run = "old-layout";
    let dir = b.cfg.parent().unwrap().join(run);
    killed(&train(&b.cfg, run, &[], Some("kill-after-save:6")));
    // Optimizer and trainer state at the step directory's root, as syncoder wrote them before.
    let step = dir.join("step-00000006");
    for f in ["optimizer.safetensors", "trainer_state.json"] {
        std::fs::rename(step.join("training_state").join(f), step.join(f)).unwrap();
    }
    std::fs::remove_dir(step.join("training_state")).unwrap();
    ok(&train(&b.cfg, run, &["--resume", "latest"], None));
    assert_eq!(losses(&dir), b.losses);
    assert!(final_weights(&dir) == b.weights);
}

/// The events of a TensorBoard event file, every record's framing and checksums verified.
fn read_events(path: &Path) -> Vec<syncoder::train::tensorboard::Event> {
    use prost::Message;
    use syncoder::train::tensorboard::{masked_crc, Event};
    let bytes = std::fs::read(path).unwrap();
    let (mut out, mut at) = (vec![], 0);
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(crc, masked_crc(len_bytes), "length checksum");
        let data = &bytes[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
        assert_eq!(crc, masked_crc(data), "data checksum");
        out.push(Event::decode(data).unwrap());
        at += 16 + len;
    }
    out
}

#[test]
fn tensorboard_events_carry_each_steps_scalars_and_a_resume_marks_its_step() {
    let b = baseline();
    let run = "tb";
    let dir = b.cfg.parent().unwrap().join(run);
    let tb = ["--set", "log.tensorboard=true"];
    killed(&train(&b.cfg, run, &tb, Some("kill-after-save:6")));
    let mut args = vec!["--resume", "latest"];
    args.extend(tb);
    ok(&train(&b.cfg, run, &args, None));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tensorboard"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let (mut first, mut second) = (read_events(&files[0]), read_events(&files[1]));
    if first.iter().any(|e| e.session_log.is_some()) {
        std::mem::swap(&mut first, &mut second);
    }
    assert_eq!(first[0].file_version.as_deref(), Some("brain.Event:2"));
    // The resumed process marks step 6: TensorBoard drops the first file's later steps.
    let start = second[1].session_log.as_ref().expect("a SessionLog after the version");
    assert_eq!((start.status, second[1].step), (1, 6));
    // Every step's loss, as metrics.jsonl has it (rounded to f32), in the events.
    let loss_at = |events: &[syncoder::train::tensorboard::Event], step: i64| {
        events.iter().filter(|e| e.step == step).find_map(|e| {
            e.summary
                .as_ref()?
                .value
                .iter()
                .find(|v| v.tag == "train/loss")?
                .simple_value
        })
    };
    for (step, loss, _, _) in losses(&dir) {
        let events = if step <= 6 { &first } else { &second };
        let want = loss.parse::<f64>().unwrap() as f32;
        assert_eq!(loss_at(events, step as i64), Some(want), "step {step}");
    }
}
