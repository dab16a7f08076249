//! `metrics.jsonl`: one JSON line per optimizer step, appended and flushed as the run goes. On
//! resume the lines of steps after the checkpoint (written before the crash, now to be redone)
//! are dropped, so the file always holds each step once.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

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

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl`, keeping only the lines of steps `<= keep_through`.
    pub fn open(run_dir: &Path, keep_through: u64) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let kept: Vec<String> = read_all(&path)?
            .into_iter()
            .filter(|l| l.step <= keep_through)
            .map(|l| l.text)
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        crate::model::weights::write_atomic(&path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path, file })
    }

    /// Appends a step's line (or another record with a `step`, e.g. a CodeArena result).
    pub fn append<T: Serialize>(&mut self, m: &T) -> Result<()> {
        let line = serde_json::to_string(m)?;
        writeln!(self.file, "{line}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One line of a metrics file: its step, the step metrics when it is a step's line (other
/// lines, such as CodeArena results, carry only a `step`), and its text.
pub struct MetricsLine {
    pub step: u64,
    pub metrics: Option<StepMetrics>,
    pub text: String,
}

/// Every line of a metrics file (none when it does not exist); a torn last line (a crash
/// mid-write) is ignored, any other bad line is an error.
pub fn read_all(path: &Path) -> Result<Vec<MetricsLine>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let n = lines.len();
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) if i + 1 == n => break,
            Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), i + 1),
        };
        let Some(step) = value.get("step").and_then(|s| s.as_u64()) else {
            anyhow::bail!("{}:{}: a line without `step`", path.display(), i + 1);
        };
        let metrics = if value.get("loss").is_some() {
            Some(serde_json::from_value(value).with_context(|| format!("{}:{}", path.display(), i + 1))?)
        } else {
            None
        };
        out.push(MetricsLine {
            step,
            metrics,
            text: line,
        });
    }
    Ok(out)
}

/// The step lines of a metrics file.
pub fn read_steps(path: &Path) -> Result<Vec<StepMetrics>> {
    Ok(read_all(path)?.into_iter().filter_map(|l| l.metrics).collect())
}

/// Peak resident set size of this process in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes into the provided struct and has no other precondition.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised; ru_maxrss is in KiB on Linux.
    let usage = unsafe { usage.assume_init() };
    Some(usage.ru_maxrss as f64 / 1024.0)
}
