//! What a finished `syncoder train` run leaves and how its settings act: stages in order with
//! their own LR schedules (one sized by counting an epoch), exact resume across a stage
//! boundary, validation loss in the metrics, `loss.svg` and `summary.json`, malformed records
//! skipped and counted (or named), a local model directory as the source with its tokenizer
//! and generation config carried into checkpoints, and a clear error for a Hub model offline.

use crate::common::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sample() -> PathBuf {
    repo().join("data/sample/syncode-sample.jsonl")
}

/// A tiny run writing into `out`; `model` and `stages` are TOML snippets.
fn config(out: &Path, model: &str, extra: &str, stages: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
name = "run"
output_dir = "{out}"
seed = 11

{model}

[data]
seq_len = 64
shuffle_buffer = 16
pack_window = 8

[optim]
lr = 2e-3

[batch]
micro_batch_rows = 2
global_rows = 4

[checkpoint]
every_steps = 3

[log]
progress = "lines"
{extra}
{stages}
"#,
        out = out.display()
    );
    std::fs::create_dir_all(out).unwrap();
    let path = out.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tiny_model() -> String {
    let r = repo();
    format!(
        "[model]\ninit_config = \"{}\"\ntokenizer = \"{}\"",
        r.join("configs/models/smoke-tiny.json").display(),
        r.join("data/sample/tokenizer").display()
    )
}

fn train(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncoder"));
    cmd.args(["train", "--config"]).arg(cfg).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Packed rows of one pass over the sample shard with the test settings.
fn rows_per_epoch() -> usize {
    use std::sync::Arc;
    use syncoder::data::loader::{Loader, LoaderConfig, OnBadRecord};
    use syncoder::data::pack::PackStrategy;
    let builder = Arc::new(
        syncoder::data::SampleBuilder::from_dir(
            &repo().join("data/sample/tokenizer"),
            64,
            syncoder::data::Overflow::Truncate,
        )
        .unwrap(),
    );
    let cfg = LoaderConfig {
        seed: 12,
        shuffle_shards: true,
        shuffle_buffer: 16,
        seq_len: 64,
        rows_per_batch: 2,
        pack: PackStrategy::BestFit { window: 8 },
        pad_id: 0,
        on_bad_record: OnBadRecord::Fail,
        max_epochs: Some(1),
    };
    let mut l = Loader::new(cfg, vec![sample()], builder).unwrap();
    let mut rows = 0;
    while let Some(b) = l.next_batch().unwrap() {
        rows += b.rows.len();
    }
    rows
}

#[test]
fn stages_run_in_order_with_their_own_schedules_and_resume_across_the_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sample().display().to_string();
    let stages = format!(
        r#"
[eval]
data = ["{s}"]
every_steps = 2
max_rows = 6

[[stage]]
name = "first"
data = ["{s}"]
steps = 3
warmup_steps = 1
schedule = "linear"

[[stage]]
name = "second"
data = ["{s}"]
epochs = 1
lr = 5e-4
schedule = "constant"
"#
    );
    let cfg = config(tmp.path(), &tiny_model(), "", &stages);
    ok(&train(&cfg, &[], &[]));
    let dir = tmp.path().join("run");
    let m = metrics(&dir);
    let second = rows_per_epoch().div_ceil(4);
    assert_eq!(m.len(), 3 + second, "stage 2 is one epoch of {second} steps");
    let stage: Vec<&str> = m.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stage[..3], ["first"; 3]);
    assert!(stage[3..].iter().all(|s| *s == "second"));
    // Stage 1: warmup to 2e-3, then linear down to the floor (0.1 × peak) at its last step.
    let lr: Vec<f64> = m.iter().map(|l| l["lr"].as_f64().unwrap()).collect();
    assert!((lr[0] - 2e-3).abs() < 1e-12 && (lr[2] - 2e-4).abs() < 1e-12, "{lr:?}");
    assert!(lr[3..].iter().all(|&x| x == 5e-4));
    assert_eq!(m.last().unwrap()["epoch"], 1);
    // Validation every 2 steps.
    for l in &m {
        let has = l.get("val_loss").is_some();
        assert_eq!(has, l["step"].as_u64().unwrap() % 2 == 0, "{l}");
    }
    let first = m[0]["loss"].as_f64().unwrap();
    let last = m.last().unwrap()["loss"].as_f64().unwrap();
    assert!(last < first, "{first} -> {last}");
    // loss.svg and summary.json.
    let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation loss"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], m.len());
    assert!(summary["val_loss"].as_f64().unwrap() > 0.0);
    let run_toml = std::fs::read_to_string(dir.join("run.toml")).unwrap();
    assert!(run_toml.contains("name = \"second\""));

    // Killed right after the checkpoint at the end of stage 1: the resume starts stage 2 and
    // ends like the run above.
    let cfg2 = config(&tmp.path().join("b"), &tiny_model(), "", &stages);
    let out = train(&cfg2, &[], &[("SYNCODER_FAULT", "kill-after-save:3")]);
    assert!(!out.status.success());
    ok(&train(&cfg2, &["--resume", "latest"], &[]));
    let m2 = metrics(&tmp.path().join("b/run"));
    let key = |v: &Vec<serde_json::Value>| -> Vec<String> {
        v.iter()
            .map(|l| format!("{} {} {} {}", l["step"], l["loss"], l["lr"], l["grad_norm"]))
            .collect()
    };
    assert_eq!(key(&m2), key(&m));
    // A resume of the finished run changes nothing and says so.
    let out = train(&cfg2, &["--resume", "latest"], &[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already complete"));
    assert_eq!(metrics(&tmp.path().join("b/run")).len(), m.len());
}

/// An epoch stage over prepared shards is sized from their lengths (no pass over the data): the
/// plan shows its steps before the run, and the run takes exactly that many, ending with its
/// epoch.
#[test]
fn an_epoch_over_prepared_shards_is_sized_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let prepared = tmp.path().join("prepared");
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["data", "prepare", "--max-seq-len", "64", "--tokenizer"])
        .arg(repo().join("data/sample/tokenizer"))
        .arg("--out")
        .arg(&prepared)
        .arg(sample())
        .output()
        .unwrap();
    ok(&out);
    let stages = format!(
        "[[stage]]\nname = \"sft\"\ndata = [\"{}\"]\nepochs = 1\n",
        prepared.display()
    );
    let cfg = config(tmp.path(), &tiny_model(), "", &stages);
    let out = train(&cfg, &["--dry-run"], &[]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("stage sft"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("from the prepared shards' lengths"), "{line}");
    let steps: usize = line
        .split(" steps")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(text.contains(&format!("planned     {steps} optimizer steps")), "{text}");
    ok(&train(&cfg, &[], &[]));
    let m = metrics(&tmp.path().join("run"));
    assert_eq!(m.len(), steps, "{line}");
    assert_eq!(m.last().unwrap()["epoch"], 1, "the data ends with the schedule");
}

#[test]
fn malformed_records_are_skipped_and_counted_or_named() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("mixed.jsonl");
    let good: Vec<String> = std::fs::read_to_string(sample())
        .unwrap()
        .lines()
        .take(60)
        .map(String::from)
        .collect();
    let mut lines = good[..20].to_vec();
    lines.push("{not json".into());
    lines.extend_from_slice(&good[20..40]);
    lines.push(r#"{"instruction": 5, "response": "x"}"#.into());
    lines.push(r#"{"messages": []}"#.into());
    lines.extend_from_slice(&good[40..]);
    std::fs::write(&shard, lines.join("\n") + "\n").unwrap();
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nepochs = 1\n",
        shard.display()
    );
    let cfg = config(tmp.path(), &tiny_model(), "", &stages);
    let out = train(&cfg, &["--set", "data.on_bad_record=skip"], &[]);
    ok(&out);
    let m = metrics(&tmp.path().join("run"));
    assert_eq!(m.last().unwrap()["bad_records"], 3);
    let out = train(&cfg, &["--run-name", "strict"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mixed.jsonl:21"), "{err}");
}

#[test]
fn a_local_model_directory_trains_and_its_files_reach_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("tests/fixtures/loss_model");
    let model = format!("[model]\npath = \"{}\"", src.display());
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nsteps = 3\n",
        sample().display()
    );
    let cfg = config(tmp.path(), &model, "", &stages);
    ok(&train(&cfg, &[], &[]));
    let step = tmp.path().join("run/step-00000003");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(step.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read(step.join("tokenizer.json")).unwrap(),
        std::fs::read(src.join("tokenizer.json")).unwrap()
    );
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step.join("generation_config.json")).unwrap()).unwrap();
    assert_eq!(gen["use_cache"], true, "the source's generation config is kept");
    assert_eq!(
        gen["eos_token_id"],
        serde_json::json!([2, 0]),
        "<|im_end|> and <|endoftext|>"
    );
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    // The checkpoint is a model `syncoder loss` loads, and training moved it.
    let before = syncoder::model::Qwen2::load(&src, candle_core::DType::F32, &candle_core::Device::Cpu, false).unwrap();
    let after = syncoder::model::Qwen2::load(&step, candle_core::DType::F32, &candle_core::Device::Cpu, false).unwrap();
    let e = crate::common::rel_err(&after.parameters()[1].1, &before.parameters()[1].1).unwrap();
    assert!(e > 0.0);
}

#[test]
fn a_hub_model_offline_and_uncached_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nsteps = 3\n",
        sample().display()
    );
    let cfg = config(tmp.path(), "[model]\nhub = \"Qwen/Qwen2.5-Coder-0.5B\"", "", &stages);
    let home = tmp.path().join("hf");
    let out = train(
        &cfg,
        &[],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Qwen/Qwen2.5-Coder-0.5B") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

#[test]
fn unbuilt_devices_and_cpu_bf16_are_refused_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nsteps = 3\n",
        sample().display()
    );
    let cfg = config(tmp.path(), &tiny_model(), "", &stages);
    let out = train(&cfg, &["--set", "run.device=cuda"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "cuda") {
        // With the feature, a machine without a GPU names the device it could not open.
        assert!(err.contains("opening CUDA device 0"), "{err}");
    } else {
        assert!(err.contains("built without the `cuda` feature"), "{err}");
    }
    let out = train(&cfg, &["--set", "run.device=gpu"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not `cpu`, `cuda` or `cuda:N`"));
    let out = train(&cfg, &["--set", "run.dtype=bf16"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CPU training runs in f32"));
    // Two ranks asked of a process started alone.
    let out = train(
        &cfg,
        &["--set", "run.world_size=2", "--set", "batch.global_rows=8"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run.world_size") && err.contains("mpirun -np 2"), "{err}");
    // Started by a launcher as one rank of several in a way this build cannot serve (torchrun
    // on the CPU: MPI only; srun without an MPI world behind it, or a build without MPI):
    // refused on every rank, nothing written.
    let slurm_refusal = if cfg!(feature = "mpi") {
        "MPI says rank 0 of 1"
    } else {
        "--features mpi"
    };
    for (env, want) in [
        (&[("RANK", "1"), ("WORLD_SIZE", "2")][..], "mpirun -np N"),
        (
            &[
                ("SLURM_STEP_ID", "0"),
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "4"),
                ("SLURM_LOCALID", "0"),
            ][..],
            slurm_refusal,
        ),
    ] {
        let out = train(&cfg, &[], env);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("rank ") && err.contains(want), "{err}");
        assert!(
            !tmp.path().join("run").exists(),
            "a refused rank wrote the run directory"
        );
    }
    // A launcher's single-process job trains, and so does one process in an sbatch script.
    ok(&train(&cfg, &["--dry-run"], &[("RANK", "0"), ("WORLD_SIZE", "1")]));
    ok(&train(
        &cfg,
        &["--dry-run"],
        &[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")],
    ));
}

#[test]
fn a_run_that_cannot_fit_in_memory_stops_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nsteps = 3\n",
        sample().display()
    );
    let cfg = config(tmp.path(), &tiny_model(), "", &stages);
    let out = train(
        &cfg,
        &[
            "--set",
            "batch.micro_batch_rows=65536",
            "--set",
            "batch.global_rows=65536",
            "--set",
            "data.seq_len=65536",
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out of memory ahead") && err.contains("batch.micro_batch_rows"),
        "{err}"
    );
    assert!(!tmp.path().join("run/metrics.jsonl").exists());
}

#[test]
fn a_template_that_rewrites_history_trains_under_per_turn_and_is_refused_under_prefix() {
    // The loss model with the R1-like template without generation blocks
    // (tests/fixtures/chat_template/generation.json), on multi-turn thinking conversations.
    let tmp = tempfile::tempdir().unwrap();
    let fx = repo().join("tests/fixtures");
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(fx.join("loss_model")).unwrap().flatten() {
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let gen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("chat_template/generation.json")).unwrap()).unwrap();
    let mut tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer_config.json")).unwrap()).unwrap();
    tc["chat_template"] = gen["templates"]["r1_plain"].clone();
    std::fs::write(model.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let stages = format!(
        "[[stage]]\nname = \"s\"\ndata = [\"{}\"]\nsteps = 2\n",
        fx.join("template_loss/think.jsonl").display()
    );
    let run = |mask: &str| {
        let out = tmp.path().join(mask);
        let cfg = config(&out, &format!("[model]\npath = \"{}\"", model.display()), "", &stages);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[data]\nseq_len = 64\n",
            &format!("[data]\nseq_len = 256\nmask = \"{mask}\"\n"),
        );
        assert!(text.contains("mask = "));
        std::fs::write(&cfg, text).unwrap();
        train(&cfg, &[], &[])
    };
    let refused = run("prefix");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("think.jsonl:2") && err.contains("per_turn"), "{err}");
    for mask in ["per_turn", "last_assistant_turn"] {
        ok(&run(mask));
        let m = metrics(&tmp.path().join(mask).join("run"));
        assert!(m.iter().any(|r| r["step"] == 2), "{mask}: {m:?}");
    }
}
