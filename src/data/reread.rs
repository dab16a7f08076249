//! Re-reading the samples a saved loader state names: each shard that holds one is read once, up
//! to its last named line (a prepared shard: one read per document), the records tokenised in
//! parallel as the loader tokenised them, and every sample checked against its reference's
//! checksum — a shard edited since the checkpoint is an error naming the file and line, never a
//! silently different data order.

use super::pack::SampleState;
use super::prepared::PreparedShard;
use super::record::Record;
use super::sample::SampleBuilder;
use super::sample_ref::{fingerprint, SampleRef};
use super::shard::ShardLines;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The samples of `refs`, by `(file, item, part)`.
pub fn reread<'a>(
    files: &[PathBuf],
    refs: impl Iterator<Item = &'a SampleRef>,
    builder: &SampleBuilder,
) -> Result<HashMap<(u32, u64, u32), SampleState>> {
    let mut wanted: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut parts: BTreeMap<(u32, u64), BTreeSet<u32>> = BTreeMap::new();
    let mut checks: HashMap<(u32, u64, u32), u32> = HashMap::new();
    for r in refs {
        let Some(path) = files.get(r.file as usize) else {
            bail!(
                "the saved loader state names shard {} of {} (another data source?)",
                r.file,
                files.len()
            );
        };
        if let Some(&c) = checks.get(&r.key()) {
            if c != r.check {
                bail!(
                    "{}:{}: the saved loader state gives this sample two checksums (corrupt state?)",
                    path.display(),
                    r.item
                );
            }
        }
        checks.insert(r.key(), r.check);
        wanted.entry(r.file).or_default().insert(r.item);
        parts.entry((r.file, r.item)).or_default().insert(r.part);
    }
    let mut samples = HashMap::with_capacity(checks.len());
    let mut records: Vec<((u32, u64, u32), Record)> = Vec::new();
    for (&file, items) in &wanted {
        let path = &files[file as usize];
        if is_prepared(path) {
            let shard = PreparedShard::open(path)?;
            for &i in items {
                if i as usize >= shard.len() {
                    bail!(
                        "{}: has {} documents; the saved loader state names document {i}",
                        path.display(),
                        shard.len()
                    );
                }
                samples.insert((file, i, 0), shard.get(i as usize)?);
            }
        } else {
            let mut lines = ShardLines::open(path)?;
            for &i in items {
                let at = || format!("{}:{i}", path.display());
                // Record by record (blank lines are stepped over, so `skip_to` cannot land
                // just before a record that follows one).
                let line = loop {
                    match lines.next() {
                        Some(Ok(l)) if (l.line as u64) < i => continue,
                        Some(Ok(l)) if l.line as u64 == i => break l,
                        Some(Err(e)) => return Err(e),
                        _ => bail!(
                            "{}: the record the saved loader state names is gone (the shard changed since the \
                             checkpoint)",
                            at()
                        ),
                    }
                };
                let record = Record::parse(&line.text)
                    .map_err(|e| anyhow::anyhow!("{}: {e} (the shard changed since the checkpoint?)", at()))?;
                for &p in &parts[&(file, i)] {
                    records.push(((file, i, p), record.clone()));
                }
            }
        }
    }
    let built: Vec<((u32, u64, u32), Result<SampleState>)> = records
        .into_par_iter()
        .map(|(key, r)| {
            let s = builder.build_part(&r, key.2 as usize).and_then(|s| match s {
                Ok(s) => Ok(SampleState::from_sample(s)),
                Err(d) => bail!("the record is now dropped ({d:?})"),
            });
            (key, s)
        })
        .collect();
    for (key, s) in built {
        let path = files[key.0 as usize].display();
        let s = s.with_context(|| format!("{path}:{}: re-reading buffered sample {} of this record", key.1, key.2))?;
        samples.insert(key, s);
    }
    for (key, check) in checks {
        let Some(s) = samples.get(&key) else {
            bail!(
                "{}: the saved loader state names sample {} of prepared document {} (corrupt state?)",
                files[key.0 as usize].display(),
                key.2,
                key.1
            );
        };
        if fingerprint(s) != check {
            bail!(
                "{}:{}: this sample is not the one the saved loader state names (the shard, tokenizer or chat \
                 template changed since the checkpoint); the data order cannot be resumed exactly",
                files[key.0 as usize].display(),
                key.1
            );
        }
    }
    Ok(samples)
}

/// Prepared (pre-tokenised) shards are safetensors files.
pub fn is_prepared(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("safetensors")
}

/// The sample `r` names, out of what `reread` returned.
pub fn take(samples: &HashMap<(u32, u64, u32), SampleState>, r: &SampleRef) -> Result<SampleState> {
    samples.get(&r.key()).cloned().context("a named sample was not re-read")
}
