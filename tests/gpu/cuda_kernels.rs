//! The GPU suite: every fused CUDA kernel, forward and backward, in f32 and bf16, against its
//! CPU twin on fresh random inputs of awkward sizes with poisoned outputs, and a training step
//! on GPU vs CPU. It runs the same checks as `syncoder selftest --device cuda` (which is how a
//! GPU node without a Rust toolchain runs them, see docs/gpu.md). Compiled only with the `cuda`
//! feature; on a machine without a GPU it says so and passes.
#![cfg(feature = "cuda")]

use candle_core::Device;

fn cuda_or_skip() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: no CUDA device here ({e}); run `syncoder selftest --device cuda` on a GPU node");
            None
        }
    }
}

#[test]
fn every_kernel_matches_its_cpu_twin_and_a_gpu_step_matches_the_cpu_step() {
    let Some(dev) = cuda_or_skip() else { return };
    for seed in [1, 2] {
        let results = syncoder::tools::selftest::run(&dev, seed).expect("selftest ran");
        let table = syncoder::tools::selftest::table(&results, "cuda:0");
        assert!(results.iter().all(|r| r.passed), "seed {seed}:\n{table}");
        for op in [
            "rms_norm",
            "rope",
            "swiglu",
            "cross_entropy_in_place",
            "adamw",
            "grad norm",
            "train step",
        ] {
            for dtype in ["f32", "bf16"] {
                assert!(
                    results.iter().any(|r| r.check.contains(op) && r.dtype == dtype),
                    "no {op} check in {dtype}:\n{table}"
                );
            }
        }
        // bf16 attention at head dims 64 and 128 runs the flash kernel.
        assert!(
            results
                .iter()
                .filter(|r| r.check.starts_with("attention (flash kernel)") && r.dtype == "bf16")
                .count()
                >= 12,
            "the flash-attention checks are missing:\n{table}"
        );
    }
}

#[test]
fn training_on_gpu_writes_mfu_and_device_memory() {
    let Some(_dev) = cuda_or_skip() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args([
            "train",
            "--config",
            "configs/smoke.toml",
            "--set",
            "run.device=cuda",
            "--set",
            "run.dtype=bf16",
        ])
        .args([
            "--set",
            &format!("run.output_dir={}", tmp.path().display()),
            "--set",
            "stage[0].steps=5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = std::fs::read_to_string(
        glob::glob(&format!("{}/**/metrics.jsonl", tmp.path().display()))
            .unwrap()
            .next()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["peak_device_memory_gib"].as_f64().unwrap() > 0.0, "{last}");
}

/// `generate --device cuda` in f32 gives the CPU's greedy tokens; in bf16 it runs and stops
/// where it should.
#[test]
fn generation_on_the_gpu_matches_the_cpu() {
    let Some(_dev) = cuda_or_skip() else { return };
    let model = crate::common::fixtures().join("loss_model");
    let gen = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["generate", "--model"])
            .arg(&model)
            .args([
                "--prompt",
                "Write a function that adds two numbers.",
                "--max-new-tokens",
                "24",
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let cpu = gen(&[]);
    let gpu = gen(&["--device", "cuda", "--dtype", "f32"]);
    assert_eq!(cpu["token_ids"], gpu["token_ids"]);
    let bf16 = gen(&["--device", "cuda"]);
    assert!(!bf16["token_ids"].as_array().unwrap().is_empty());
}
