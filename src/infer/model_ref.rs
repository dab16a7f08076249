//! The model of an inference command (`generate`, `serve`, `loss`, `arena answer`, `compare`):
//! `--model` names a Hugging Face model directory, a checkpoint step directory, a run directory
//! (its `latest` checkpoint) or a Hub id (`Qwen/Qwen2.5-Coder-0.5B`, through the Hugging Face
//! cache, honouring `HF_HUB_OFFLINE`); `--tokenizer` another directory for the tokenizer;
//! `--device` and `--dtype` where it runs. Loaded once into a `LoadedModel`.

use super::chat::ChatFormat;
use crate::data::hub::fetch_model;
use crate::device::{DeviceSpec, Precision};
use crate::model::Qwen2;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use std::path::{Path, PathBuf};

/// `--device` and `--dtype` of an inference command.
#[derive(Args, Clone, Debug)]
pub struct InferDevice {
    /// Where the model runs: cpu, cuda or cuda:N (a GPU needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Weight and activation precision (default: f32 on the CPU, bf16 on a GPU).
    #[arg(long, value_enum)]
    pub dtype: Option<Precision>,
}

impl Default for InferDevice {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            dtype: None,
        }
    }
}

impl InferDevice {
    /// A device running `device` with `dtype` (or its default).
    pub fn new(device: DeviceSpec, dtype: Option<Precision>) -> Self {
        Self { device, dtype }
    }

    /// Opens the device and picks the dtype, refusing combinations without kernels.
    pub fn open(&self) -> Result<(Device, DType)> {
        let device = self.device.open().context("--device")?;
        let dtype = match (self.dtype, device.is_cpu()) {
            (None, true) => DType::F32,
            (None, false) => DType::BF16,
            (Some(p), true) if p != Precision::F32 => {
                bail!("--dtype {p}: CPU inference runs in f32 (the CPU kernels are f32-only)")
            }
            (Some(p), _) => p.dtype(),
        };
        Ok((device, dtype))
    }
}

/// A model ready to generate: its weights on the device and its chat format.
pub struct LoadedModel {
    /// The model directory the weights came from.
    pub dir: PathBuf,
    pub tokenizer_dir: PathBuf,
    pub model: Qwen2,
    pub format: ChatFormat,
}

impl LoadedModel {
    /// Loads the model `spec` names (see `locate_model`) with the tokenizer of `tokenizer`
    /// (default: the model's directory).
    pub fn load(spec: &str, tokenizer: Option<&Path>, on: &InferDevice) -> Result<Self> {
        let dir = locate_model(spec)?;
        let tokenizer_dir = tokenizer_dir(&dir, tokenizer)?;
        let (device, dtype) = on.open()?;
        let format = ChatFormat::load(&tokenizer_dir, &dir)?;
        let model = Qwen2::load(&dir, dtype, &device, false).with_context(|| format!("loading {}", dir.display()))?;
        Ok(Self {
            dir,
            tokenizer_dir,
            model,
            format,
        })
    }
}

/// The model directory `spec` names: a directory with `config.json`; a run directory (the step
/// directory its `latest` file names); or, when no such path exists, a Hub id `OWNER/NAME`.
pub fn locate_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(path.to_path_buf());
        }
        let latest = path.join("latest");
        if let Ok(text) = std::fs::read_to_string(&latest) {
            let step = path.join(text.trim());
            if step.join("config.json").is_file() {
                return Ok(step);
            }
            bail!(
                "{}: names {}, which is not a model directory (no config.json)",
                latest.display(),
                step.display()
            );
        }
        bail!("{spec}: neither a model directory (no config.json) nor a run directory (no `latest` file)");
    }
    if path.exists() {
        bail!("{spec}: a file, not a model directory");
    }
    if looks_like_hub_id(spec) {
        return fetch_model(spec, None)
            .with_context(|| format!("{spec}: no such directory; tried it as a Hugging Face Hub model id"));
    }
    bail!("{spec}: does not exist")
}

/// `OWNER/NAME` with characters the Hub allows, and not written as a path.
fn looks_like_hub_id(spec: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!(spec.split_once('/'), Some((o, n)) if ok(o) && ok(n))
}

/// The directory of the tokenizer: `--tokenizer`, else the model's.
pub fn tokenizer_dir(model_dir: &Path, tokenizer: Option<&Path>) -> Result<PathBuf> {
    let dir = tokenizer.unwrap_or(model_dir);
    if !dir.join("tokenizer.json").is_file() {
        match tokenizer {
            Some(t) => bail!("--tokenizer {}: no tokenizer.json there", t.display()),
            None => bail!(
                "{}: no tokenizer.json (a model written by `syncoder init` has none): pass --tokenizer DIR",
                model_dir.display()
            ),
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        assert!(looks_like_hub_id("Qwen/Qwen2.5-Coder-0.5B"));
        assert!(!looks_like_hub_id("./Qwen/x"));
        assert!(!looks_like_hub_id("checkpoints/run/step-00000005"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("plain"));
    }

    #[test]
    fn missing_paths_say_so() {
        let e = locate_model("/nonexistent/model/dir").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let e = locate_model(tmp.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("neither a model directory"), "{e}");
    }
}
