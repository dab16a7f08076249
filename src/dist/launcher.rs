//! `syncoder launch`: starts this node's ranks of a job the way `torchrun` does — one process
//! per GPU running the same syncoder command, each with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR` and `MASTER_PORT` set — for nodes without
//! PyTorch, and then supervises them:
//!
//! - a rank that fails ends the job: the others get SIGTERM, then SIGKILL after the grace
//!   period (they may be blocked in a collective with the dead rank), and the launcher exits
//!   with the failed rank's status;
//! - a SIGTERM or SIGINT to the launcher (a pre-empted allocation) is passed on to every rank
//!   as SIGTERM — the trainer saves a checkpoint after its current step and stops — and the
//!   launcher waits for them, however long the save takes;
//! - the ranks' output goes to the launcher's own stdout and stderr.

use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to start.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// How long ranks told to stop after another failed get before SIGKILL.
    pub grace: Duration,
    /// The program every rank runs (this syncoder) and its arguments.
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
}

impl LaunchSpec {
    fn check(&self) -> Result<()> {
        if self.nproc_per_node == 0 {
            bail!("--nproc-per-node 0: start at least one process");
        }
        if self.nnodes == 0 || self.node_rank >= self.nnodes {
            bail!("--node-rank {} is not below --nnodes {}", self.node_rank, self.nnodes);
        }
        if self.args.is_empty() {
            bail!("no command to launch: give it after `--`, e.g. `syncoder launch --nproc-per-node 8 -- train --config run.toml`");
        }
        Ok(())
    }

    /// The environment of local rank `local` (what torchrun sets).
    pub fn env_of(&self, local: usize) -> Vec<(&'static str, String)> {
        let world = self.nnodes * self.nproc_per_node;
        vec![
            ("RANK", (self.node_rank * self.nproc_per_node + local).to_string()),
            ("WORLD_SIZE", world.to_string()),
            ("LOCAL_RANK", local.to_string()),
            ("LOCAL_WORLD_SIZE", self.nproc_per_node.to_string()),
            ("GROUP_RANK", self.node_rank.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

/// A status as a process exit code (128 + the signal for a rank killed by one).
fn code_of(s: ExitStatus) -> i32 {
    s.code().or_else(|| s.signal().map(|n| 128 + n)).unwrap_or(1)
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(n)) => format!("signal {n}"),
        _ => "an unknown status".into(),
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this process started and has not reaped yet (its pid is not
    // reused before `try_wait` reaps it).
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Starts the ranks, supervises them until all have ended, and returns the launcher's exit
/// code: 0 when every rank succeeded, else the first failed rank's.
pub fn run(spec: &LaunchSpec) -> Result<i32> {
    spec.check()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the launcher's signal handlers")?;
    }
    let first = spec.node_rank * spec.nproc_per_node;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..spec.nproc_per_node {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args).envs(spec.env_of(local));
        match cmd.spawn() {
            Ok(c) => children.push((first + local, c)),
            Err(e) => {
                for (_, c) in &children {
                    signal(c, libc::SIGKILL);
                }
                for (_, c) in &mut children {
                    let _ = c.wait();
                }
                return Err(e).with_context(|| format!("starting rank {} ({})", first + local, spec.program.display()));
            }
        }
    }
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut ending_since: Option<Instant> = None;
    let mut forwarded = false;
    let mut killed = false;
    loop {
        for (i, (rank, child)) in children.iter_mut().enumerate() {
            if status[i].is_some() {
                continue;
            }
            if let Some(s) = child.try_wait().with_context(|| format!("waiting for rank {rank}"))? {
                status[i] = Some(s);
                if !s.success() && failed.is_none() {
                    failed = Some((*rank, s));
                }
            }
        }
        let live: Vec<usize> = (0..children.len()).filter(|&i| status[i].is_none()).collect();
        if live.is_empty() {
            break;
        }
        if let Some((rank, s)) = failed {
            match ending_since {
                None => {
                    eprintln!(
                        "syncoder launch: rank {rank} ended with {}; ending the other {} rank(s) (SIGTERM, SIGKILL \
                         after {}s)",
                        describe(s),
                        live.len(),
                        spec.grace.as_secs()
                    );
                    for &i in &live {
                        signal(&children[i].1, libc::SIGTERM);
                    }
                    ending_since = Some(Instant::now());
                }
                Some(t) if !killed && t.elapsed() >= spec.grace => {
                    for &i in &live {
                        signal(&children[i].1, libc::SIGKILL);
                    }
                    killed = true;
                }
                _ => {}
            }
        } else if stop.load(Ordering::SeqCst) && !forwarded {
            eprintln!(
                "syncoder launch: stopping: SIGTERM passed to the {} rank(s); they save a checkpoint after their \
                 current step",
                live.len()
            );
            for &i in &live {
                signal(&children[i].1, libc::SIGTERM);
            }
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let (Some((rank, s)), None) = (failed, ending_since) {
        // Every rank had ended by the time the failure was seen.
        eprintln!("syncoder launch: rank {rank} ended with {}", describe(s));
    }
    Ok(failed.map_or(0, |(_, s)| code_of(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nproc: usize, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            nproc_per_node: nproc,
            nnodes: 2,
            node_rank: 1,
            master_addr: "node0".into(),
            master_port: 29500,
            grace: Duration::from_secs(1),
            program: "/bin/sh".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ranks_follow_the_node() {
        let s = spec(4, &["-c", "true"]);
        let env: std::collections::HashMap<_, _> = s.env_of(2).into_iter().collect();
        assert_eq!(env["RANK"], "6");
        assert_eq!(env["WORLD_SIZE"], "8");
        assert_eq!(env["LOCAL_RANK"], "2");
        assert_eq!(env["LOCAL_WORLD_SIZE"], "4");
        assert_eq!(env["MASTER_ADDR"], "node0");
        let parsed = crate::dist::LaunchEnv::detect(|k| env.get(k).cloned()).unwrap();
        assert_eq!((parsed.rank, parsed.world_size, parsed.local_rank), (6, 8, 2));
        assert_eq!(parsed.master, Some(("node0".to_string(), 29500)));
    }

    #[test]
    fn a_failed_rank_ends_the_others_and_its_status_is_the_launchers() {
        // Rank 5 (local 1) fails at once; the others would sleep for a minute.
        let s = spec(
            3,
            &["-c", r#"if [ "$LOCAL_RANK" = 1 ]; then exit 7; fi; exec sleep 60"#],
        );
        let t0 = Instant::now();
        assert_eq!(run(&s).unwrap(), 7);
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_rank_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let s = spec(
            2,
            &[
                "-c",
                r#"trap '' TERM; if [ "$LOCAL_RANK" = 0 ]; then exit 3; fi; exec sleep 60"#,
            ],
        );
        let t0 = Instant::now();
        assert_eq!(run(&s).unwrap(), 3);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(20),
            "{took:?}"
        );
    }

    #[test]
    fn every_rank_succeeding_is_success() {
        assert_eq!(run(&spec(3, &["-c", "exit 0"])).unwrap(), 0);
        assert!(run(&spec(0, &["-c", "true"])).is_err());
        assert!(run(&spec(1, &[])).is_err());
    }
}
