//! Checking every record of a set of shards, reporting each bad one by file and line.

use super::record::Record;
use super::shard::{resolve_sources, ShardLines};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Counts of a validation pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidateReport {
    pub files: usize,
    pub records: usize,
    pub bad: usize,
}

/// Validates every line of every shard under `sources`, calling `on_bad(file, line, message)`
/// for each bad record or unreadable part of a file (line 0 for whole-file errors).
pub fn validate_sources(sources: &[PathBuf], mut on_bad: impl FnMut(&Path, usize, &str)) -> Result<ValidateReport> {
    let files = resolve_sources(sources)?;
    let mut report = ValidateReport {
        files: files.len(),
        ..Default::default()
    };
    for file in &files {
        let lines = match ShardLines::open(file) {
            Ok(l) => l,
            Err(e) => {
                report.bad += 1;
                on_bad(file, 0, &format!("{e:#}"));
                continue;
            }
        };
        for line in lines {
            match line {
                Ok(l) => {
                    report.records += 1;
                    if let Err(e) = Record::parse(&l.text) {
                        report.bad += 1;
                        on_bad(file, l.line, &e.to_string());
                    }
                }
                Err(e) => {
                    report.bad += 1;
                    on_bad(file, 0, &format!("{e:#}"));
                }
            }
        }
    }
    Ok(report)
}
