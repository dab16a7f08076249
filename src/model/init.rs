//! Random initialisation like transformers' Qwen2: every linear weight and the embedding from
//! N(0, initializer_range), biases zero, norm weights one. Each tensor draws from its own
//! ChaCha8 stream seeded by (seed, tensor name), so the result depends only on the seed and the
//! config, not on iteration order or thread count.

use super::config::Qwen2Config;
use super::qwen2::{param_specs, Init};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;

/// FNV-1a, a stable hash for deriving per-tensor seeds.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// All parameters of a freshly initialised model, by Hugging Face name.
pub fn random_tensors(cfg: &Qwen2Config, seed: u64, dtype: DType, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let normal = Normal::new(0f32, cfg.initializer_range as f32)?;
    let mut out = BTreeMap::new();
    for spec in param_specs(cfg) {
        let n: usize = spec.shape.iter().product();
        let t = match spec.init {
            Init::Normal => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(&spec.name));
                let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
                Tensor::from_vec(data, spec.shape.as_slice(), device)?
            }
            Init::Zeros => Tensor::zeros(spec.shape.as_slice(), DType::F32, device)?,
            Init::Ones => Tensor::ones(spec.shape.as_slice(), DType::F32, device)?,
        };
        out.insert(spec.name, t.to_dtype(dtype)?);
    }
    Ok(out)
}
