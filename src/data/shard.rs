//! Streaming the records of one shard file as JSON text, whatever its format (JSONL, zstd- or
//! gzip-compressed JSONL, Parquet), with line (or row) numbers and errors that name the file and
//! line. Nothing is ever read whole: memory stays at one line (one row group for Parquet).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One non-blank line of a shard: its 1-based line number and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    pub line: usize,
    pub text: String,
}

/// Shard formats syncoder reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardFormat {
    Jsonl,
    JsonlZstd,
    JsonlGzip,
    /// One record per row; columns `messages` (list of {role, content}) or `instruction` and
    /// `response`, plus optional `system`, `id`, `language`.
    Parquet,
}

impl ShardFormat {
    /// The format a file name implies, if any.
    pub fn of(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".jsonl") {
            Some(Self::Jsonl)
        } else if name.ends_with(".jsonl.zst") || name.ends_with(".jsonl.zstd") {
            Some(Self::JsonlZstd)
        } else if name.ends_with(".jsonl.gz") {
            Some(Self::JsonlGzip)
        } else if name.ends_with(".parquet") {
            Some(Self::Parquet)
        } else {
            None
        }
    }
}

/// Iterator over the non-blank lines of a shard. Yields an error (and then stops) on unreadable
/// or truncated data, invalid UTF-8, or a shard holding no line at all.
pub struct ShardLines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Set for Parquet shards: rows instead of lines.
    rows: Option<parquet::record::reader::RowIter<'static>>,
    line: usize,
    seen_any: bool,
    done: bool,
    buf: Vec<u8>,
}

impl ShardLines {
    /// A shard of training records (a Parquet file must have their columns).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// A file of records of any shape (benchmark problems, samples): every Parquet column
    /// becomes a JSON field.
    pub fn open_any(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, training: bool) -> Result<Self> {
        let format = ShardFormat::of(path).with_context(|| {
            format!(
                "{}: unsupported shard format (expected .jsonl, .jsonl.zst, .jsonl.gz or .parquet)",
                path.display()
            )
        })?;
        let file = File::open(path).with_context(|| format!("opening shard {}", path.display()))?;
        let raw: Box<dyn Read + Send> = match format {
            ShardFormat::Jsonl => Box::new(file),
            ShardFormat::JsonlZstd => Box::new(
                zstd::stream::read::Decoder::new(file)
                    .with_context(|| format!("{}: not a zstd stream", path.display()))?,
            ),
            ShardFormat::JsonlGzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            ShardFormat::Parquet => {
                return Ok(Self {
                    path: path.to_path_buf(),
                    reader: Box::new(std::io::empty()),
                    rows: Some(parquet_rows(path, file, training)?),
                    line: 0,
                    seen_any: false,
                    done: false,
                    buf: Vec::new(),
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader: Box::new(BufReader::with_capacity(1 << 16, raw)),
            rows: None,
            line: 0,
            seen_any: false,
            done: false,
            buf: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Skips forward until `line` lines (rows) have been read, to resume inside a shard. `line`
    /// is the number of the last record read before, so it is never a blank line and reading
    /// record by record lands on it exactly.
    pub fn skip_to(&mut self, line: usize) -> Result<()> {
        while self.line < line {
            if self.next_line()?.is_none() {
                bail!(
                    "{}: has {} lines, cannot resume at line {line}",
                    self.path.display(),
                    self.line
                );
            }
        }
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<SourceLine>> {
        if let Some(rows) = self.rows.as_mut() {
            return match rows.next() {
                None if !self.seen_any => bail!("{}: empty shard (no rows)", self.path.display()),
                None => Ok(None),
                Some(row) => {
                    self.line += 1;
                    self.seen_any = true;
                    let row = row.with_context(|| {
                        format!("{}: row {}: unreadable (corrupt file?)", self.path.display(), self.line)
                    })?;
                    Ok(Some(SourceLine {
                        line: self.line,
                        text: row.to_json_value().to_string(),
                    }))
                }
            };
        }
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).with_context(|| {
                format!(
                    "{}:{}: reading failed (truncated or corrupt file?)",
                    self.path.display(),
                    self.line + 1
                )
            })?;
            if n == 0 {
                if !self.seen_any {
                    bail!("{}: empty shard (no records)", self.path.display());
                }
                return Ok(None);
            }
            self.line += 1;
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.seen_any = true;
            let text = match std::str::from_utf8(&self.buf) {
                Ok(s) => s.to_owned(),
                Err(e) => bail!(
                    "{}:{}: invalid UTF-8 at byte {} of the line",
                    self.path.display(),
                    self.line,
                    e.valid_up_to()
                ),
            };
            return Ok(Some(SourceLine { line: self.line, text }));
        }
    }
}

impl Iterator for ShardLines {
    type Item = Result<SourceLine>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_line() {
            Ok(Some(l)) => Some(Ok(l)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Opens a Parquet file's row iterator, after checking it has the training record's columns
/// when `training`.
fn parquet_rows(path: &Path, file: File, training: bool) -> Result<parquet::record::reader::RowIter<'static>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader =
        SerializedFileReader::new(file).with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<String> = schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let has = |c: &str| columns.iter().any(|x| x == c);
    if training && !(has("messages") || has("instruction") && has("response")) {
        bail!(
            "{}: a Parquet shard needs a `messages` column or `instruction` and `response` columns; it has: {}",
            path.display(),
            columns.join(", ")
        );
    }
    Ok(parquet::record::reader::RowIter::from_file_into(Box::new(reader)))
}

/// Expands sources into shard files: a file is itself; a directory gives every shard file below
/// it, sorted; a glob pattern (`*`, `?`, `[...]`) gives its matching shard files, sorted; an
/// `hf://datasets/ORG/NAME[/GLOB]` source gives its files in the Hugging Face cache.
pub fn resolve_sources(sources: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for src in sources {
        let given = src.to_string_lossy();
        let src = if given.starts_with(super::hub::PREFIX) {
            &super::hub::fetch(&given)?
        } else {
            src
        };
        let text = src.to_string_lossy();
        if !src.exists() && text.contains(['*', '?', '[']) {
            let mut found = vec![];
            for entry in glob::glob(&text).with_context(|| format!("{text}: invalid glob pattern"))? {
                let path = entry.with_context(|| format!("{text}: reading a match"))?;
                if path.is_file() && ShardFormat::of(&path).is_some() {
                    found.push(path);
                } else if path.is_dir() {
                    walk(&path, &mut found)?;
                }
            }
            if found.is_empty() {
                bail!("{text}: the pattern matches no shard file");
            }
            found.sort();
            out.extend(found);
        } else if src.is_file() {
            out.push(src.to_path_buf());
        } else if src.is_dir() {
            let mut found = vec![];
            walk(src, &mut found)?;
            if found.is_empty() {
                bail!(
                    "{}: no shard files (.jsonl, .jsonl.zst, .jsonl.gz, .parquet) in this directory",
                    src.display()
                );
            }
            found.sort();
            out.extend(found);
        } else {
            bail!("{}: no such file or directory", src.display());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if ShardFormat::of(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}
