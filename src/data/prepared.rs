//! Pre-tokenised shards (`syncoder data prepare`): samples stored as token ids, loss mask and
//! document offsets in safetensors files, memory-mapped at train time so tokenisation happens
//! once per corpus, not once per run.
//!
//! A prepared directory holds `manifest.json` (format version, tokenizer and template digests,
//! length policy, per-shard counts and SHA-256) and `shard-00000.safetensors`, ... each with
//! `ids` (u32), `mask` (u8, 1 = trained on) and `offsets` (i64, documents' start positions plus
//! the end).

use super::pack::SampleState;
use super::record::Record;
use super::sample::{Dropped, SampleBuilder};
use super::shard::{resolve_sources, ShardLines};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub docs: u64,
    pub tokens: u64,
    pub supervised_tokens: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// SHA-256 of the tokenizer's JSON and of the chat template source.
    pub tokenizer_sha256: String,
    pub template_sha256: String,
    pub max_seq_len: usize,
    pub overflow: super::sample::Overflow,
    /// `data.mask` the samples were masked with (manifests older than it: `auto`).
    #[serde(default)]
    pub mask: super::mask_policy::MaskPolicy,
    pub sources: Vec<String>,
    pub records: u64,
    pub bad_records: u64,
    pub dropped_too_long: u64,
    pub dropped_no_supervised: u64,
    pub shards: Vec<ShardEntry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// Digests identifying the tokenisation a builder performs.
pub fn builder_digests(builder: &SampleBuilder) -> Result<(String, String)> {
    let tok = builder
        .tokenizer()
        .to_string(false)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    Ok((
        hex(&Sha256::digest(tok.as_bytes())),
        hex(&Sha256::digest(builder.template.source().as_bytes())),
    ))
}

struct ShardWriter {
    ids: Vec<u32>,
    mask: Vec<u8>,
    offsets: Vec<i64>,
}

impl ShardWriter {
    fn new() -> Self {
        Self {
            ids: vec![],
            mask: vec![],
            offsets: vec![0],
        }
    }

    fn push(&mut self, ids: &[u32], mask: &[bool]) {
        self.ids.extend_from_slice(ids);
        self.mask.extend(mask.iter().map(|&m| m as u8));
        self.offsets.push(self.ids.len() as i64);
    }

    fn docs(&self) -> usize {
        self.offsets.len() - 1
    }

    fn write(self, dir: &Path, index: usize) -> Result<ShardEntry> {
        let file = format!("shard-{index:05}.safetensors");
        let path = dir.join(&file);
        let dev = Device::Cpu;
        let supervised = self.mask.iter().map(|&m| m as u64).sum();
        let (n_tokens, n_docs) = (self.ids.len(), self.docs());
        let ids = Tensor::from_vec(self.ids, n_tokens, &dev)?;
        let mask = Tensor::from_vec(self.mask, n_tokens, &dev)?;
        let offsets = Tensor::from_vec(self.offsets, n_docs + 1, &dev)?;
        let bytes = safetensors::serialize([("ids", &ids), ("mask", &mask), ("offsets", &offsets)], None)?;
        crate::io::write_atomic(&path, &bytes)?;
        Ok(ShardEntry {
            file,
            docs: n_docs as u64,
            tokens: n_tokens as u64,
            supervised_tokens: supervised,
            sha256: hex(&Sha256::digest(&bytes)),
        })
    }
}

/// Tokenises every record of `sources` into `out`, `docs_per_shard` samples per shard file.
/// Bad records stop with an error naming file and line unless `skip_bad`.
pub fn prepare(
    sources: &[PathBuf],
    builder: &SampleBuilder,
    out: &Path,
    docs_per_shard: usize,
    skip_bad: bool,
) -> Result<Manifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let files = resolve_sources(sources)?;
    let (tokenizer_sha256, template_sha256) = builder_digests(builder)?;
    let mut m = Manifest {
        format_version: FORMAT_VERSION,
        tokenizer_sha256,
        template_sha256,
        max_seq_len: builder.max_seq_len,
        overflow: builder.overflow,
        mask: builder.mask,
        sources: files.iter().map(|f| f.display().to_string()).collect(),
        records: 0,
        bad_records: 0,
        dropped_too_long: 0,
        dropped_no_supervised: 0,
        shards: vec![],
    };
    let mut w = ShardWriter::new();
    for file in &files {
        let mut lines = ShardLines::open(file)?;
        loop {
            let chunk: Vec<_> = lines.by_ref().take(4096).collect::<Result<_>>()?;
            if chunk.is_empty() {
                break;
            }
            let built: Vec<_> = chunk
                .par_iter()
                .map(|l| match Record::parse(&l.text) {
                    Err(e) => Err(format!("{}:{}: {e}", file.display(), l.line)),
                    Ok(r) => Ok(builder
                        .build_all(&r)
                        .with_context(|| format!("{}:{}", file.display(), l.line))),
                })
                .collect();
            for b in built {
                m.records += 1;
                let samples = match b {
                    Err(msg) if skip_bad => {
                        let _ = msg;
                        m.bad_records += 1;
                        continue;
                    }
                    Err(msg) => bail!("{msg}"),
                    Ok(res) => res?,
                };
                for sample in samples {
                    match sample {
                        Ok(s) => {
                            w.push(&s.ids, &s.mask);
                            if w.docs() >= docs_per_shard {
                                let entry = std::mem::replace(&mut w, ShardWriter::new()).write(out, m.shards.len())?;
                                m.shards.push(entry);
                            }
                        }
                        Err(Dropped::TooLong) => m.dropped_too_long += 1,
                        Err(Dropped::NoSupervisedTokens) => m.dropped_no_supervised += 1,
                    }
                }
            }
        }
    }
    if w.docs() > 0 {
        let entry = w.write(out, m.shards.len())?;
        m.shards.push(entry);
    }
    if m.shards.is_empty() {
        bail!("no sample to write: every record was bad or dropped");
    }
    crate::io::write_atomic(&out.join(MANIFEST), serde_json::to_string_pretty(&m)?.as_bytes())?;
    Ok(m)
}

/// Reads a prepared directory's manifest; with `verify`, checks every shard's SHA-256.
pub fn open_manifest(dir: &Path, verify: bool) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if m.format_version != FORMAT_VERSION {
        bail!(
            "{}: format version {} (this syncoder reads {FORMAT_VERSION})",
            path.display(),
            m.format_version
        );
    }
    for s in &m.shards {
        let p = dir.join(&s.file);
        if !p.exists() {
            bail!("{}: shard {} is missing", dir.display(), s.file);
        }
        if verify && sha256_file(&p)? != s.sha256 {
            bail!("{}: checksum mismatch (corrupt or modified shard)", p.display());
        }
    }
    Ok(m)
}

/// One memory-mapped prepared shard.
pub struct PreparedShard {
    st: MmapedSafetensors,
    offsets: Vec<i64>,
    path: PathBuf,
}

impl PreparedShard {
    pub fn open(path: &Path) -> Result<Self> {
        // SAFETY: prepared shards are written once (temporary file + rename) and never modified.
        let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let offsets = st
            .load("offsets", &Device::Cpu)
            .and_then(|t| t.to_vec1::<i64>())
            .map_err(|e| anyhow!("{}: reading offsets: {e}", path.display()))?;
        // Documents must tile `ids` and `mask` exactly: start at 0, never go back, end at the
        // token count (so `get` and `lengths` need no further checks).
        let tokens = |name: &str, width: usize| -> Result<usize> {
            let v = st.get(name).map_err(|e| anyhow!("{}: {name}: {e}", path.display()))?;
            Ok(v.data().len() / width)
        };
        let (n_ids, n_mask) = (tokens("ids", 4)?, tokens("mask", 1)?);
        let tiles = offsets.first() == Some(&0)
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets.last().is_some_and(|&e| e as usize == n_ids && n_ids == n_mask);
        if !tiles {
            bail!(
                "{}: corrupt offsets (documents do not tile its {n_ids} tokens); prepare the data again",
                path.display()
            );
        }
        Ok(Self {
            st,
            offsets,
            path: path.to_path_buf(),
        })
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every document's length in tokens (from the offsets alone).
    pub fn lengths(&self) -> Vec<u32> {
        self.offsets.windows(2).map(|w| (w[1] - w[0]) as u32).collect()
    }

    /// Document `i` as a sample, read straight from the mapped file.
    pub fn get(&self, i: usize) -> Result<SampleState> {
        if i >= self.len() {
            bail!("{}: no document {i} (it has {})", self.path.display(), self.len());
        }
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        let view = |name: &str| {
            self.st
                .get(name)
                .map_err(|e| anyhow!("{}: {name}: {e}", self.path.display()))
        };
        let ids_view = view("ids")?;
        let mask_view = view("mask")?;
        let ids_bytes = &ids_view.data()[a * 4..b * 4];
        let ids: Vec<u32> = ids_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mask: Vec<bool> = mask_view.data()[a..b].iter().map(|&m| m != 0).collect();
        Ok(SampleState::from_parts(ids, &mask))
    }
}

/// Shard files for training: a directory holding `manifest.json` gives its prepared shards,
/// after checking they were tokenised exactly as `builder` tokenises; any other source is
/// resolved as raw JSONL shards.
pub fn resolve_training_sources(sources: &[PathBuf], builder: &SampleBuilder) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for src in sources {
        if src.is_dir() && src.join(MANIFEST).exists() {
            let m = open_manifest(src, false)?;
            let (tok, tmpl) = builder_digests(builder)?;
            if m.tokenizer_sha256 != tok || m.template_sha256 != tmpl {
                bail!(
                    "{}: prepared with another tokenizer or chat template than this run uses; run `syncoder data prepare` again",
                    src.display()
                );
            }
            if m.mask != builder.mask {
                bail!(
                    "{}: prepared with data.mask = \"{}\", but this run masks with \"{}\"; run `syncoder data \
                     prepare` again",
                    src.display(),
                    m.mask.as_str(),
                    builder.mask.as_str()
                );
            }
            if m.max_seq_len > builder.max_seq_len {
                bail!(
                    "{}: prepared with max_seq_len {} > this run's {}: prepare the shards again for this run \
                     (`syncoder data prepare SOURCES --config RUN.toml --out DIR`, or `--max-seq-len {}`)",
                    src.display(),
                    m.max_seq_len,
                    builder.max_seq_len,
                    builder.max_seq_len
                );
            }
            out.extend(m.shards.iter().map(|s| src.join(&s.file)));
        } else {
            out.extend(resolve_sources(std::slice::from_ref(src))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_that_do_not_tile_the_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |offsets: Vec<i64>| {
            let dev = Device::Cpu;
            let ids = Tensor::from_vec(vec![1u32, 2, 3], 3, &dev).unwrap();
            let mask = Tensor::from_vec(vec![0u8, 1, 1], 3, &dev).unwrap();
            let n = offsets.len();
            let offsets = Tensor::from_vec(offsets, n, &dev).unwrap();
            let path = dir.path().join("shard.safetensors");
            let bytes = safetensors::serialize([("ids", &ids), ("mask", &mask), ("offsets", &offsets)], None).unwrap();
            std::fs::write(&path, bytes).unwrap();
            PreparedShard::open(&path)
        };
        let ok = write(vec![0, 1, 3]).unwrap();
        assert_eq!(ok.lengths(), [1, 2]);
        assert!(ok.get(2).is_err());
        for bad in [vec![0, 5], vec![0, 2, 1, 3], vec![1, 3], vec![0, 2]] {
            let err = write(bad.clone()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("corrupt offsets"), "{bad:?}: {err}");
        }
    }
}
