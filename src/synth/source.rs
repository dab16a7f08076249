//! The input pages, streamed in order from JSONL(.zst/.gz) or Parquet files (local, globbed, or
//! `hf://datasets/...`), each with its position across all sources, its id (the id field, or
//! FILE:LINE) and its URL. Memory holds one line at a time.

use super::config::InputConfig;
use super::worker::Doc;
use crate::data::shard::{resolve_sources, ShardLines};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

/// The pages of `cfg.sources`, in order.
pub struct Pages {
    cfg: InputConfig,
    files: Vec<PathBuf>,
    file: usize,
    lines: Option<ShardLines>,
    next_index: u64,
}

impl Pages {
    pub fn open(cfg: &InputConfig) -> Result<Self> {
        Ok(Self {
            files: resolve_sources(&cfg.sources)?,
            cfg: cfg.clone(),
            file: 0,
            lines: None,
            next_index: 0,
        })
    }

    /// The next page; `None` at the end (or after `max_docs`).
    pub fn next_page(&mut self) -> Result<Option<Doc>> {
        loop {
            if self.cfg.max_docs > 0 && self.next_index >= self.cfg.max_docs {
                return Ok(None);
            }
            if self.lines.is_none() {
                let Some(path) = self.files.get(self.file) else {
                    return Ok(None);
                };
                self.lines = Some(ShardLines::open_any(path)?);
            }
            let lines = self.lines.as_mut().context("opened above")?;
            let Some(line) = lines.next() else {
                self.lines = None;
                self.file += 1;
                continue;
            };
            let line = line?;
            let path = self.files[self.file].display();
            let at = format!("{path}:{}", line.line);
            let v: Value = serde_json::from_str(&line.text).with_context(|| format!("{at}: invalid JSON"))?;
            let Some(text) = v.get(&self.cfg.text_field).and_then(Value::as_str) else {
                bail!("{at}: no string field {:?} (input.text_field)", self.cfg.text_field);
            };
            let field = |name: &Option<String>| -> Option<String> {
                match v.get(name.as_deref()?)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            };
            let doc = Doc {
                index: self.next_index,
                id: field(&self.cfg.id_field).unwrap_or(at),
                url: field(&self.cfg.url_field),
                text: text.to_string(),
            };
            self.next_index += 1;
            return Ok(Some(doc));
        }
    }
}
