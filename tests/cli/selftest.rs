//! `syncoder selftest` and `syncoder bench train` on the CPU (the GPU runs the same code with
//! kernels; see tests/gpu/cuda_kernels.rs): every check is present and passes, the JSON matches the
//! table, and a build without the `cuda` feature refuses `--device cuda` plainly.

use std::process::Command;

fn syncoder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cpu_selftest_checks_every_op_and_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("selftest.json");
    let out = syncoder(&["selftest", "--device", "cpu", "--json", json.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().unwrap();
    for op in [
        "rms_norm",
        "add_rms_norm",
        "attention",
        "attention (fused CPU op)",
        "rope",
        "swiglu",
        "cross_entropy_in_place",
        "linear_cross_entropy",
        "adamw",
        "grad norm",
        "train step",
    ] {
        let n = results
            .iter()
            .filter(|r| r["check"].as_str().unwrap().contains(op))
            .count();
        assert!(n > 0, "no {op} check:\n{stdout}");
    }
    // Forward and backward of the differentiable ops.
    assert!(results
        .iter()
        .any(|r| r["check"].as_str().unwrap() == "swiglu [41x2x1003] backward (input 0)"));
    assert!(results.iter().all(|r| r["passed"].as_bool().unwrap()));
    assert!(
        stdout.contains(&format!("PASS: {0} of {0} checks passed on cpu", results.len())),
        "{stdout}"
    );
}

#[test]
fn cuda_without_the_feature_or_a_gpu_is_refused_plainly() {
    let out = syncoder(&["selftest", "--device", "cuda"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "cuda") {
        assert!(err.contains("opening CUDA device 0") || err.contains("PASS"), "{err}");
    } else {
        assert!(err.contains("built without the `cuda` feature"), "{err}");
    }
}

/// `bench attention` on the CPU times the fused CPU op and writes the same numbers as JSON.
#[test]
fn cpu_attention_bench_prints_forward_and_backward() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("attention.json");
    let out = syncoder(&[
        "bench",
        "attention",
        "--device",
        "cpu",
        "--seq-len",
        "64",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--head-dim",
        "64",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("fused CPU op") && stdout.contains("fwd+bwd TF/s"),
        "{stdout}"
    );
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["head_dim"], 64);
    assert!(doc["timings"][0]["backward_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn cpu_train_bench_prints_throughput_and_op_families() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = syncoder(&[
        "bench",
        "train",
        "--device",
        "cpu",
        "--model-config",
        "configs/models/smoke-tiny.json",
        "--seq-len",
        "128",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["batch"], 2);
    assert_eq!(r["seq_len"], 128);
    // The plan's estimate for the same step is reported beside the measured peak.
    let planned = r["planned_peak_gib"].as_f64().unwrap();
    assert!(planned > 0.0 && stdout.contains("(syncoder plan: "), "{stdout}");
    // No known peak for a CPU: MFU is absent rather than invented.
    assert!(r["mfu"].is_null());
    assert!(stdout.contains("unknown device (give --peak-tflops)"), "{stdout}");
    // Three steps of AdamW on one batch lower its loss.
    assert!(
        r["last_loss"].as_f64().unwrap() < r["first_loss"].as_f64().unwrap(),
        "{r}"
    );
    let families: Vec<&str> = r["op_families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["family"].as_str().unwrap())
        .collect();
    for f in [
        "matmul",
        "attention",
        "rms_norm",
        "rope",
        "swiglu",
        "linear_cross_entropy",
        "adamw",
        "grad norm",
    ] {
        assert!(families.iter().any(|x| x.contains(f)), "{families:?}");
    }
    // With a given peak, MFU = achieved / peak.
    let out = syncoder(&[
        "bench",
        "train",
        "--device",
        "cpu",
        "--model-config",
        "configs/models/smoke-tiny.json",
        "--seq-len",
        "64",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-op-times",
        "--peak-tflops",
        "1.0",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (mfu, achieved) = (r["mfu"].as_f64().unwrap(), r["achieved_tflops"].as_f64().unwrap());
    assert!((mfu - achieved).abs() < 1e-12 && mfu > 0.0);
}

#[test]
fn comm_check_outside_a_launch_says_how_to_launch() {
    let out = syncoder(&["selftest", "--comm"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mpirun -np N syncoder selftest --comm"), "{err}");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn comm_check_without_the_mpi_feature_is_refused_plainly() {
    // What `mpirun -np 2` sets for rank 0.
    let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
        .args(["selftest", "--comm"])
        .env("OMPI_COMM_WORLD_RANK", "0")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features mpi"), "{err}");
}

/// `mpirun -np N syncoder selftest --comm` over 2 and 3 processes: every collective, checked on
/// every rank (`--features mpi`, Open MPI from `scripts/install_mpi.sh`).
#[cfg(feature = "mpi")]
#[test]
fn comm_check_passes_on_every_rank_over_2_and_3_processes() {
    for np in [2, 3] {
        let out = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", &np.to_string()])
            .arg(env!("CARGO_BIN_EXE_syncoder"))
            .args(["selftest", "--comm"])
            .env("OMPI_MCA_btl", "self,tcp")
            .output()
            .expect("mpirun (scripts/install_mpi.sh installs Open MPI)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{np} ranks: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for r in 0..np {
            assert!(
                stdout.contains(&format!("rank {r} of {np}: PASS (all-reduce")),
                "{np} ranks: {stdout}"
            );
        }
    }
}
