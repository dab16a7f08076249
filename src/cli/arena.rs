//! `syncoder arena answer | judge | report`: the CodeArena steps over an evaluation directory,
//! and the question and generation options shared with `syncoder compare` (the judge's are
//! `arena::JudgeSettings`).

use crate::arena::answers::{answer_questions, AnswerSettings, DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS};
use crate::arena::evaluate::{judge, reports, write_questions_meta, write_reports, Opponent};
use crate::arena::questions::{self, Categories, Question};
use crate::arena::JudgeSettings;
use crate::infer::Sampling;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ArenaCommand {
    /// Answer the questions with a model (greedy by default), resuming where it stopped.
    Answer(AnswerArgs),
    /// Judge a model's answers against a stored baseline or another model, two games each.
    Judge(JudgeArgs),
    /// Scores, confidence intervals and Bradley–Terry win probability of every judged pairing.
    Report(ReportArgs),
}

/// Where the questions come from.
#[derive(Args, Debug, Clone)]
pub struct QuestionArgs {
    /// CodeArena-format JSONL, or hf://datasets/CSJianYang/CodeArena.
    #[arg(long)]
    pub questions: String,
    /// JSON map from task type to main category (e.g. CodeArena's tasktype_to_levels.json).
    #[arg(long)]
    pub categories: Option<PathBuf>,
}

impl QuestionArgs {
    pub fn load(&self) -> Result<Vec<Question>> {
        let cats = self.categories.as_deref().map(Categories::load).transpose()?;
        questions::load(&self.questions, cats.as_ref())
    }
}

/// Generation options of answering.
#[derive(Args, Debug, Clone)]
pub struct GenerationArgs {
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Questions generated together.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Sample instead of greedy decoding (the protocol is greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl GenerationArgs {
    pub fn settings(&self) -> Result<AnswerSettings> {
        let sampling = match self.temperature {
            Some(t) if t > 0.0 => Sampling {
                temperature: t,
                top_p: self.top_p,
                seed: self.seed,
            },
            Some(t) if t < 0.0 => bail!("--temperature must be positive"),
            _ => Sampling::greedy(),
        };
        Ok(AnswerSettings {
            max_new_tokens: self.max_new_tokens,
            sampling,
            batch_size: self.batch_size,
        })
    }
}

#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// The model directory (a checkpoint step directory works).
    #[arg(long)]
    pub model: PathBuf,
    /// The name the answers are filed under.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// The evaluation directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub generation: GenerationArgs,
}

#[derive(Args, Debug)]
pub struct JudgeArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// The model whose answers are judged (its name in model_answer/).
    #[arg(long)]
    pub model: String,
    /// Judge against the stored answers of this baseline (e.g. gpt-4-turbo-2024-04-09).
    #[arg(long, conflicts_with = "vs", required_unless_present = "vs")]
    pub baseline: Option<String>,
    /// Judge against another model's answers (its name in model_answer/).
    #[arg(long)]
    pub vs: Option<String>,
    #[command(flatten)]
    pub judge: JudgeSettings,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The evaluation directory.
    pub eval_dir: PathBuf,
    /// Bootstrap resamples of the questions.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cmd: ArenaCommand) -> Result<()> {
    match cmd {
        ArenaCommand::Answer(a) => {
            let qs = a.questions.load()?;
            write_questions_meta(&a.out, &qs)?;
            answer_questions(&a.model, &a.name, &qs, &a.out, &a.generation.settings()?)?;
            Ok(())
        }
        ArenaCommand::Judge(a) => {
            let qs = a.questions.load()?;
            let opponent = match (a.baseline, a.vs) {
                (Some(b), None) => Opponent::Baseline(b),
                (None, Some(v)) => Opponent::Model(v),
                _ => bail!("give exactly one of --baseline and --vs"),
            };
            run_judge(&a.out, &qs, &a.model, &opponent, &a.judge)
        }
        ArenaCommand::Report(a) => {
            let rs = reports(&a.eval_dir, a.resamples.max(1), a.seed, None)?;
            println!("{}", write_reports(&a.eval_dir, &rs)?);
            Ok(())
        }
    }
}

/// Judges one pairing and reports failures plainly (finished games stay written).
pub fn run_judge(
    out: &std::path::Path,
    qs: &[Question],
    model: &str,
    opponent: &Opponent,
    settings: &JudgeSettings,
) -> Result<()> {
    let (client, prompt) = settings.client()?;
    let s = judge(out, qs, model, opponent, &client, &prompt, settings.parallel())?;
    eprintln!(
        "{model} vs {}: {} games judged now, {} already judged, {} skipped (too long), {} without both answers",
        opponent.name(),
        s.judged,
        s.already_done,
        s.skipped_too_long,
        s.missing_answers
    );
    if s.failed > 0 {
        bail!(
            "{} games failed after retries (the judged ones are saved): run the same command again to finish them",
            s.failed
        );
    }
    Ok(())
}
