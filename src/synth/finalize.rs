//! Finishing a run, from the journal alone (so a rerun rewrites exactly the same files): the
//! kept records in input order, decontaminated against benchmark questions (the paper's 10-gram
//! rule), near duplicates removed (MinHash/LSH, within the output and against earlier outputs),
//! written as `.jsonl.zst` shards with `synth-manifest.json` (records and SHA-256 per shard; not
//! `manifest.json`, which names prepared shards to the loader); and the
//! summary: documents kept and dropped by reason, requests and tokens per model, and the cost
//! when prices are given. The shard directory is replaced atomically.

use super::config::SynthConfig;
use super::journal::{read_at, scan};
use super::minhash::LshIndex;
use super::worker::Usage;
use crate::data::decontam::Benchmark;
use crate::data::shard::{resolve_sources, ShardLines};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One output shard.
#[derive(Clone, Debug, Serialize)]
pub struct ShardEntry {
    pub file: String,
    pub records: u64,
    pub sha256: String,
}

/// What a run produced and spent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Documents the journal names.
    pub documents: u64,
    pub kept: u64,
    /// Dropped documents by reason (`recall:*`, `instruct:*`, `score:*`, `validate:*`,
    /// `decontam:*`, `dedup:*`).
    pub dropped: BTreeMap<String, u64>,
    pub usage: Usage,
    /// US dollars, when `price_*_per_mtok` are set.
    pub cost_usd: Option<f64>,
    pub shards: Vec<ShardEntry>,
    /// Documents whose requests failed this run (not in the journal: the next run retries them).
    pub failed: u64,
}

/// The text a record is compared by (its turns, joined).
fn record_text(record: &Value) -> String {
    record
        .get("messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|t| t.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Writes `out/shards/` and the summary from `journal`.
pub fn finalize(cfg: &SynthConfig, journal: &Path, out: &Path) -> Result<Summary> {
    let mut s = Summary::default();
    let mut kept: Vec<(u64, u64)> = vec![];
    if journal.exists() {
        scan(journal, |offset, e| {
            s.documents += 1;
            s.usage.generator.add(&e.usage.generator);
            s.usage.scorer.add(&e.usage.scorer);
            match e.dropped {
                Some(reason) => *s.dropped.entry(reason).or_default() += 1,
                None => kept.push((e.doc, offset)),
            }
            Ok(())
        })?;
    }
    kept.sort_unstable();
    kept.dedup_by_key(|k| k.0);
    let benchmarks = cfg
        .decontam
        .against
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or("benchmark".into(), |n| n.to_string_lossy().to_string());
            Ok((name, Benchmark::load(p, cfg.decontam.ngram)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let d = &cfg.dedup;
    let mut index = LshIndex::new(d.num_perm, d.bands, d.shingle_words);
    if !d.against.is_empty() {
        for file in resolve_sources(&d.against)? {
            for line in ShardLines::open_any(&file)? {
                let line = line?;
                let v: Value = serde_json::from_str(&line.text)
                    .with_context(|| format!("{}:{}: invalid JSON (dedup.against)", file.display(), line.line))?;
                index.insert(&record_text(&v));
            }
        }
    }
    let per_shard = cfg.output.records_per_shard as u64;
    let mut reader = match kept.is_empty() {
        true => None,
        false => Some(std::io::BufReader::new(
            std::fs::File::open(journal).with_context(|| format!("reading {}", journal.display()))?,
        )),
    };
    let shards_dir = out.join("shards");
    let (shards, dropped) = crate::io::write_dir_atomic(&shards_dir, true, |tmp| {
        let mut shards: Vec<ShardEntry> = vec![];
        let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
        let mut writer: Option<(PathBuf, zstd::Encoder<'static, std::fs::File>, u64)> = None;
        let close =
            |w: (PathBuf, zstd::Encoder<'static, std::fs::File>, u64), shards: &mut Vec<ShardEntry>| -> Result<()> {
                let (path, enc, n) = w;
                let f = enc.finish()?;
                f.sync_all()?;
                let bytes = std::fs::read(&path)?;
                shards.push(ShardEntry {
                    file: path
                        .file_name()
                        .map_or(String::new(), |n| n.to_string_lossy().to_string()),
                    records: n,
                    sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
                });
                Ok(())
            };
        for &(doc, offset) in &kept {
            let reader = reader.as_mut().context("the journal is open while records are kept")?;
            let e = read_at(reader, offset).with_context(|| format!("re-reading document {doc} of the journal"))?;
            let Some(record) = e.record else { continue };
            let text = record_text(&record);
            if let Some((name, _)) = benchmarks.iter().find(|(_, b)| b.find(&text).is_some()) {
                *dropped.entry(format!("decontam:{name}")).or_default() += 1;
                continue;
            }
            if index.contains(&text) {
                *dropped.entry("dedup:near_duplicate".into()).or_default() += 1;
                continue;
            }
            index.insert(&text);
            if writer.as_ref().is_some_and(|w| w.2 >= per_shard) {
                close(writer.take().context("checked")?, &mut shards)?;
            }
            if writer.is_none() {
                let path = tmp.join(format!("part-{:05}.jsonl.zst", shards.len()));
                let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                writer = Some((path, zstd::Encoder::new(f, 3)?, 0));
            }
            let w = writer.as_mut().context("opened above")?;
            serde_json::to_writer(&mut w.1, &record)?;
            w.1.write_all(b"\n")?;
            w.2 += 1;
        }
        if let Some(w) = writer.take() {
            close(w, &mut shards)?;
        }
        let manifest = serde_json::json!({"shards": shards, "records": shards.iter().map(|s| s.records).sum::<u64>()});
        crate::io::write_atomic(
            &tmp.join("synth-manifest.json"),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
        Ok((shards, dropped))
    })?;
    for (k, v) in dropped {
        *s.dropped.entry(k).or_default() += v;
    }
    s.kept = shards.iter().map(|x| x.records).sum();
    s.shards = shards;
    let price = |t: &super::worker::Tokens, e: &super::config::EndpointConfig| {
        (t.prompt as f64 * e.price_input_per_mtok + t.completion as f64 * e.price_output_per_mtok) / 1e6
    };
    let priced = [&cfg.generator, cfg.scorer()]
        .iter()
        .any(|e| e.price_input_per_mtok > 0.0 || e.price_output_per_mtok > 0.0);
    s.cost_usd = priced.then(|| price(&s.usage.generator, &cfg.generator) + price(&s.usage.scorer, cfg.scorer()));
    Ok(s)
}

/// The summary as markdown.
pub fn summary_markdown(s: &Summary, cfg: &SynthConfig) -> String {
    let mut md = format!(
        "# Synthesis summary\n\n{} documents, {} records kept in {} shards.\n\n| dropped because | documents |\n|---|---:|\n",
        s.documents,
        s.kept,
        s.shards.len()
    );
    for (k, v) in &s.dropped {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n| model | role | requests | prompt tokens | completion tokens |\n|---|---|---:|---:|---:|\n");
    for (role, e, t) in [
        ("generator", &cfg.generator, &s.usage.generator),
        ("scorer", cfg.scorer(), &s.usage.scorer),
    ] {
        md.push_str(&format!(
            "| {} | {role} | {} | {} | {} |\n",
            e.model, t.requests, t.prompt, t.completion
        ));
    }
    if let Some(c) = s.cost_usd {
        md.push_str(&format!("\nCost at the configured prices: ${c:.4}\n"));
    }
    if s.failed > 0 {
        md.push_str(&format!(
            "\n{} documents failed on endpoint errors this run; run again to retry them.\n",
            s.failed
        ));
    }
    md
}
