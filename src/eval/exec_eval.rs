//! `syncoder exec-eval`: one execution benchmark for one model (or samples file), end to end —
//! problems, samples, every sample's program run in the sandbox (in parallel, bounded), its
//! result appended and fsynced to `OUT/results/NAME.jsonl` as it finishes (a killed run
//! resumes: samples already judged are not run again, and a torn last line is cut), then the
//! report (`report`).

use super::benchmark::{self, Benchmark, Problem};
use super::execute::{execute, Execution, RunLimits};
use super::program::program;
use super::report::{self, Summary};
use super::samples::{self, Sample};
use crate::arena::answers::{AnswerModel, AnswerSettings, AnswerSource};
use crate::io::jsonl::AppendLog;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where the samples come from.
pub enum SampleSource {
    /// A samples file (EvalPlus's format).
    File(PathBuf),
    /// A chat model, answering `n` times per problem, asked through `template`
    /// (`samples::DEFAULT_TEMPLATE` or `--prompt-template`).
    Model {
        source: Box<AnswerSource>,
        n: usize,
        settings: AnswerSettings,
        template: String,
    },
    /// A base model loaded here, continuing each prompt `n` times (`completions`).
    Completion {
        model: AnswerModel,
        n: usize,
        settings: AnswerSettings,
    },
}

pub struct ExecEvalOptions {
    pub benchmark: Benchmark,
    /// `--problems` (default: the benchmark's dataset).
    pub problems: Option<String>,
    pub out: PathBuf,
    /// The model's name in the results (file names, report).
    pub name: String,
    pub samples: SampleSource,
    /// The k of pass@k to report (those above the samples per problem are left out).
    pub ks: Vec<usize>,
    pub limits: RunLimits,
    /// Programs run at once.
    pub jobs: usize,
}

/// One sample's result: a line of `OUT/results/NAME.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleResult {
    pub benchmark: String,
    pub task_id: String,
    pub sample: usize,
    /// SHA-256 of the program run: a result is reused only for the same program.
    pub program_sha256: String,
    #[serde(flatten)]
    pub execution: Execution,
}

pub fn results_path(out: &Path, name: &str) -> PathBuf {
    out.join("results").join(format!("{name}.jsonl"))
}

/// Runs the benchmark; returns the summary (also written to `OUT/summary.json` and
/// `OUT/summary.md`).
pub fn run(o: &ExecEvalOptions) -> Result<Summary> {
    let lang = o.benchmark.language();
    if let Some(tool) = lang.missing_tool() {
        bail!(
            "{}: `{tool}` is not installed here (on PATH), so {} programs cannot run: skipped. Install its \
             toolchain ({}) and run again",
            o.benchmark.name(),
            lang.name(),
            lang.toolchain().needs.join(", ")
        );
    }
    let src = o.problems.clone().unwrap_or_else(|| o.benchmark.default_source());
    let problems = benchmark::load(o.benchmark, &src)?;
    let (samples, per_problem) = match &o.samples {
        SampleSource::File(path) => samples::read_file(path, &problems)?,
        SampleSource::Model {
            source,
            n,
            settings,
            template,
        } => (
            samples::generate(source, &o.name, &problems, *n, &o.out, settings, template)?,
            *n,
        ),
        SampleSource::Completion { model, n, settings } => (
            super::completions::generate(model, &o.name, &problems, *n, &o.out, settings)?,
            *n,
        ),
    };
    let by_id: HashMap<&str, &Problem> = problems.iter().map(|p| (p.id.as_str(), p)).collect();
    let results = run_samples(o, &by_id, &samples, per_problem)?;
    let summary = report::summarize(o, &problems, &results, per_problem, &src);
    report::write(&o.out, &summary)?;
    Ok(summary)
}

fn digest(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Runs every sample not judged yet (for its program) and returns every sample's result.
fn run_samples(
    o: &ExecEvalOptions,
    problems: &HashMap<&str, &Problem>,
    samples: &[Sample],
    per_problem: usize,
) -> Result<Vec<SampleResult>> {
    let path = results_path(&o.out, &o.name);
    let bench = o.benchmark.name();
    let programs: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            let p = problems[s.task_id.as_str()];
            let text = program(p, &s.text);
            let sha = digest(&text);
            (text, sha)
        })
        .collect();
    // Results of the same program for the same sample are kept; anything else (another
    // benchmark's, a changed sample's) is dropped from the file.
    let wanted: HashMap<(String, usize), String> = samples
        .iter()
        .zip(&programs)
        .map(|(s, (_, sha))| ((s.task_id.clone(), s.index), sha.clone()))
        .collect();
    let (log, kept) = AppendLog::open_retaining::<SampleResult>(&path, |l| {
        let r = &l.value;
        Ok(r.benchmark == bench && wanted.get(&(r.task_id.clone(), r.sample)) == Some(&r.program_sha256))
    })?;
    let mut done: HashMap<(String, usize), SampleResult> = kept
        .into_iter()
        .map(|l| ((l.value.task_id.clone(), l.value.sample), l.value))
        .collect();
    let todo: Vec<usize> = (0..samples.len())
        .filter(|&i| !done.contains_key(&(samples[i].task_id.clone(), samples[i].index)))
        .collect();
    if !done.is_empty() {
        eprintln!(
            "{}: {} samples judged before, {} to run",
            o.name,
            done.len(),
            todo.len()
        );
    }
    let log = Mutex::new(log);
    let fresh: Mutex<Vec<SampleResult>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    let bar = crate::io::progress::counting_bar(&format!("running {bench}"), "programs", todo.len() as u64);
    std::thread::scope(|scope| {
        for _ in 0..o.jobs.clamp(1, todo.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let s = &samples[todo[i]];
                let (text, sha) = &programs[todo[i]];
                let outcome = execute(problems[s.task_id.as_str()].language, text, &o.limits)
                    .with_context(|| format!("running {}", s.id(per_problem)))
                    .and_then(|execution| {
                        let r = SampleResult {
                            benchmark: bench.clone(),
                            task_id: s.task_id.clone(),
                            sample: s.index,
                            program_sha256: sha.clone(),
                            execution,
                        };
                        let mut log = log.lock().map_err(|_| anyhow::anyhow!("results log: poisoned lock"))?;
                        log.append(&r)?;
                        Ok(r)
                    });
                bar.inc(1);
                match outcome {
                    Ok(r) => {
                        if let Ok(mut f) = fresh.lock() {
                            f.push(r);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().unwrap_or(None) {
        return Err(e);
    }
    for r in fresh.into_inner().unwrap_or_default() {
        done.insert((r.task_id.clone(), r.sample), r);
    }
    let mut all: Vec<SampleResult> = done.into_values().collect();
    all.sort_by(|a, b| (&a.task_id, a.sample).cmp(&(&b.task_id, b.sample)));
    if all.iter().any(|r| !r.execution.network_isolated) {
        eprintln!(
            "note: programs ran without a network namespace of their own (the kernel refused one): they could \
             reach the network"
        );
    }
    Ok(all)
}
