//! With the `cuda` feature, compiles every `kernels/*.cu` to PTX for sm_80 (which the driver
//! JIT-compiles for A100, H100 and H200) with nvcc, through `cudaforge`, and writes
//! `$OUT_DIR/kernels_ptx.rs` with one `&str` constant per kernel file (`RMS_NORM`, `ROPE`, ...),
//! embedded in the binary by `src/ops/cuda.rs`. The constants a kernel shares with its launcher
//! (`src/ops/kernel_constants.rs`, included here as it is) reach nvcc as `-D` flags. Without the
//! feature it does nothing. Always: `SYNCODER_COMMIT`, the short git commit the binary is built
//! from (`unknown` outside a git checkout), for `--version`.

#[cfg(feature = "cuda")]
#[path = "src/ops/kernel_constants.rs"]
#[allow(dead_code)]
mod kernel_constants;

/// The checkout's short commit, watching what moves it (uncommitted changes are not marked:
/// tracking them would rebuild on every edit).
fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(dir) = git(&["rev-parse", "--git-dir"]) else {
        return "unknown".into();
    };
    println!("cargo::rerun-if-changed={dir}/HEAD");
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo::rerun-if-changed={dir}/{head_ref}");
    }
    println!("cargo::rerun-if-changed={dir}/packed-refs");
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() {
    println!("cargo::rustc-env=SYNCODER_COMMIT={}", git_commit());
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-changed=src/ops/kernel_constants.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda::build() {
        panic!(
            "compiling kernels/*.cu failed: {e}\n\
             (nvcc 13.0 must be on PATH or under CUDA_ROOT; `eval \"$(scripts/cuda_toolkit.sh)\"` installs it from PyPI)"
        );
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::path::PathBuf;

    /// PTX target: sm_80 PTX runs on every GPU from Ampere on (the driver compiles it).
    const PTX_COMPUTE_CAP: usize = 80;

    pub fn build() -> Result<(), Box<dyn std::error::Error>> {
        let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
        let ptx = cudaforge::KernelBuilder::new()
            .source_dir("kernels")
            .watch(["kernels/common.cuh"])
            .compute_cap(PTX_COMPUTE_CAP)
            .out_dir(&out_dir)
            .arg("-std=c++17")
            .arg("-O3")
            .arg("-Ikernels")
            .args(super::kernel_constants::nvcc_flags())
            .build_ptx()?;
        ptx.write(out_dir.join("kernels_ptx.rs"))?;
        Ok(())
    }
}
