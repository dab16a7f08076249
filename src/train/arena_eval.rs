//! CodeArena evaluation of checkpoints during a run (`[arena]` in the run config): answers of
//! the checkpoint, judged against the run's base model and/or a stored baseline, reported into
//! `RUN/eval/step-N/` with a `codearena_win_rate` line in `metrics.jsonl`. A failing judge
//! never stops training: the step is reported and tried again at the next evaluation and at
//! the end of the run.

use crate::arena::answers::{answer_questions, AnswerSettings};
use crate::arena::evaluate::{judge, reports, write_reports, Opponent};
use crate::arena::judge_client::{JudgeClient, JudgeConfig};
use crate::arena::judge_prompt::JudgePrompt;
use crate::arena::questions::{self, Categories, Question};
use crate::config::ArenaSection;
use crate::infer::Sampling;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Evaluates checkpoints of one run.
pub struct ArenaEval {
    cfg: ArenaSection,
    eval_dir: PathBuf,
    base_dir: Option<PathBuf>,
    questions: Option<Vec<Question>>,
    /// Steps whose evaluation failed, to try again.
    pub pending: Vec<(u64, PathBuf)>,
}

impl ArenaEval {
    pub fn new(cfg: ArenaSection, run_dir: &Path, base_dir: Option<PathBuf>) -> Result<Self> {
        if cfg.opponents.iter().any(|o| o == "base") && base_dir.is_none() {
            bail!("key `arena.opponents`: \"base\" needs a base model (model.path or model.hub), not a random init");
        }
        Ok(Self {
            cfg,
            eval_dir: run_dir.join("eval"),
            base_dir,
            questions: None,
            pending: vec![],
        })
    }

    /// Whether the `n`-th checkpoint (1-based) is evaluated.
    pub fn due(&self, n: u64) -> bool {
        self.cfg.every_checkpoints > 0 && n.is_multiple_of(self.cfg.every_checkpoints)
    }

    pub fn at_end(&self) -> bool {
        self.cfg.at_end
    }

    fn questions(&mut self) -> Result<&[Question]> {
        if self.questions.is_none() {
            let cats = self.cfg.categories.as_deref().map(Categories::load).transpose()?;
            self.questions =
                Some(questions::load(&self.cfg.questions, cats.as_ref()).context("key `arena.questions`")?);
        }
        Ok(self.questions.as_deref().unwrap_or_default())
    }

    /// Evaluates the checkpoint of `step` in `ckpt`; returns one metrics line per opponent.
    pub fn evaluate(&mut self, step: u64, ckpt: &Path) -> Result<Vec<ArenaMetrics>> {
        let settings = AnswerSettings {
            max_new_tokens: self.cfg.max_new_tokens,
            sampling: Sampling::greedy(),
            batch_size: self.cfg.batch_size,
        };
        let eval_dir = self.eval_dir.clone();
        let base_dir = self.base_dir.clone();
        let cfg = self.cfg.clone();
        let qs = self.questions()?.to_vec();
        crate::arena::evaluate::write_questions_meta(&eval_dir, &qs)?;
        let name = format!("step-{step:08}");
        answer_questions(ckpt, &name, &qs, &eval_dir, &settings)?;
        let mut judge_cfg = JudgeConfig::new(cfg.judge_url.clone(), cfg.judge_model.clone());
        judge_cfg.key_env = cfg.judge_key_env.clone();
        judge_cfg.timeout = Duration::from_secs(cfg.timeout_s.max(1));
        judge_cfg.max_retries = cfg.max_retries;
        let client = JudgeClient::new(judge_cfg)?;
        let prompt = match &cfg.judge_prompt {
            Some(p) => JudgePrompt::from_file(p)?,
            None => JudgePrompt::builtin(),
        };
        let mut opponents = Vec::new();
        for o in &cfg.opponents {
            let opp = match o.strip_prefix("baseline:") {
                Some(b) => Opponent::Baseline(b.to_string()),
                None => {
                    let dir = base_dir.as_deref().context("no base model directory")?;
                    answer_questions(dir, "base", &qs, &eval_dir, &settings)?;
                    Opponent::Model("base".into())
                }
            };
            let s = judge(&eval_dir, &qs, &name, &opp, &client, &prompt, cfg.concurrency.max(1))?;
            if s.failed > 0 {
                bail!("{} judge requests failed for {name} vs {}", s.failed, opp.name());
            }
            opponents.push(opp);
        }
        let mine = reports(&eval_dir, 1000, 0, Some(&name))?;
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
