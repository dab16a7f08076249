//! CodeArena evaluation of checkpoints during a run (`[arena]` in the run config): answers of
//! the checkpoint, judged against the run's base model and/or a stored baseline, reported into
//! `RUN/eval/step-N/` with a `codearena_win_rate` line in `metrics.jsonl`. A failing judge
//! never stops training: the step is reported, kept in this evaluator's queue, and tried again
//! at the next evaluation and at the end of the run.

use crate::arena::answers::{answer_questions, AnswerModel, AnswerSettings, AnswerSource};
use crate::arena::evaluate::{judge, reports, write_questions_meta, write_reports, Opponent};
use crate::arena::questions::{self, Question};
use crate::arena::{ArenaConfig, RunOpponent};
use crate::config::{ConfigError, KeyContext};
use crate::infer::InferDevice;
use crate::infer::Sampling;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The `metrics.jsonl` line of one evaluated checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct ArenaMetrics {
    pub step: u64,
    pub opponent: String,
    pub codearena_win_rate: f64,
    pub codearena_tie_rate: f64,
    pub codearena_score: f64,
    pub codearena_score_ci: [f64; 2],
    pub questions: usize,
}

impl ArenaMetrics {
    /// The line shown while training.
    pub fn summary(&self) -> String {
        format!(
            "CodeArena step {} vs {}: win {:.1}%  tie {:.1}%  score {:.3} [{:.3}, {:.3}]",
            self.step,
            self.opponent,
            100.0 * self.codearena_win_rate,
            100.0 * self.codearena_tie_rate,
            self.codearena_score,
            self.codearena_score_ci[0],
            self.codearena_score_ci[1]
        )
    }
}

/// Where the evaluator reports to: notes for people and metrics lines for the run's log.
pub trait ArenaSink {
    fn note(&mut self, text: &str);
    fn metrics(&mut self, line: &ArenaMetrics);
}

/// Evaluates checkpoints of one run.
pub struct ArenaEval {
    cfg: ArenaConfig,
    eval_dir: PathBuf,
    /// The run's base model (with its tokenizer), on the run's device.
    base: Option<AnswerModel>,
    /// Where checkpoints answer: the run's device and precision.
    device: InferDevice,
    questions: Option<Vec<Question>>,
    /// Steps whose evaluation failed, to try again.
    pending: Vec<(u64, PathBuf)>,
    /// Checkpoints saved so far by this process (the cadence counts them).
    saved: u64,
    /// The last step evaluated successfully.
    done_step: Option<u64>,
}

impl ArenaEval {
    pub fn new(
        cfg: ArenaConfig,
        run_dir: &Path,
        base: Option<AnswerModel>,
        device: InferDevice,
    ) -> Result<Self, ConfigError> {
        if cfg.opponents.contains(&RunOpponent::Base) && base.is_none() {
            return Err(ConfigError::new(
                "arena.opponents",
                "\"base\" needs a base model (model.path or model.hub), not a random init",
            ));
        }
        Ok(Self {
            cfg,
            eval_dir: run_dir.join("eval"),
            base,
            device,
            questions: None,
            pending: vec![],
            saved: 0,
            done_step: None,
        })
    }

    /// A checkpoint of `step` was saved in `dir`: evaluates it when the cadence says so.
    pub fn on_checkpoint(&mut self, step: u64, dir: &Path, sink: &mut dyn ArenaSink) {
        self.saved += 1;
        let every = self.cfg.every_checkpoints;
        if every > 0 && self.saved.is_multiple_of(every) {
            self.run(Some((step, dir.to_path_buf())), sink);
        }
    }

    /// The run ended with the checkpoint of `step` in `dir`: evaluates it (unless already done
    /// or `at_end = false`) and retries every earlier failure; warns about what still failed.
    pub fn at_finish(&mut self, step: u64, dir: &Path, sink: &mut dyn ArenaSink) {
        let target = (self.cfg.at_end && self.done_step != Some(step)).then(|| (step, dir.to_path_buf()));
        if target.is_some() || !self.pending.is_empty() {
            self.run(target, sink);
        }
        for (step, _) in &self.pending {
            eprintln!("warning: CodeArena evaluation of step {step} did not succeed; see the messages above");
        }
    }

    /// Evaluates `target` and the steps whose evaluation failed before; a failure is reported
    /// and the step kept for the next try, never an error of the run.
    fn run(&mut self, target: Option<(u64, PathBuf)>, sink: &mut dyn ArenaSink) {
        let mut todo = std::mem::take(&mut self.pending);
        todo.extend(target);
        for (step, dir) in todo {
            if !dir.is_dir() {
                sink.note(&format!(
                    "CodeArena: step {step} is no longer on disk (checkpoint.keep_last); not evaluated"
                ));
                continue;
            }
            sink.note(&format!("CodeArena: evaluating step {step}"));
            match self.evaluate(step, &dir) {
                Ok(lines) => {
                    for l in &lines {
                        sink.note(&l.summary());
                        sink.metrics(l);
                    }
                    self.done_step = Some(step);
                }
                Err(e) => {
                    sink.note(&format!(
                        "CodeArena: evaluating step {step} failed ({e:#}); training goes on, it is tried again later"
                    ));
                    self.pending.push((step, dir));
                }
            }
        }
    }

    fn questions(&mut self) -> Result<&[Question]> {
        if self.questions.is_none() {
            let (records, source) =
                questions::load_with_categories(&self.cfg.questions, self.cfg.categories.as_deref())
                    .key_context("arena.questions")?;
            questions::record_source(&self.eval_dir, &source)?;
            self.questions = Some(records.into_iter().map(|r| r.question).collect());
        }
        Ok(self.questions.as_deref().unwrap_or_default())
    }

    /// Evaluates the checkpoint of `step` in `ckpt`; returns one metrics line per opponent.
    pub fn evaluate(&mut self, step: u64, ckpt: &Path) -> Result<Vec<ArenaMetrics>> {
        let settings = AnswerSettings {
            max_new_tokens: self.cfg.max_new_tokens,
            sampling: Sampling::greedy(),
            batch_size: self.cfg.batch_size,
            overwrite: false,
        };
        let qs = self.questions()?.to_vec();
        let (eval_dir, cfg) = (&self.eval_dir, &self.cfg);
        write_questions_meta(eval_dir, &qs)?;
        let name = format!("step-{step:08}");
        let me = AnswerSource::Local(AnswerModel {
            dir: ckpt.to_path_buf(),
            tokenizer: None,
            device: self.device.clone(),
        });
        answer_questions(&me, &name, &qs, eval_dir, &settings)?;
        let (client, prompt) = cfg.judge.client()?;
        for o in &cfg.opponents {
            let opp = match o {
                RunOpponent::Baseline(b) => Opponent::Baseline(b.clone()),
                RunOpponent::Base => {
                    let base = self.base.clone().context("no base model directory")?;
                    answer_questions(&AnswerSource::Local(base), "base", &qs, eval_dir, &settings)?;
                    Opponent::Model("base".into())
                }
            };
            let s = judge(eval_dir, &qs, &name, &opp, &client, &prompt, cfg.judge.parallel())?;
            if s.failed > 0 {
                bail!("{} judge requests failed for {name} vs {}", s.failed, opp.name());
            }
        }
        let mine = reports(eval_dir, 1000, 0, Some(&name))?;
        let out_dir = eval_dir.join(&name);
        std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        write_reports(&out_dir, &mine)?;
        Ok(mine
            .iter()
            .map(|r| ArenaMetrics {
                step,
                opponent: r.opponent.clone(),
                codearena_win_rate: r.overall.win_rate,
                codearena_tie_rate: r.overall.tie_rate,
                codearena_score: r.overall.score,
                codearena_score_ci: r.overall.score_ci,
                questions: r.overall.n,
            })
            .collect())
    }
}
