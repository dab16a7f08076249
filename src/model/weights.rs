//! Reading and writing model weights in Hugging Face safetensors layout: one
//! `model.safetensors`, or shards `model-0000k-of-0000n.safetensors` listed by
//! `model.safetensors.index.json`.
//!
//! Files are written through `io::write_atomic` (temporary name, fsync, rename), so a reader
//! never sees a half-written file.

use crate::io::write_atomic;
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Memory-mapped weights of a model directory, whichever layout it uses.
pub struct WeightFiles {
    st: MmapedSafetensors,
    /// Tensor name -> file it lives in (for error messages).
    files: HashMap<String, PathBuf>,
}

impl WeightFiles {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let mut files = HashMap::new();
        let paths: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
            let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .with_context(|| format!("{}: no \"weight_map\" object", index.display()))?;
            for (name, file) in map {
                let file = file
                    .as_str()
                    .with_context(|| format!("{}: weight_map[{name:?}] must be a file name", index.display()))?;
                files.insert(name.clone(), dir.join(file));
            }
            let mut paths: Vec<PathBuf> = files.values().cloned().collect();
            paths.sort();
            paths.dedup();
            paths
        } else if single.exists() {
            vec![single]
        } else {
            bail!("{}: no {SINGLE_FILE} or {INDEX_FILE} found", dir.display());
        };
        for p in &paths {
            if !p.exists() {
                bail!("missing weight file {}", p.display());
            }
        }
        // SAFETY: the files are opened read-only; syncoder never modifies a weight file in place
        // (it writes new files and renames them), which is the condition memmap2 asks for.
        let st = unsafe { MmapedSafetensors::multi(&paths) }
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading safetensors weights in {}", dir.display()))?;
        if files.is_empty() {
            for (name, _) in st.tensors() {
                files.insert(name, paths[0].clone());
            }
        }
        Ok(Self { st, files })
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.st.tensors().into_iter().map(|(n, _)| n).collect();
        v.sort();
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    /// Loads `name` onto `device`, checking its shape.
    pub fn load(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let t = self
            .st
            .load(name, device)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("loading tensor {name:?}"))?;
        if t.dims() != shape {
            let file = self
                .files
                .get(name)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            bail!(
                "tensor {name:?} in {file} has shape {:?}, the config implies {:?}",
                t.dims(),
                shape
            );
        }
        Ok(t)
    }
}

fn serialize(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    let meta: HashMap<String, String> = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data: Vec<(&str, &Tensor)> = tensors.to_vec();
    Ok(safetensors::serialize(data, Some(meta))?)
}

/// Saves named tensors into `dir` in Hugging Face layout: one `model.safetensors` when the
/// total fits in `max_shard_bytes`, otherwise shards plus an index. Returns the files written.
pub fn save_weights(dir: &Path, tensors: &BTreeMap<String, Tensor>, max_shard_bytes: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
    let total: usize = tensors.values().map(size).sum();
    // Remove a previous layout so a directory never mixes the two.
    for stale in [dir.join(SINGLE_FILE), dir.join(INDEX_FILE)] {
        if stale.exists() {
            std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    if total <= max_shard_bytes {
        let path = dir.join(SINGLE_FILE);
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        write_atomic(&path, &serialize(&refs)?)?;
        return Ok(vec![path]);
    }
    // Greedy sharding in name order, as transformers does.
    let mut shards: Vec<Vec<(&str, &Tensor)>> = vec![vec![]];
    let mut cur = 0usize;
    for (n, t) in tensors {
        if cur > 0 && cur + size(t) > max_shard_bytes {
            shards.push(vec![]);
            cur = 0;
        }
        shards.last_mut().expect("one shard exists").push((n.as_str(), t));
        cur += size(t);
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut written = vec![];
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, count);
        let path = dir.join(&name);
        write_atomic(&path, &serialize(shard)?)?;
        for (n, _) in shard {
            weight_map.insert(n.to_string(), name.clone());
        }
        written.push(path);
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let path = dir.join(INDEX_FILE);
    write_atomic(&path, serde_json::to_string_pretty(&index)?.as_bytes())?;
    written.push(path);
    Ok(written)
}
