//! The work log of a synthesis run (`OUT/journal.jsonl`): one line per finished document —
//! kept with its record, or dropped with the reason — appended and fsynced the moment it is
//! done, so a run killed at any point loses only the requests in flight. A rerun reads it first
//! and skips every document it names; a torn last line (a kill mid-write) is cut off.

use super::worker::Usage;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One finished document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the input (0-based, across the sources in order).
    pub doc: u64,
    /// The document's id (its id field, or FILE:LINE).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it was dropped (`None`: kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The training record (kept documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    #[serde(default)]
    pub usage: Usage,
}

/// The appending side.
pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Journal {
    /// Opens (creating) `path` for appending after cutting a torn last line; returns the
    /// journal and the documents it already names.
    pub fn open(path: &Path) -> Result<(Self, DoneSet)> {
        let mut done = DoneSet::default();
        if path.exists() && !path.is_file() {
            bail!("{}: the journal must be a regular file", path.display());
        }
        if path.exists() {
            let good = scan(path, |_, e| {
                done.insert(e.doc);
                Ok(())
            })?;
            let len = std::fs::metadata(path)?.len();
            if good < len {
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                f.set_len(good)
                    .with_context(|| format!("cutting the torn last line of {}", path.display()))?;
                f.sync_all()?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Mutex::new(file),
            },
            done,
        ))
    }

    /// Appends `entry` and syncs it to disk.
    pub fn append(&self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// Calls `f(offset, entry)` for every complete entry of `path`; returns the length of the
/// complete part. A bad line that is not the last one is an error naming it.
pub fn scan(path: &Path, mut f: impl FnMut(u64, Entry) -> Result<()>) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut r = std::io::BufReader::new(file);
    let (mut offset, mut n, mut buf) = (0u64, 0usize, Vec::new());
    loop {
        buf.clear();
        let read = r.read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(offset);
        }
        n += 1;
        let complete = buf.last() == Some(&b'\n');
        match serde_json::from_slice::<Entry>(&buf) {
            Ok(e) if complete => f(offset, e)?,
            _ if offset + read as u64 == len => return Ok(offset), // torn by a kill: cut
            Err(e) => bail!("{}:{n}: not a journal entry ({e})", path.display()),
            Ok(_) => bail!("{}:{n}: not a journal entry", path.display()),
        }
        offset += read as u64;
    }
}

/// The entry at `offset` of `path`.
pub fn read_at(file: &mut std::io::BufReader<std::fs::File>, offset: u64) -> Result<Entry> {
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut line = Vec::new();
    file.read_until(b'\n', &mut line)?;
    Ok(serde_json::from_slice(&line)?)
}

/// Which documents are done: a bitset by document position (an eighth of a byte each).
#[derive(Default)]
pub struct DoneSet(Vec<u64>);

impl DoneSet {
    pub fn insert(&mut self, doc: u64) {
        let (w, b) = ((doc / 64) as usize, doc % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    pub fn contains(&self, doc: u64) -> bool {
        self.0
            .get((doc / 64) as usize)
            .is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| w.count_ones() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
