//! Data-parallel training over MPI on the CPU (`--features mpi`, Open MPI from
//! `scripts/install_mpi.sh`): W ranks with accumulation A compute the steps of one process with
//! accumulation W·A (the same global batch), so does ZeRO-1 (the optimizer state cut over the
//! ranks), a run continues at another world size from its checkpoint, and a rank that dies or
//! hangs mid-step ends the job instead of hanging it (the launcher, or the collective timeout),
//! leaving the previous checkpoint loadable. Without the feature, a process started by `mpirun`
//! is refused with a message that says how to build one that is not.

#[cfg(feature = "mpi")]
use crate::common::ok;
#[cfg(feature = "mpi")]
use crate::tiny_run::latest;
use crate::tiny_run::write_config;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// 6 steps of a 12-row global batch (micro-batches of 2 rows × 64 tokens: 6 per step over all
/// ranks, so 1, 2 and 3 ranks split it evenly), checkpoints every 3 steps, the validation loss
/// every 2.
fn config(out: &Path) -> PathBuf {
    let eval = "[eval]\ndata = [\"{sample}\"]\nevery_steps = 2\nmax_rows = 8\n";
    write_config(out, "dp", 12, 6, eval)
}

/// Seconds any multi-rank job of these tests may take (`timeout` exits 124 past it).
const LIMIT_S: u64 = 120;

/// `syncoder train` over `ranks` processes under `mpirun` (1: a plain process).
fn train(ranks: usize, cfg: &Path, run: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    launched(ranks, ranks > 1, cfg, run, extra, env)
}

/// `syncoder train` over `ranks` processes, under `mpirun` if `mpi` (even one).
fn launched(ranks: usize, mpi: bool, cfg: &Path, run: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = env!("CARGO_BIN_EXE_syncoder");
    let mut cmd = if !mpi {
        Command::new(bin)
    } else {
        // Bounded by `timeout`, so a job that hangs fails its test instead of hanging CI.
        let mut c = Command::new("timeout");
        c.args(["-k", "10", &LIMIT_S.to_string(), "mpirun"])
            .args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()])
            .env("OMPI_MCA_btl", "self,tcp")
            .arg(bin);
        c
    };
    cmd.args(["train", "--config"])
        .arg(cfg)
        .args(["--run-name", run])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("mpirun (scripts/install_mpi.sh installs Open MPI)")
}

/// (step, loss, grad norm, tokens, validation loss) of each line of a run's metrics.
#[cfg(feature = "mpi")]
fn metrics(run_dir: &Path) -> Vec<(u64, f64, f64, u64, Option<f64>)> {
    crate::tiny_run::metric_lines(run_dir)
        .into_iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
                v["tokens"].as_u64().unwrap(),
                v["val_loss"].as_f64(),
            )
        })
        .collect()
}

/// Every step's loss, gradient norm and validation loss within 1e-6 relative of the
/// reference's, the same tokens.
#[cfg(feature = "mpi")]
fn same_curve(what: &str, got: &[(u64, f64, f64, u64, Option<f64>)], want: &[(u64, f64, f64, u64, Option<f64>)]) {
    assert_eq!(
        got.iter().map(|m| m.0).collect::<Vec<_>>(),
        want.iter().map(|m| m.0).collect::<Vec<_>>(),
        "{what}: steps"
    );
    for (g, w) in got.iter().zip(want) {
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        assert!(rel(g.1, w.1) <= 1e-6, "{what}: step {} loss {} vs {}", g.0, g.1, w.1);
        assert!(
            rel(g.2, w.2) <= 1e-6,
            "{what}: step {} grad norm {} vs {}",
            g.0,
            g.2,
            w.2
        );
        assert_eq!(g.3, w.3, "{what}: step {} tokens", g.0);
        // Rank 0 computes the validation loss on the steps it is due (every 2nd).
        assert_eq!(g.4.is_some(), g.0 % 2 == 0, "{what}: step {} validation", g.0);
        if let (Some(a), Some(b)) = (g.4, w.4) {
            assert!(rel(a, b) <= 1e-6, "{what}: step {} validation loss {a} vs {b}", g.0);
        }
    }
}

#[cfg(feature = "mpi")]
#[test]
fn ranks_compute_the_steps_of_one_process_and_continue_at_another_world_size() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    // One process, 6 micro-batches per step: the reference curve.
    ok(&train(1, &cfg, "one", &[], &[]));
    let one = metrics(&tmp.path().join("one"));
    assert_eq!(one.len(), 6);
    let zero1 = ["--set", "train.optimizer_sharding=zero1"];
    // A launch of one rank runs ZeRO through its communicator (one block, one part file): the
    // one-GPU check of the multi-GPU path does this over NCCL.
    ok(&launched(1, true, &cfg, "zero1-1", &zero1, &[]));
    let dir = tmp.path().join("zero1-1");
    same_curve("ZeRO-1 over 1 launched rank", &metrics(&dir), &one);
    let part = dir.join("step-00000006/training_state/optimizer-rank-00000-of-00001.safetensors");
    assert!(part.is_file(), "{} missing", part.display());
    for ranks in [2, 3] {
        let run = format!("ranks{ranks}");
        let out = train(ranks, &cfg, &run, &[], &[]);
        ok(&out);
        let dir = tmp.path().join(&run);
        let plain = metrics(&dir);
        same_curve(&format!("{ranks} ranks"), &plain, &one);
        // Rank 0 alone reports and writes: one summary, one line per step.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("checkpoint ").count(), 1, "{stdout}");
        assert!(dir.join("step-00000006").join("model.safetensors").exists());
        // ZeRO-1: the optimizer state cut over the ranks gives the numbers of plain data
        // parallelism, and every rank writes its part of each checkpoint.
        let run = format!("zero1-{ranks}");
        ok(&train(ranks, &cfg, &run, &zero1, &[]));
        let dir = tmp.path().join(&run);
        same_curve(&format!("ZeRO-1 over {ranks} ranks"), &metrics(&dir), &plain);
        let training = dir.join("step-00000006").join("training_state");
        for r in 0..ranks {
            let part = training.join(format!("optimizer-rank-{r:05}-of-{ranks:05}.safetensors"));
            assert!(part.is_file(), "{} missing", part.display());
        }
        assert!(!training.join("optimizer.safetensors").exists());
        let out = Command::new(env!("CARGO_BIN_EXE_syncoder"))
            .args(["ckpt", "inspect"])
            .arg(&dir)
            .output()
            .unwrap();
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("AdamW state in {ranks} parts")), "{text}");
        // ZeRO-2: gradients reduce-scattered, each rank's block of the sum and its norm.
        let run = format!("zero2-{ranks}");
        ok(&train(
            ranks,
            &cfg,
            &run,
            &["--set", "train.optimizer_sharding=zero2"],
            &[],
        ));
        same_curve(
            &format!("ZeRO-2 over {ranks} ranks"),
            &metrics(&tmp.path().join(&run)),
            &plain,
        );
    }

    // 3 ranks with ZeRO-1 stopped right after the checkpoint of step 3 (rank 0 dies, the
    // launcher takes the others down), then 2 ranks continue it, their optimizer state cut
    // again from the 3 parts: the curve of the uninterrupted single process.
    let out = train(
        3,
        &cfg,
        "moved",
        &zero1,
        &[("SYNCODER_FAULT", "kill-after-save:3"), ("SYNCODER_FAULT_RANK", "0")],
    );
    assert!(!out.status.success(), "the killed run succeeded");
    let dir = tmp.path().join("moved");
    assert_eq!(latest(&dir), "step-00000003");
    // Through the run's own run.toml, as the stop message says to resume (it keeps
    // `run.world_size` at 1: the launcher decides).
    let own = dir.join("run.toml");
    ok(&train(2, &own, "moved", &["--resume", "latest"], &[]));
    same_curve("3 ranks, then 2 after a resume", &metrics(&dir), &one);
    // One process reads the 3 parts of that ZeRO-1 checkpoint whole.
    let step3 = dir.join("step-00000003");
    let step3 = step3.to_str().unwrap();
    ok(&train(1, &cfg, "alone", &["--resume", step3], &[]));
    same_curve(
        "3 ranks, then 1 process",
        &metrics(&tmp.path().join("alone")),
        &one[3..],
    );
}

#[cfg(feature = "mpi")]
#[test]
fn a_rank_killed_mid_step_ends_the_job_and_the_last_checkpoint_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let t0 = std::time::Instant::now();
    // Rank 1 dies before its first micro-batch of step 5, while rank 0 waits in the reduction.
    let out = train(
        2,
        &cfg,
        "killed",
        &[],
        &[("SYNCODER_FAULT", "kill-at-micro:5:0"), ("SYNCODER_FAULT_RANK", "1")],
    );
    let took = t0.elapsed();
    assert!(!out.status.success(), "a run with a dead rank succeeded");
    assert!(took.as_secs() < 60, "the job took {took:?} to end after a rank died");
    let dir = tmp.path().join("killed");
    assert_eq!(latest(&dir), "step-00000003");
    assert!(!dir.join("step-00000006").exists());
    // The checkpoint it left continues in one process.
    ok(&train(1, &cfg, "killed", &["--resume", "latest"], &[]));
    assert_eq!(metrics(&dir).last().map(|m| m.0), Some(6));
}

/// A rank that hangs without dying (nothing tells the launcher): the other rank's collective
/// times out after `run.comm_timeout_s`, it ends itself naming the key, and the launcher ends
/// the job.
#[cfg(feature = "mpi")]
#[test]
fn a_rank_that_hangs_ends_the_job_after_the_collective_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let t0 = std::time::Instant::now();
    let out = train(
        2,
        &cfg,
        "hung",
        &["--set", "run.comm_timeout_s=3"],
        &[("SYNCODER_FAULT", "hang-at-micro:5:0"), ("SYNCODER_FAULT_RANK", "1")],
    );
    let took = t0.elapsed();
    assert_ne!(out.status.code(), Some(124), "the job hung until the test's limit");
    assert!(!out.status.success(), "a run with a hung rank succeeded");
    assert!(took.as_secs() < 60, "the job took {took:?} to end after a rank hung");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rank 0 of 2") && err.contains("run.comm_timeout_s = 3"),
        "{err}"
    );
    let dir = tmp.path().join("hung");
    assert_eq!(latest(&dir), "step-00000003");
}

#[test]
fn a_world_size_the_launcher_does_not_match_is_refused_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let out = train(1, &cfg, "mismatch", &["--set", "run.world_size=3"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run.world_size") && err.contains("mpirun -np 3"), "{err}");
    assert!(!tmp.path().join("mismatch").exists());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn ranks_of_a_build_without_mpi_are_refused_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    // What `mpirun -np 2` sets for rank 1.
    let out = train(
        1,
        &cfg,
        "nompi",
        &[],
        &[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features mpi"), "{err}");
    assert!(!tmp.path().join("nompi").exists());
}
