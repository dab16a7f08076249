//! CodeArena evaluation: questions, model answers, the pairwise LLM judge (two games with
//! positions swapped), verdicts, CodeArena scores with bootstrap confidence intervals and a
//! Bradley–Terry win probability, and the reports.

pub mod answers;
pub mod evaluate;
pub mod games;
pub mod jsonl;
pub mod judge_client;
pub mod judge_prompt;
#[cfg(test)]
mod judge_test_server;
pub mod questions;
pub mod report;
pub mod score;
pub mod stats;
pub mod verdict;

/// A progress bar with ETA counting `len` items of `unit` ("answering NAME [===>  ] 3/7 questions").
pub(crate) fn counting_bar(verb: &str, unit: &str, prefix: &str, len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    let template =
        format!("{verb} {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{elapsed_precise}} < ETA {{eta_precise}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
