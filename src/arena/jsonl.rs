//! Append-only JSONL files that survive a kill: each record is one line written whole and
//! fsynced; on reading, a torn last line (a kill mid-write) is dropped and cut from the file,
//! while a bad line anywhere else is an error naming the file and line.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The records of `path` (none if it does not exist), repairing a torn last line.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let end = bytes[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
        let line = &bytes[pos..end.unwrap_or(bytes.len())];
        let parsed = std::str::from_utf8(line)
            .map_err(anyhow::Error::from)
            .and_then(|s| Ok(serde_json::from_str::<T>(s)?));
        match (parsed, end) {
            (Ok(v), Some(e)) => {
                out.push(v);
                pos = e + 1;
            }
            (_, None) => {
                // The last line has no newline: a write cut short. Drop it from the file.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.set_len(pos as u64)
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("truncating the torn last line of {}", path.display()))?;
                break;
            }
            (Err(_), Some(_)) if line.iter().all(|b| b.is_ascii_whitespace()) => pos = end.unwrap_or(pos) + 1,
            (Err(e), Some(_)) => bail!("{}:{line_no}: {e}", path.display()),
        }
    }
    Ok(out)
}

/// An open JSONL file to append records to.
pub struct AppendLog {
    path: PathBuf,
    file: std::fs::File,
}

impl AppendLog {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes `value` as one line and fsyncs it.
    pub fn append<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_dropped_and_bad_lines_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a/x.jsonl");
        let mut log = AppendLog::open(&p).unwrap();
        log.append(&serde_json::json!({"a": 1})).unwrap();
        log.append(&serde_json::json!({"a": 2})).unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"a\": 3").unwrap();
        let v: Vec<serde_json::Value> = read(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"));
        std::fs::write(&p, "{\"a\": 1}\nnot json\n{\"a\": 2}\n").unwrap();
        let e = read::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:2"), "{e}");
    }
}
