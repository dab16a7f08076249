//! A stage of a run as the loop sees it: its loader (restored mid-stage after a resume) on a
//! background thread, the length and shape of its LR schedule, and the micro-batches of each
//! optimizer step (this rank's share of them, `StepBatches`).

use super::schedule::StageSchedule;
use super::setup::stage_loader;
use super::step::{MicroBatch, RowCounts};
use super::trainer::Trainer;
use crate::config::KeyContext;
use crate::data::epoch_size::prepared_epoch_rows;
use crate::data::loader::{Loader, LoaderConfig, Prefetcher, StateDelta};
use crate::data::prepared::resolve_training_sources;
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::PathBuf;

/// One stage's loader on its background thread, and its schedule.
pub(super) struct StageRun {
    pub name: String,
    pub total: u64,
    pub schedule: StageSchedule,
    pub batches: Prefetcher,
}

impl Trainer {
    /// The loader of the stage in progress (restored mid-stage after a resume) and its schedule.
    pub(super) fn start_stage(&mut self) -> Result<StageRun> {
        let i = self.state.stage;
        let stage = self.cfg.stages[i].clone();
        let files = resolve_training_sources(&stage.data, &self.builder)
            .with_context(|| format!("stage {}", stage.name))
            .key_context(format!("stage[{i}].data"))?;
        if self.state.stage_total_steps == 0 {
            self.state.stage_total_steps = self.stage_total(i, &files)?;
        }
        let total = self.state.stage_total_steps;
        self.state.stage_name = stage.name.clone();
        let lcfg = stage_loader(&self.cfg, &self.builder, i);
        let loader = match self.state.loader.take() {
            Some(st) => Loader::restore(lcfg, files, self.builder.clone(), st)
                .with_context(|| format!("restoring the data position of stage {}", stage.name))?,
            None => Loader::new(lcfg, files, self.builder.clone())?,
        };
        self.progress.start_stage(&stage.name, total, self.state.stage_step);
        let batches = Prefetcher::spawn(loader, self.cfg.data.prefetch);
        // The state after the last consumed batch: the batches' deltas move it on (`record`).
        self.state.loader = Some(batches.start_state().clone());
        Ok(StageRun {
            name: stage.name,
            total,
            schedule: self.cfg.stage_schedule(i),
            batches,
        })
    }

    /// Steps of the schedule of stage `i`: its `steps`, or the count of one epoch times
    /// `epochs` (read once through the data), whichever is smaller.
    fn stage_total(&self, i: usize, files: &[PathBuf]) -> Result<u64> {
        let s = &self.cfg.stages[i];
        let Some(epochs) = s.epochs else {
            return s
                .steps
                .ok_or_else(|| anyhow::anyhow!("key `stage[{i}].steps`: give `steps` or `epochs`"));
        };
        let lcfg = LoaderConfig {
            max_epochs: Some(1),
            ..stage_loader(&self.cfg, &self.builder, i)
        };
        // Prepared shards: from the documents' lengths alone; raw shards: one pass.
        let rows = match prepared_epoch_rows(&lcfg, files)? {
            Some(rows) => rows,
            None => {
                self.progress.note(&format!(
                    "stage {}: counting one epoch of the data for the LR schedule (give stage.steps, or \
                     train on `syncoder data prepare`d shards, to skip this)",
                    s.name
                ));
                let mut loader = Loader::new(lcfg, files.to_vec(), self.builder.clone())?;
                let mut rows = 0u64;
                while let Some(b) = loader.next_batch()? {
                    rows += b.rows.len() as u64;
                }
                rows
            }
        };
        Ok(steps_for_epochs(rows, self.cfg.global_rows()? as u64, epochs, s.steps))
    }

    /// The micro-batches of the next optimizer step and the changes of the loader's state over
    /// them (`None` when the stage's data is exhausted).
    pub(super) fn fetch(&self, batches: &mut Prefetcher) -> Result<Option<(StepBatches, Vec<StateDelta>)>> {
        // The step's micro-batches over all ranks; this rank keeps its share on the device and
        // only the counts of the others'.
        let all = self.cfg.global_micro_batches()?;
        let mut step = StepBatches {
            mine: Vec::new(),
            counts: Vec::with_capacity(all),
        };
        let mut deltas = Vec::with_capacity(all);
        while step.counts.len() < all {
            let Some((b, d)) = batches.next_batch()? else { break };
            let mine = self.dp.owns(step.counts.len());
            let device = if mine { &self.device } else { &Device::Cpu };
            let micro = MicroBatch::new(&b.rows, device)?;
            step.counts.push(micro.counts());
            if mine {
                step.mine.push(micro);
            }
            deltas.push(d);
        }
        Ok((!step.counts.is_empty()).then_some((step, deltas)))
    }
}

/// Steps of a stage of `epochs` passes over `rows` rows, `per_step` rows per step, at most `cap`.
pub(super) fn steps_for_epochs(rows: u64, per_step: u64, epochs: usize, cap: Option<u64>) -> u64 {
    let total = (rows.div_ceil(per_step.max(1)) * epochs as u64).max(1);
    cap.map_or(total, |cap| cap.min(total))
}

/// One optimizer step's data on this rank: its own micro-batches, and the counts of every
/// micro-batch of the step over all ranks (in the global order).
pub(super) struct StepBatches {
    pub mine: Vec<MicroBatch>,
    pub counts: Vec<RowCounts>,
}

impl StepBatches {
    /// Supervised targets of the whole step, over all ranks.
    pub fn supervised(&self) -> usize {
        self.counts.iter().map(|c| c.supervised).sum()
    }
}
