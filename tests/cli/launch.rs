//! `syncoder launch` through the binary: the ranks it starts meet rank 0 and receive its NCCL id
//! (the real library where `SYNCODER_NCCL` names one, as CI does; random bytes otherwise), and a
//! launch whose ranks refuse to start ends with their error, every rank reaped.

use std::process::{Command, Output};

/// A port P with P + 1 free just now (the ranks meet at MASTER_PORT + 1).
fn free_master_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port() - 1
}

fn launch(nproc: usize, command: &[&str]) -> Output {
    let port = free_master_port().to_string();
    let n = nproc.to_string();
    let mut args = vec![
        "launch",
        "--nproc-per-node",
        &n,
        "--master-port",
        &port,
        "--grace-s",
        "5",
        "--",
    ];
    args.extend_from_slice(command);
    Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_syncoder"))
        .args(&args)
        .output()
        .unwrap()
}

#[test]
fn launched_ranks_meet_rank_0_and_get_the_same_id() {
    let out = launch(3, &["selftest", "--rendezvous", "--timeout-s", "60"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let digest = |l: &str| l.rsplit(": ").next().unwrap_or_default().to_string();
    let sent = lines
        .iter()
        .find(|l| l.starts_with("rank 0 of 3: sent"))
        .expect("rank 0's line");
    for r in 1..3 {
        let got = lines
            .iter()
            .find(|l| l.starts_with(&format!("rank {r} of 3: received")))
            .unwrap_or_else(|| panic!("no line of rank {r}: {stdout}"));
        assert_eq!(digest(got), digest(sent), "{stdout}");
    }
    assert_eq!(digest(sent).len(), 16, "{stdout}");
    if std::env::var_os("SYNCODER_NCCL").is_some() {
        assert!(sent.contains("sent NCCL 2."), "{stdout}");
    }
}

#[test]
fn a_cpu_training_launch_is_refused_on_every_rank_and_the_launcher_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = format!("run.output_dir={}", tmp.path().display());
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/smoke.toml");
    let out = launch(2, &["train", "--config", cfg, "--set", &out_dir]);
    assert_ne!(out.status.code(), Some(124), "the launch hung");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CPU data parallelism runs over MPI"), "{err}");
    assert!(err.contains("syncoder launch: rank"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "a refused run wrote");
}
