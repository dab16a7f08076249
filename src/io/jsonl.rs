//! Append-only JSONL files that survive a kill (training metrics, answers, judgments): each
//! record is one line written in one write and fsynced. On opening, an unparsable last line is a
//! write torn by a crash: it is dropped and cut from the file; a complete but unterminated last
//! line gets its newline; an unparsable line anywhere else is an error naming the file and line.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One record of a log: its 1-based line number, its text as written, and its value.
#[derive(Clone, Debug)]
pub struct Line<T> {
    pub number: usize,
    pub text: String,
    pub value: T,
}

/// The records of `bytes` and how many leading bytes hold complete records (blank lines skipped).
fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<(Vec<Line<T>>, usize)> {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    let (mut out, mut offset) = (Vec::new(), 0);
    for (i, line) in lines.iter().enumerate() {
        let text = String::from_utf8_lossy(line);
        if !text.trim().is_empty() {
            match serde_json::from_str::<T>(&text) {
                Ok(value) => out.push(Line {
                    number: i + 1,
                    text: text.trim_end_matches(['\n', '\r']).to_string(),
                    value,
                }),
                // Unparsable and nothing after it: a torn last write.
                Err(_) if lines[i + 1..].iter().all(|l| l.iter().all(u8::is_ascii_whitespace)) => {
                    return Ok((out, offset))
                }
                Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
            }
        }
        offset += line.len();
    }
    Ok((out, bytes.len()))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The records of `path` (none if it does not exist), leaving the file as it is.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_lines(path)?.into_iter().map(|l| l.value).collect())
}

/// The records of `path` with their line numbers and text, leaving the file as it is.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<Line<T>>> {
    Ok(parse(path, &read_bytes(path)?)?.0)
}

/// An open JSONL file to append records to.
#[derive(Debug)]
pub struct AppendLog {
    path: PathBuf,
    file: File,
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

impl AppendLog {
    /// Opens (creating it and its directories) `path` for appending, repairs its end, and
    /// returns the records already in it.
    pub fn open<T: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<T>)> {
        let (log, lines) = Self::open_lines(path)?;
        Ok((log, lines.into_iter().map(|l| l.value).collect()))
    }

    /// [`AppendLog::open`], keeping only the records `keep` accepts: the others (and a torn
    /// last line) are removed from the file by rewriting it atomically with the kept lines as
    /// they were written.
    pub fn open_retaining<T: DeserializeOwned>(
        path: &Path,
        mut keep: impl FnMut(&Line<T>) -> Result<bool>,
    ) -> Result<(Self, Vec<Line<T>>)> {
        let bytes = read_bytes(path)?;
        let (lines, _) = parse::<T>(path, &bytes)?;
        let mut kept = Vec::with_capacity(lines.len());
        for l in lines {
            if keep(&l)? {
                kept.push(l);
            }
        }
        let mut text: String = kept.iter().map(|l| format!("{}\n", l.text)).collect();
        if kept.is_empty() {
            text.clear();
        }
        if text.as_bytes() != bytes.as_slice() {
            std::fs::create_dir_all(parent_of(path))
                .with_context(|| format!("creating {}", parent_of(path).display()))?;
            super::write_atomic(path, text.as_bytes())?;
        }
        let (log, _) = Self::open_lines::<serde::de::IgnoredAny>(path)?;
        Ok((log, kept))
    }

    fn open_lines<T: DeserializeOwned>(path: &Path) -> Result<(Self, Vec<Line<T>>)> {
        let parent = parent_of(path);
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let existed = path.exists();
        let bytes = read_bytes(path)?;
        let (records, keep) = parse(path, &bytes)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if keep < bytes.len() {
            file.set_len(keep as u64)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cutting the torn last line of {}", path.display()))?;
        } else if bytes.last().is_some_and(|b| *b != b'\n') {
            file.write_all(b"\n")
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if !existed {
            // Make the new directory entry durable (best effort).
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            records,
        ))
    }

    /// Writes `value` as one line in one write and fsyncs it.
    pub fn append<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_all())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn torn_last_line_is_dropped_and_bad_lines_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a/x.jsonl");
        let (mut log, none) = AppendLog::open::<Value>(&p).unwrap();
        assert!(none.is_empty());
        log.append(&json!({"a": 1})).unwrap();
        log.append(&json!({"a": 2})).unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"a\": 3").unwrap();
        assert_eq!(read::<Value>(&p).unwrap().len(), 2);
        let (_, v) = AppendLog::open::<Value>(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("}\n"));
        // A complete last line without its newline is kept and terminated.
        f.write_all(b"{\"a\": 3}").unwrap();
        let (_, v) = AppendLog::open::<Value>(&p).unwrap();
        assert_eq!(v.len(), 3);
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("3}\n"));
        std::fs::write(&p, "{\"a\": 1}\nnot json\n{\"a\": 2}\n").unwrap();
        let e = read::<Value>(&p).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:2"), "{e}");
    }

    #[test]
    fn retaining_keeps_the_written_text_of_kept_lines_only() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.jsonl");
        // Key order and spacing as written, a line to drop, and a torn last write.
        std::fs::write(&p, "{\"step\": 1, \"b\": 2}\n{\"step\":2}\n{\"step\": 3, \"z\"").unwrap();
        let (mut log, kept) =
            AppendLog::open_retaining::<Value>(&p, |l| Ok(l.value["step"].as_u64() != Some(2))).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].number, 1);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"step\": 1, \"b\": 2}\n");
        log.append(&json!({"step": 4})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"step\": 1, \"b\": 2}\n{\"step\":4}\n"
        );
        // Keeping everything leaves the file untouched; an error from `keep` is returned.
        let (_, kept) = AppendLog::open_retaining::<Value>(&p, |_| Ok(true)).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(AppendLog::open_retaining::<Value>(&p, |_| anyhow::bail!("no step")).is_err());
    }
}
