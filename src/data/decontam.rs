//! Decontamination against a benchmark, by the paper's rule: a sample is dropped when it shares
//! any n-gram (10 by default) of whitespace-separated tokens, compared case-insensitively, with a
//! benchmark question. Questions shorter than n words cannot match by this rule and are named in
//! a warning. The output is written under a temporary name and renamed into place only when
//! every record was read, so a failure leaves no partial directory; `dropped.jsonl` says for
//! each dropped record which question it matched, and on which words.

use super::record::Record;
use super::shard::{resolve_sources, ShardLines};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The paper's n.
pub const NGRAM: usize = 10;

/// Calls `f` with the hash and the words of each n-gram of `text` until it returns true.
fn ngrams<'a>(words: &'a [String], n: usize, mut f: impl FnMut(u64, &'a [String]) -> bool) -> bool {
    for w in words.windows(n) {
        let mut h = std::hash::DefaultHasher::new();
        w.hash(&mut h);
        if f(h.finish(), w) {
            return true;
        }
    }
    false
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_lowercase).collect()
}

/// Every string a benchmark record asks: the contents of its user turns (`messages`), or its
/// `question` / `prompt` / `instruction` field.
fn question_texts(v: &Value) -> Vec<String> {
    let mut out = vec![];
    if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
        for m in msgs {
            if m.get("role").and_then(Value::as_str) == Some("user") {
                if let Some(c) = m.get("content").and_then(Value::as_str) {
                    out.push(c.to_string());
                }
            }
        }
    }
    for key in ["question", "prompt", "instruction"] {
        if let Some(s) = v.get(key).and_then(Value::as_str) {
            out.push(s.to_string());
        }
    }
    out
}

/// A benchmark's n-grams, each naming the question it came from.
pub struct Benchmark {
    pub n: usize,
    /// n-gram hash → index into `questions`.
    grams: HashMap<u64, usize>,
    /// Each question's id (`id`, `question_id`, `task_id`, or FILE:LINE).
    pub questions: Vec<String>,
    /// Questions with fewer than `n` words (no n-gram can match them).
    pub too_short: Vec<String>,
}

impl Benchmark {
    /// Reads a benchmark file (JSONL).
    pub fn load(path: &Path, n: usize) -> Result<Self> {
        if n == 0 {
            bail!("--ngram must be at least 1");
        }
        let mut b = Self {
            n,
            grams: HashMap::new(),
            questions: vec![],
            too_short: vec![],
        };
        for line in ShardLines::open(path)? {
            let line = line?;
            let v: Value = serde_json::from_str(&line.text)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), line.line))?;
            let texts = question_texts(&v);
            if texts.is_empty() {
                bail!(
                    "{}:{}: no question found (expected user turns in \"messages\", or \"question\"/\"prompt\")",
                    path.display(),
                    line.line
                );
            }
            let id = ["id", "question_id", "task_id"]
                .iter()
                .find_map(|k| match v.get(*k) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| format!("{}:{}", path.display(), line.line));
            let q = b.questions.len();
            b.questions.push(id.clone());
            if texts.iter().all(|t| words(t).len() < n) {
                b.too_short.push(id);
            }
            for t in &texts {
                ngrams(&words(t), n, |h, _| {
                    b.grams.entry(h).or_insert(q);
                    false
                });
            }
        }
        if b.questions.is_empty() {
            bail!("{}: no benchmark questions", path.display());
        }
        Ok(b)
    }

    /// The question and the words of the first n-gram `text` shares with the benchmark.
    pub fn find(&self, text: &str) -> Option<(usize, String)> {
        let w = words(text);
        let mut found = None;
        ngrams(&w, self.n, |h, gram| match self.grams.get(&h) {
            Some(&q) => {
                found = Some((q, gram.join(" ")));
                true
            }
            None => false,
        });
        found
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DecontamReport {
    pub records: u64,
    pub kept: u64,
    pub dropped: u64,
    /// Benchmark questions too short to be matched.
    pub too_short: Vec<String>,
}

/// Copies every record of `sources` that shares no `n`-gram with `against` into `out` (one
/// `.jsonl` per input shard, lines unchanged); each dropped record goes to
/// `out/dropped.jsonl` with the question and words it matched. `out` must not exist yet (or be
/// empty, or `force`); nothing is left behind on an error.
pub fn decontaminate(sources: &[PathBuf], against: &Path, out: &Path, n: usize, force: bool) -> Result<DecontamReport> {
    let bench = Benchmark::load(against, n)?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() && !force {
        bail!(
            "--out {}: exists and is not empty (pass --force to replace it)",
            out.display()
        );
    }
    let mut report = crate::io::write_dir_atomic(out, force, |tmp| write_kept(sources, &bench, tmp))?;
    report.too_short = bench.too_short;
    Ok(report)
}

fn write_kept(sources: &[PathBuf], bench: &Benchmark, dir: &Path) -> Result<DecontamReport> {
    let mut dropped = std::io::BufWriter::new(std::fs::File::create(dir.join("dropped.jsonl"))?);
    let mut report = DecontamReport::default();
    for file in resolve_sources(sources)? {
        let stem = file.file_name().and_then(|n| n.to_str()).unwrap_or("shard");
        let stem = stem.split(".jsonl").next().unwrap_or(stem);
        let target = dir.join(format!("{stem}.jsonl"));
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&target).with_context(|| format!("creating {}", target.display()))?,
        );
        for line in ShardLines::open(&file)? {
            let line = line?;
            let rec = Record::parse(&line.text).map_err(|e| anyhow!("{}:{}: {e}", file.display(), line.line))?;
            report.records += 1;
            let text: Vec<&str> = rec.messages.iter().map(|m| m.content.as_str()).collect();
            match bench.find(&text.join("\n")) {
                Some((q, gram)) => {
                    report.dropped += 1;
                    let entry = json!({
                        "id": rec.id,
                        "source": format!("{}:{}", file.display(), line.line),
                        "question": bench.questions[q],
                        "ngram": gram,
                    });
                    writeln!(dropped, "{entry}")?;
                }
                None => {
                    report.kept += 1;
                    writeln!(w, "{}", line.text)?;
                }
            }
        }
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    dropped.flush()?;
    dropped.get_ref().sync_all()?;
    Ok(report)
}
