//! The end of a run: a last validation, the final checkpoint marked complete, CodeArena on it
//! (and on earlier steps whose evaluation failed), `loss.svg` and `summary.json`.

use super::checkpoint::{self, TRAINER_STATE};
use super::metrics::{read_steps, StepMetrics};
use super::trainer::Trainer;
use crate::io::write_atomic;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The end-of-run report (also written to `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The rank that reports (only rank 0's summary is printed and written).
    #[serde(skip)]
    pub rank: usize,
    pub run_dir: PathBuf,
    pub checkpoint: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    pub supervised_tokens: u64,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
    pub bad_records: u64,
}

impl Trainer {
    pub(super) fn finish(&mut self) -> Result<Summary> {
        if !self.dp.is_writer() {
            // Rank 0 validates and writes the final checkpoint; this rank waits for it, then
            // reports the counters it shares.
            self.dp.wait_for_writer()?;
            self.state.elapsed_s = self.elapsed();
            let ckpt = self.mark_complete()?;
            return Ok(self.summary(ckpt, &[]));
        }
        if let Some(v) = &self.validation {
            if self.last_val_step != Some(self.state.step) {
                self.state.last_val_loss = v.loss(&self.model, &self.builder).context("validation loss")?;
            }
        }
        self.dp.wait_for_writer()?;
        self.state.complete = true;
        self.state.elapsed_s = self.elapsed();
        let ckpt = self.mark_complete()?;
        if let Some(mut arena) = self.arena.take() {
            arena.at_finish(self.state.step, &ckpt, self);
            self.arena = Some(arena);
        }
        let all = self.write_loss_curve()?;
        let summary = self.summary(ckpt, &all);
        write_atomic(
            &self.dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        Ok(summary)
    }

    /// Draws `loss.svg` from `metrics.jsonl` (at every checkpoint and at the end); returns the
    /// steps read.
    pub(super) fn write_loss_curve(&self) -> Result<Vec<StepMetrics>> {
        let Some(log) = &self.metrics else {
            return Ok(Vec::new());
        };
        let all: Vec<StepMetrics> = read_steps(log.path())?;
        let title = format!("{} — loss per optimizer step", self.cfg.run.name);
        write_atomic(&loss_svg(&self.dir), super::loss_curve::render(&all, &title).as_bytes())?;
        Ok(all)
    }

    /// The final checkpoint, with its trainer state marking the run complete.
    fn mark_complete(&mut self) -> Result<PathBuf> {
        self.state.complete = true;
        if self.last_saved != Some(self.state.step) {
            return self.save();
        }
        // Already saved at this step: only record that the run is complete (every rank waits
        // for rank 0 to have written it, as after a save).
        let dir = self.dir.join(checkpoint::step_dir_name(self.state.step));
        if self.dp.is_writer() {
            write_atomic(
                &checkpoint::state_file(&dir, TRAINER_STATE),
                serde_json::to_string_pretty(&self.state)?.as_bytes(),
            )?;
        }
        self.dp.barrier()?;
        Ok(dir)
    }

    fn summary(&self, checkpoint: PathBuf, all: &[StepMetrics]) -> Summary {
        let s = &self.state;
        Summary {
            rank: self.dp.rank,
            run_dir: self.dir.clone(),
            checkpoint,
            steps: s.step,
            tokens: s.tokens,
            supervised_tokens: s.supervised_tokens,
            first_loss: all.iter().find_map(|m| m.loss).or(self.first_loss),
            final_loss: s.last_loss,
            val_loss: s.last_val_loss,
            skipped_steps: s.skipped_steps,
            elapsed_s: s.elapsed_s,
            tokens_per_s: s.tokens as f64 / s.elapsed_s.max(1e-9),
            bad_records: all.last().map_or(0, |m| m.bad_records),
        }
    }
}

/// Prints a summary for people.
pub fn print_summary(s: &Summary) {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("run        {}", s.run_dir.display());
    println!("checkpoint {}", s.checkpoint.display());
    println!("steps      {}  ({} skipped)", s.steps, s.skipped_steps);
    println!("tokens     {}  ({} supervised)", s.tokens, s.supervised_tokens);
    println!("loss       {} -> {}", f(s.first_loss), f(s.final_loss));
    println!("val loss   {}", f(s.val_loss));
    println!("time       {:.1} s  ({:.0} tokens/s)", s.elapsed_s, s.tokens_per_s);
    if s.bad_records > 0 {
        println!("skipped {} malformed records", s.bad_records);
    }
    println!("loss curve {}", loss_svg(&s.run_dir).display());
}

fn loss_svg(run_dir: &Path) -> PathBuf {
    run_dir.join("loss.svg")
}
