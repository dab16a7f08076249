//! What a run shows while it goes: a progress bar with ETA on a terminal, plain log lines
//! otherwise (batch jobs, CI logs), and notes that never break the bar.

use super::metrics::StepMetrics;
use crate::config::{ensure, ConfigError};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStyle {
    /// A progress bar on a terminal, log lines otherwise.
    Auto,
    Bar,
    Lines,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Print a log line every this many steps (log-line mode).
    pub every_steps: u64,
    pub progress: ProgressStyle,
    /// Also write TensorBoard event files to `RUN/tensorboard/`.
    pub tensorboard: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every_steps: 10,
            progress: ProgressStyle::Auto,
            tensorboard: false,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.every_steps > 0, "log.every_steps", || "must be at least 1".into())
    }
}

pub struct Progress {
    bar: Option<ProgressBar>,
    every: u64,
    style: ProgressStyle,
    /// Prints nothing (the ranks other than 0 of a data-parallel run).
    silent: bool,
}

impl Progress {
    pub fn new(cfg: &LogConfig) -> Self {
        Self {
            bar: None,
            every: cfg.every_steps,
            style: cfg.progress,
            silent: false,
        }
    }

    /// Progress that prints nothing.
    pub fn silent() -> Self {
        Self {
            bar: None,
            every: u64::MAX,
            style: ProgressStyle::Lines,
            silent: true,
        }
    }

    fn use_bar(&self) -> bool {
        match self.style {
            ProgressStyle::Bar => true,
            ProgressStyle::Lines => false,
            ProgressStyle::Auto => std::io::stderr().is_terminal(),
        }
    }

    /// Starts a stage of `total` steps, `done` of them already done.
    pub fn start_stage(&mut self, name: &str, total: u64, done: u64) {
        self.finish();
        if self.silent {
            return;
        }
        if self.use_bar() {
            let bar = crate::io::progress::counting_bar(&format!("stage {name}"), "steps", total);
            bar.set_position(done);
            self.bar = Some(bar);
        } else {
            eprintln!("stage {name}: {total} steps ({done} done)");
        }
    }

    pub fn step(&mut self, m: &StepMetrics, stage_step: u64, total: u64) {
        if self.silent {
            return;
        }
        let loss = m.loss.map_or("nan".into(), |l| format!("{l:.4}"));
        let gnorm = m.grad_norm.map_or("nan".into(), |g| format!("{g:.3}"));
        let mut msg = format!(
            "loss {loss}  lr {:.2e}  gnorm {gnorm}  {:.0} tok/s",
            m.lr, m.tokens_per_s
        );
        if let Some(v) = m.val_loss {
            msg.push_str(&format!("  val {v:.4}"));
        }
        if m.skipped {
            msg.push_str("  SKIPPED (non-finite)");
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(stage_step);
                bar.set_message(msg);
            }
            None => {
                if m.step.is_multiple_of(self.every) || stage_step == total || m.skipped || m.val_loss.is_some() {
                    eprintln!(
                        "step {} ({stage_step}/{total} of stage {})  {msg}  elapsed {:.0}s",
                        m.step, m.stage, m.elapsed_s
                    );
                }
            }
        }
    }

    /// A note printed above the bar (or as a line).
    pub fn note(&self, text: &str) {
        if self.silent {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
