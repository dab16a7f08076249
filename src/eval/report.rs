//! The report of an execution benchmark: pass@k (the unbiased estimator per problem, the mean
//! over problems with a 95% percentile bootstrap interval), the samples by verdict, and each
//! problem's passes — `OUT/summary.json` (with `"pass@1"` as a fraction) and `OUT/summary.md`.

use super::exec_eval::{ExecEvalOptions, SampleResult};
use super::execute::Verdict;
use super::pass_at_k::{mean_with_interval, pass_at_k};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Bootstrap resamples of the interval.
const ROUNDS: usize = 2000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PassAtK {
    pub k: usize,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub model: String,
    pub benchmark: String,
    pub language: String,
    pub problems_source: String,
    pub problems: usize,
    pub samples_per_problem: usize,
    /// pass@1 as a fraction (the headline number).
    #[serde(rename = "pass@1")]
    pub pass_at_1: f64,
    pub pass_at_k: Vec<PassAtK>,
    /// Samples by verdict.
    pub verdicts: BTreeMap<String, usize>,
    /// Each problem's passed samples.
    pub passed: BTreeMap<String, usize>,
    /// Whether every program ran without a network.
    pub network_isolated: bool,
}

pub fn summarize(
    o: &ExecEvalOptions,
    problems: &[super::benchmark::Problem],
    results: &[SampleResult],
    per_problem: usize,
    source: &str,
) -> Summary {
    let mut passed: BTreeMap<String, usize> = problems.iter().map(|p| (p.id.clone(), 0)).collect();
    let mut verdicts: BTreeMap<String, usize> = Verdict::ALL.iter().map(|v| (v.name().to_string(), 0)).collect();
    for r in results {
        *verdicts.entry(r.execution.verdict.name().to_string()).or_default() += 1;
        if r.execution.verdict == Verdict::Passed {
            *passed.entry(r.task_id.clone()).or_default() += 1;
        }
    }
    let mut ks: Vec<usize> = o.ks.iter().copied().filter(|&k| k >= 1 && k <= per_problem).collect();
    if !ks.contains(&1) {
        ks.insert(0, 1);
    }
    ks.sort();
    ks.dedup();
    let pass_at: Vec<PassAtK> = ks
        .iter()
        .map(|&k| {
            let scores: Vec<f64> = passed
                .values()
                .map(|&c| pass_at_k(per_problem, c, k).unwrap_or(0.0))
                .collect();
            let (value, low, high) = mean_with_interval(&scores, 0.95, ROUNDS, 20261204);
            PassAtK { k, value, low, high }
        })
        .collect();
    Summary {
        model: o.name.clone(),
        benchmark: o.benchmark.name(),
        language: o.benchmark.language().name().to_string(),
        problems_source: source.to_string(),
        problems: problems.len(),
        samples_per_problem: per_problem,
        pass_at_1: pass_at.first().map_or(0.0, |p| p.value),
        pass_at_k: pass_at,
        verdicts,
        passed,
        network_isolated: results.iter().all(|r| r.execution.network_isolated),
    }
}

/// The markdown of a summary.
pub fn markdown(s: &Summary) -> String {
    let mut out = format!(
        "# {} on {} ({})\n\n{} problems from `{}`, {} sample(s) each.\n\n| metric | value | 95% interval |\n|---|---|---|\n",
        s.model, s.benchmark, s.language, s.problems, s.problems_source, s.samples_per_problem
    );
    for p in &s.pass_at_k {
        out.push_str(&format!(
            "| pass@{} | {:.1}% | {:.1}–{:.1}% |\n",
            p.k,
            100.0 * p.value,
            100.0 * p.low,
            100.0 * p.high
        ));
    }
    out.push_str("\n| verdict | samples |\n|---|---|\n");
    for (v, n) in &s.verdicts {
        out.push_str(&format!("| {v} | {n} |\n"));
    }
    if !s.network_isolated {
        out.push_str(
            "\nNote: the programs ran without a network namespace of their own (this machine's kernel refused \
             one): they could reach the network.\n",
        );
    }
    out
}

/// Writes `OUT/summary.json` and `OUT/summary.md` (atomically).
pub fn write(out: &Path, s: &Summary) -> Result<()> {
    std::fs::create_dir_all(out)?;
    crate::io::write_atomic(
        &out.join("summary.json"),
        (serde_json::to_string_pretty(s)? + "\n").as_bytes(),
    )?;
    crate::io::write_atomic(&out.join("summary.md"), markdown(s).as_bytes())?;
    Ok(())
}
