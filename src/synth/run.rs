//! A synthesis run: pages are read in windows (memory holds one window whatever the input's
//! size), recalled, and processed `generator.concurrency` at a time; each finished document is
//! journaled at once. Documents the journal already names are skipped, so a rerun after a kill
//! continues where the last one stopped and asks the endpoints nothing twice. At the end the
//! output is rebuilt from the journal (`finalize`).

use super::config::SynthConfig;
use super::finalize::{finalize, summary_markdown, Summary};
use super::journal::{Entry, Journal};
use super::prompts::Prompts;
use super::recall::recall;
use super::source::Pages;
use super::worker::{Doc, Pipeline, Usage};
use crate::arena::judge_client::{ClientRole, JudgeClient};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const GENERATOR: ClientRole = ClientRole {
    name: "generator",
    url_flag: "generator.url",
    model_flag: "generator.model",
};
const SCORER: ClientRole = ClientRole {
    name: "scorer",
    url_flag: "scorer.url",
    model_flag: "scorer.model",
};

/// The journal's name in the output directory.
pub const JOURNAL: &str = "journal.jsonl";

/// Runs (or continues) the pipeline of `cfg`; `progress`: draw a progress line on a terminal.
pub fn run(cfg: &SynthConfig, progress: bool) -> Result<Summary> {
    let out = &cfg.output.dir;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
    let journal_path = out.join(JOURNAL);
    let (journal, done) = Journal::open(&journal_path)?;
    let prompts = Prompts::load(&cfg.prompts)?;
    let generator = JudgeClient::new(cfg.generator.settings())?.with_role(GENERATOR);
    let scorer = JudgeClient::new(cfg.scorer().settings())?.with_role(SCORER);
    let pipeline = Pipeline {
        cfg,
        prompts: &prompts,
        generator: &generator,
        scorer: &scorer,
    };
    let mut pages = Pages::open(&cfg.input)?;
    let workers = cfg.generator.concurrency;
    let window = workers * 8;
    // With a known total (`input.max_docs`), a bar with an ETA; otherwise a counter (the input
    // is streamed, its length unknown until its end).
    let (bar, template) = match (progress, cfg.input.max_docs) {
        (false, _) => (indicatif::ProgressBar::hidden(), ""),
        (true, 0) => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {pos} documents · {per_sec} · {elapsed} · {msg}",
        ),
        (true, n) => (
            indicatif::ProgressBar::new(n),
            "{bar:30} {pos}/{len} documents · {per_sec} · ETA {eta} · {msg}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_position(done.len());
    let (failed, kept) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let mut ended = false;
    while !ended && !stop.load(Ordering::Relaxed) {
        let mut batch: Vec<Doc> = Vec::with_capacity(window);
        while batch.len() < window {
            let Some(doc) = pages.next_page()? else {
                ended = true;
                break;
            };
            if done.contains(doc.index) {
                continue;
            }
            match recall(&doc.text, &cfg.recall) {
                Ok(()) => batch.push(doc),
                Err(why) => {
                    journal.append(&Entry {
                        doc: doc.index,
                        source: doc.id,
                        url: doc.url,
                        dropped: Some(why.reason().into()),
                        detail: None,
                        record: None,
                        usage: Usage::default(),
                    })?;
                    bar.inc(1);
                }
            }
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers.min(batch.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batch.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let note = |msg: String| {
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(msg);
                    };
                    match pipeline.process(&batch[i]) {
                        Ok(entry) => {
                            let is_kept = entry.record.is_some();
                            match journal.append(&entry) {
                                Ok(()) => {
                                    kept.fetch_add(is_kept as u64, Ordering::Relaxed);
                                }
                                // A journal that cannot be written stops the run: finished
                                // work would otherwise be lost.
                                Err(e) => {
                                    *first_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            note(format!("{}: {e:#}", batch[i].id));
                        }
                    }
                    bar.inc(1);
                    bar.set_message(format!(
                        "{} kept this run, {} failed",
                        kept.load(Ordering::Relaxed),
                        failed.load(Ordering::Relaxed)
                    ));
                });
            }
        });
    }
    bar.finish_and_clear();
    let first_error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    if stop.load(Ordering::Relaxed) {
        bail!("stopped: {}", first_error.unwrap_or_default());
    }
    let mut summary = finalize(cfg, &journal_path, out)?;
    summary.failed = failed.load(Ordering::Relaxed);
    crate::io::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    crate::io::write_atomic(&out.join("summary.md"), summary_markdown(&summary, cfg).as_bytes())?;
    if let Some(e) = first_error {
        bail!(
            "{} documents failed on endpoint errors (first: {e}); the rest is written to {}; run again to retry them",
            summary.failed,
            out.join("shards").display()
        );
    }
    Ok(summary)
}
