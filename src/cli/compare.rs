//! `syncoder compare`: did the fine-tune beat its base model? Answers with both models (cached),
//! judges tuned against base in two games per question, optionally both against a stored
//! baseline, and reports.

use super::arena::{run_judge, GenerationArgs, QuestionArgs};
use crate::arena::answers::answer_questions;
use crate::arena::evaluate::{reports, write_questions_meta, write_reports, Opponent};
use crate::arena::JudgeSettings;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The base model directory.
    #[arg(long)]
    pub base: PathBuf,
    /// The fine-tuned model directory (e.g. checkpoints/RUN/step-N).
    #[arg(long)]
    pub tuned: PathBuf,
    /// Names in the answer and judgment files (default: `base`, `tuned`).
    #[arg(long, default_value = "base")]
    pub base_name: String,
    #[arg(long, default_value = "tuned")]
    pub tuned_name: String,
    #[command(flatten)]
    pub questions: QuestionArgs,
    /// Also judge each model against this stored baseline (e.g. gpt-4-turbo-2024-04-09).
    #[arg(long)]
    pub baseline: Option<String>,
    /// The evaluation directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub judge: JudgeSettings,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Bootstrap resamples of the questions.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub report_seed: u64,
}

fn check_dir(p: &Path, flag: &str) -> Result<()> {
    if !p.join("config.json").is_file() {
        bail!("{flag} {}: not a model directory (no config.json)", p.display());
    }
    Ok(())
}

pub fn run(a: CompareArgs) -> Result<()> {
    check_dir(&a.base, "--base")?;
    check_dir(&a.tuned, "--tuned")?;
    if a.base_name == a.tuned_name {
        bail!("--base-name and --tuned-name must differ");
    }
    let qs = a.questions.load()?;
    write_questions_meta(&a.out, &qs)?;
    let settings = a.generation.settings()?;
    answer_questions(&a.tuned, &a.tuned_name, &qs, &a.out, &settings)?;
    answer_questions(&a.base, &a.base_name, &qs, &a.out, &settings)?;
    run_judge(
        &a.out,
        &qs,
        &a.tuned_name,
        &Opponent::Model(a.base_name.clone()),
        &a.judge,
    )?;
    if let Some(b) = &a.baseline {
        for name in [&a.tuned_name, &a.base_name] {
            run_judge(&a.out, &qs, name, &Opponent::Baseline(b.clone()), &a.judge)?;
        }
    }
    let mut rs = reports(&a.out, a.resamples.max(1), a.report_seed, None)?;
    // The head-to-head first.
    rs.sort_by_key(|r| !(r.model == a.tuned_name && r.opponent == a.base_name));
    println!("{}", write_reports(&a.out, &rs)?);
    Ok(())
}
