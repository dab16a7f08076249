//! The config of the tiny CPU runs that the resume and data-parallel tests train: the smoke
//! model and tokenizer on the sample shard, micro-batches of 2 rows × 64 tokens, checkpoints
//! every 3 steps (the last 2 kept), one stage; and reading back what a run logged.

use crate::common::repo;
use std::path::{Path, PathBuf};

/// Writes `out/run.toml`: `steps` steps of `global_rows` rows each, `extra` TOML tables added
/// (e.g. `[eval]`); `{sample}` in `extra` names the sample shard.
pub fn write_config(out: &Path, name: &str, global_rows: usize, steps: u64, extra: &str) -> PathBuf {
    let r = repo();
    let sample = r.join("data/sample/syncode-sample.jsonl");
    let text = format!(
        r#"
[run]
name = "{name}"
output_dir = "{out}"
seed = 7

[model]
init_config = "{r}/configs/models/smoke-tiny.json"
tokenizer = "{r}/data/sample/tokenizer"

[data]
seq_len = 64
shuffle_buffer = 32
pack_window = 8

[optim]
lr = 3e-3
warmup_steps = 2
weight_decay = 0.01

[batch]
micro_batch_rows = 2
global_rows = {global_rows}

[checkpoint]
every_steps = 3
keep_last = 2

[log]
progress = "lines"
{extra}
[[stage]]
name = "sft"
data = ["{sample}"]
steps = {steps}
"#,
        out = out.display(),
        r = r.display(),
        sample = sample.display(),
        extra = extra.replace("{sample}", &sample.display().to_string()),
    );
    let path = out.join("run.toml");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// Every line of a run's `metrics.jsonl`, parsed.
pub fn metric_lines(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The step directory a run's `latest` names.
pub fn latest(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("latest"))
        .unwrap()
        .trim()
        .to_string()
}
