//! Decontamination against a benchmark, by the paper's rule: a sample is dropped when it shares
//! any 10-gram of whitespace-separated tokens (compared case-insensitively) with a benchmark
//! question.

use super::record::Record;
use super::shard::{resolve_sources, ShardLines};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const NGRAM: usize = 10;

fn ngram_hashes(text: &str, mut f: impl FnMut(u64) -> bool) -> bool {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    for w in words.windows(NGRAM) {
        let mut h = std::hash::DefaultHasher::new();
        w.hash(&mut h);
        if f(h.finish()) {
            return true;
        }
    }
    false
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

/// The 10-gram set of a benchmark file (JSONL).
pub fn benchmark_ngrams(path: &Path) -> Result<HashSet<u64>> {
    let mut set = HashSet::new();
    let mut questions = 0;
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
        for t in texts {
            questions += 1;
            ngram_hashes(&t, |h| {
                set.insert(h);
                false
            });
        }
    }
    if questions == 0 {
        bail!("{}: no benchmark questions", path.display());
    }
    Ok(set)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DecontamReport {
    pub records: u64,
    pub kept: u64,
    pub dropped: u64,
}

/// Copies every record of `sources` that shares no 10-gram with `against` into `out` (one
/// `.jsonl` per input shard, lines unchanged); dropped records' ids go to `out/dropped.txt`.
pub fn decontaminate(sources: &[PathBuf], against: &Path, out: &Path) -> Result<DecontamReport> {
    let bench = benchmark_ngrams(against)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut dropped_ids = std::io::BufWriter::new(std::fs::File::create(out.join("dropped.txt"))?);
    let mut report = DecontamReport::default();
    for file in resolve_sources(sources)? {
        let stem = file.file_name().and_then(|n| n.to_str()).unwrap_or("shard");
        let stem = stem.split(".jsonl").next().unwrap_or(stem);
        let target = out.join(format!("{stem}.jsonl"));
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&target).with_context(|| format!("creating {}", target.display()))?,
        );
        for line in ShardLines::open(&file)? {
            let line = line?;
            let rec = Record::parse(&line.text).map_err(|e| anyhow!("{}:{}: {e}", file.display(), line.line))?;
            report.records += 1;
            let text: Vec<&str> = rec.messages.iter().map(|m| m.content.as_str()).collect();
            if ngram_hashes(&text.join("\n"), |h| bench.contains(&h)) {
                report.dropped += 1;
                writeln!(
                    dropped_ids,
                    "{}",
                    rec.id.unwrap_or_else(|| format!("{}:{}", file.display(), line.line))
                )?;
            } else {
                report.kept += 1;
                writeln!(w, "{}", line.text)?;
            }
        }
        w.flush()?;
    }
    dropped_ids.flush()?;
    Ok(report)
}
