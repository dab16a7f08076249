//! `metrics.jsonl`: one JSON line per optimizer step, appended (and fsynced) as the run goes,
//! through the crash-safe `io::jsonl` log. On resume the lines of steps after the checkpoint
//! (written before the crash, now to be redone) are dropped, so the file always holds each step
//! once.

use crate::io::jsonl::{self, AppendLog, Line};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// One optimizer step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based optimizer step over the whole run.
    pub step: u64,
    pub stage: String,
    /// Mean loss over the step's supervised tokens (`null` when not finite).
    pub loss: Option<f64>,
    pub lr: f64,
    /// Global gradient norm before clipping (`null` when not finite).
    pub grad_norm: Option<f64>,
    /// Row tokens processed so far in the run (padding included).
    pub tokens: u64,
    /// Row tokens of this step.
    pub step_tokens: u64,
    /// Supervised tokens of this step (the loss denominator).
    pub supervised_tokens: u64,
    pub tokens_per_s: f64,
    /// Training seconds so far, over every resume.
    pub elapsed_s: f64,
    pub epoch: usize,
    /// The update was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Malformed records skipped so far in this stage (`data.on_bad_record = "skip"`).
    pub bad_records: u64,
    pub padding_fraction: f64,
    /// Validation loss, on steps where it was computed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    /// Peak resident memory of the process (CPU runs).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_rss_mb: Option<f64>,
    /// Peak device memory in use during the step, GiB (GPU runs; sampled after each forward
    /// and backward).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_device_memory_gib: Option<f64>,
    /// Model FLOPs utilisation of the step (GPU runs on a card of known peak; see docs/gpu.md).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mfu: Option<f64>,
}

/// Finite values only (JSON has no NaN).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The file name of the metrics log in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// `metrics.jsonl` of a run, open for appending (a crash-safe [`AppendLog`]).
pub struct MetricsLog {
    log: AppendLog,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl`, keeping only the lines of steps `<= keep_through`.
    pub fn open(run_dir: &Path, keep_through: u64) -> Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let (log, _) = AppendLog::open_retaining::<Value>(&path, |l| Ok(line_step(&path, l)? <= keep_through))?;
        Ok(Self { log })
    }

    /// Appends a step's line (or another record with a `step`, e.g. a CodeArena result).
    pub fn append<T: Serialize>(&mut self, m: &T) -> Result<()> {
        self.log.append(m)
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

/// The `step` of a metrics line (every line has one).
fn line_step(path: &Path, l: &Line<Value>) -> Result<u64> {
    match l.value.get("step").and_then(|s| s.as_u64()) {
        Some(step) => Ok(step),
        None => bail!("{}:{}: a line without `step`", path.display(), l.number),
    }
}

/// The step lines of a metrics file (other lines, such as CodeArena results, carry only a
/// `step`); a torn last line (a crash mid-write) is ignored, any other bad line is an error.
pub fn read_steps(path: &Path) -> Result<Vec<StepMetrics>> {
    let mut out = Vec::new();
    for l in jsonl::read_lines::<Value>(path)? {
        line_step(path, &l)?;
        if l.value.get("loss").is_some() {
            out.push(serde_json::from_value(l.value).with_context(|| format!("{}:{}", path.display(), l.number))?);
        }
    }
    Ok(out)
}
