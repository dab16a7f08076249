//! Corpus statistics: records, tokens, supervised share, sample-length percentiles and the
//! language histogram, computed in one streaming pass (records are tokenised in parallel,
//! chunk by chunk; memory holds one chunk plus one length per sample).

use super::record::Record;
use super::sample::{Dropped, SampleBuilder};
use super::shard::{resolve_sources, ShardLines};
use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Records tokenised per parallel chunk.
const CHUNK: usize = 4096;

#[derive(Clone, Debug, Default, Serialize)]
pub struct InspectReport {
    pub files: usize,
    pub records: u64,
    pub bad_records: u64,
    pub samples: u64,
    pub dropped_too_long: u64,
    pub dropped_no_supervised: u64,
    pub tokens: u64,
    pub supervised_tokens: u64,
    /// Sample lengths in tokens: p50, p90, p99, max.
    pub length_p50: u32,
    pub length_p90: u32,
    pub length_p99: u32,
    pub length_max: u32,
    pub languages: BTreeMap<String, u64>,
}

impl InspectReport {
    pub fn supervised_ratio(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.supervised_tokens as f64 / self.tokens as f64
        }
    }
}

/// Inspects every record under `sources`; bad records are counted (and reported through
/// `on_bad`) rather than fatal.
pub fn inspect(sources: &[PathBuf], builder: &SampleBuilder, mut on_bad: impl FnMut(&str)) -> Result<InspectReport> {
    let files = resolve_sources(sources)?;
    let mut r = InspectReport {
        files: files.len(),
        ..Default::default()
    };
    let mut lengths: Vec<u32> = vec![];
    for file in &files {
        let mut lines = ShardLines::open(file)?;
        loop {
            let chunk: Vec<_> = lines.by_ref().take(CHUNK).collect::<Result<_>>()?;
            if chunk.is_empty() {
                break;
            }
            let results: Vec<_> = chunk
                .par_iter()
                .map(|l| match Record::parse(&l.text) {
                    Err(e) => Err(format!("{}:{}: {e}", file.display(), l.line)),
                    Ok(rec) => Ok((
                        rec.language.clone(),
                        builder
                            .build_all(&rec)
                            .with_context(|| format!("{}:{}", file.display(), l.line)),
                    )),
                })
                .collect();
            for res in results {
                r.records += 1;
                match res {
                    Err(msg) => {
                        r.bad_records += 1;
                        on_bad(&msg);
                    }
                    Ok((lang, built)) => {
                        *r.languages.entry(lang.unwrap_or_else(|| "(none)".into())).or_default() += 1;
                        for sample in built? {
                            match sample {
                                Ok(s) => {
                                    r.samples += 1;
                                    r.tokens += s.ids.len() as u64;
                                    r.supervised_tokens += s.supervised_tokens() as u64;
                                    lengths.push(s.ids.len() as u32);
                                }
                                Err(Dropped::TooLong) => r.dropped_too_long += 1,
                                Err(Dropped::NoSupervisedTokens) => r.dropped_no_supervised += 1,
                            }
                        }
                    }
                }
            }
        }
    }
    lengths.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lengths.is_empty() {
            0
        } else {
            lengths[((lengths.len() - 1) as f64 * p).round() as usize]
        }
    };
    (r.length_p50, r.length_p90, r.length_p99, r.length_max) = (pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    Ok(r)
}
