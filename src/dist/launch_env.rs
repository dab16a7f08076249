//! Who this process is in a multi-process job, read from the variables the launchers clusters
//! use set for every process they start:
//!
//! | launcher | rank | world | local rank | local world | rendezvous |
//! |---|---|---|---|---|---|
//! | `torchrun` | `RANK` | `WORLD_SIZE` | `LOCAL_RANK` | `LOCAL_WORLD_SIZE` | `MASTER_ADDR`, `MASTER_PORT` |
//! | Open MPI `mpirun` | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `OMPI_COMM_WORLD_LOCAL_RANK` | `OMPI_COMM_WORLD_LOCAL_SIZE` | through MPI |
//! | MPICH / Intel MPI (PMI) | `PMI_RANK` | `PMI_SIZE` | `MPI_LOCALRANKID` | `MPI_LOCALNRANKS` | through MPI |
//! | Slurm `srun` | `SLURM_PROCID` | `SLURM_NTASKS` | `SLURM_LOCALID` | `SLURM_NTASKS_PER_NODE` | first host of `SLURM_JOB_NODELIST`, `MASTER_PORT` |
//!
//! Slurm's variables count only inside a job step (`SLURM_STEP_ID` set, as for every task
//! `srun` starts): an `sbatch` script itself also sees `SLURM_PROCID=0` and the allocation's
//! task count, and one process started there is a single process.
//!
//! The first launcher whose rank and world variables are both set wins, in the table's order
//! (`torchrun` inside an `srun` allocation sets its own; `mpirun` under Slurm sets both, and MPI
//! is the one that started the processes). A variable that is set but not a number, or a rank
//! outside its world, is an error naming the variable.

use anyhow::{bail, Context, Result};

/// What started the processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher variables: one process.
    Single,
    Torchrun,
    OpenMpi,
    Pmi,
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Single => "a single process",
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "Open MPI (mpirun)",
            Launcher::Pmi => "MPICH / Intel MPI (PMI)",
            Launcher::Slurm => "Slurm (srun)",
        })
    }
}

/// This process's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this node (its GPU index).
    pub local_rank: usize,
    pub local_world_size: usize,
    /// Where rank 0 listens for the bootstrap, when the launcher says (torchrun, Slurm).
    pub master: Option<(String, u16)>,
}

impl LaunchEnv {
    /// One process, no launcher.
    pub fn single() -> Self {
        Self {
            launcher: Launcher::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master: None,
        }
    }

    /// From this process's environment.
    pub fn from_process() -> Result<Self> {
        Self::detect(|k| std::env::var(k).ok())
    }

    /// From the variables `var` gives.
    pub fn detect(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| -> Result<Option<usize>> {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("environment variable {k}={v:?} is not a number"))
                })
                .transpose()
        };
        let port = || -> Result<Option<u16>> {
            var("MASTER_PORT")
                .map(|v| {
                    v.trim()
                        .parse::<u16>()
                        .with_context(|| format!("environment variable MASTER_PORT={v:?} is not a port"))
                })
                .transpose()
        };
        let kinds: [(Launcher, [&str; 4]); 4] = [
            (
                Launcher::Torchrun,
                ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"],
            ),
            (
                Launcher::OpenMpi,
                [
                    "OMPI_COMM_WORLD_RANK",
                    "OMPI_COMM_WORLD_SIZE",
                    "OMPI_COMM_WORLD_LOCAL_RANK",
                    "OMPI_COMM_WORLD_LOCAL_SIZE",
                ],
            ),
            (
                Launcher::Pmi,
                ["PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"],
            ),
            (Launcher::Slurm, ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", ""]),
        ];
        for (launcher, [rank_k, world_k, local_k, local_world_k]) in kinds {
            // A batch script sees SLURM_PROCID=0 and the allocation's SLURM_NTASKS too; only a
            // task that `srun` started is in a job step.
            if launcher == Launcher::Slurm && var("SLURM_STEP_ID").or_else(|| var("SLURM_STEPID")).is_none() {
                continue;
            }
            let (Some(rank), Some(world_size)) = (num(rank_k)?, num(world_k)?) else {
                continue;
            };
            let local_rank = num(local_k)?.unwrap_or(rank);
            let local_world_size = match launcher {
                Launcher::Slurm => var("SLURM_NTASKS_PER_NODE")
                    .or_else(|| var("SLURM_TASKS_PER_NODE"))
                    .map(|v| {
                        first_count(&v).with_context(|| format!("SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE={v:?}"))
                    })
                    .transpose()?
                    .unwrap_or(world_size),
                _ => num(local_world_k)?.unwrap_or(world_size),
            };
            let master = match launcher {
                // Under MPI the ranks meet through MPI unless both are set.
                Launcher::Torchrun | Launcher::OpenMpi | Launcher::Pmi => match (var("MASTER_ADDR"), port()?) {
                    (Some(a), Some(p)) => Some((a, p)),
                    _ => None,
                },
                Launcher::Slurm => {
                    let list = var("SLURM_JOB_NODELIST").or_else(|| var("SLURM_NODELIST"));
                    let host = match var("MASTER_ADDR") {
                        Some(a) => Some(a),
                        None => list
                            .map(|l| first_host(&l).with_context(|| format!("SLURM_JOB_NODELIST={l:?}")))
                            .transpose()?,
                    };
                    let port = port()?.unwrap_or(DEFAULT_PORT);
                    host.map(|h| (h, port))
                }
                Launcher::Single => None,
            };
            let env = Self {
                launcher,
                rank,
                world_size,
                local_rank,
                local_world_size,
                master,
            };
            env.check(rank_k, world_k, local_k)?;
            return Ok(env);
        }
        Ok(Self::single())
    }

    fn check(&self, rank_k: &str, world_k: &str, local_k: &str) -> Result<()> {
        if self.world_size == 0 {
            bail!("{world_k}=0: a job has at least one process");
        }
        if self.rank >= self.world_size {
            bail!("{rank_k}={} is not below {world_k}={}", self.rank, self.world_size);
        }
        if self.local_world_size == 0 || self.local_rank >= self.local_world_size {
            bail!(
                "{local_k}={} is not below the {} processes of this node",
                self.local_rank,
                self.local_world_size
            );
        }
        Ok(())
    }

    /// "rank R of W (launcher)".
    pub fn describe(&self) -> String {
        format!("rank {} of {} ({})", self.rank, self.world_size, self.launcher)
    }
}

/// The bootstrap port under Slurm when `MASTER_PORT` is not set (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

/// The first host of a Slurm host list: `gpu-[003-005,9],login1` → `gpu-003`;
/// `rack[1-2]-n[07,9]` → `rack1-n07`. Only the first host is needed (it runs rank 0), so the
/// list is not expanded; zero padding is kept as written.
pub fn first_host(list: &str) -> Result<String> {
    let list = list.trim();
    let mut host = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let mut range = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(c) => range.push(c),
                        None => bail!("unclosed '[' in host list {list:?}"),
                    }
                }
                let first = range.split(',').next().unwrap_or("");
                let first = first.split('-').next().unwrap_or("").trim();
                if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
                    bail!("the range [{range}] in host list {list:?} does not start with a number");
                }
                host.push_str(first);
            }
            ']' => bail!("unmatched ']' in host list {list:?}"),
            c => host.push(c),
        }
    }
    if host.is_empty() {
        bail!("empty host list");
    }
    Ok(host)
}

/// The first count of Slurm's per-node task list: `"4(x2),2"` → 4, `"8"` → 8.
fn first_count(v: &str) -> Result<usize> {
    let first = v.split(',').next().unwrap_or("");
    let n = first.split('(').next().unwrap_or("").trim();
    n.parse().with_context(|| format!("{first:?} is not a task count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LaunchEnv::detect(|k| m.get(k).cloned())
    }

    #[test]
    fn no_launcher_is_one_process() {
        assert_eq!(env(&[]).unwrap(), LaunchEnv::single());
        assert_eq!(
            env(&[("RANK", "0")]).unwrap(),
            LaunchEnv::single(),
            "a rank alone is not a job"
        );
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "8"),
            ("MASTER_ADDR", "node07"),
            ("MASTER_PORT", "29400"),
        ])
        .unwrap();
        assert_eq!(
            (e.launcher, e.rank, e.world_size, e.local_rank, e.local_world_size),
            (Launcher::Torchrun, 5, 16, 1, 8)
        );
        assert_eq!(e.master, Some(("node07".into(), 29400)));
        assert_eq!(e.describe(), "rank 5 of 16 (torchrun)");
    }

    #[test]
    fn mpi_variables_and_precedence_over_slurm() {
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            (e.launcher, e.rank, e.world_size, e.local_rank),
            (Launcher::OpenMpi, 3, 4, 1)
        );
        assert_eq!(e.master, None);
        let e = env(&[
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "3"),
            ("MPI_LOCALRANKID", "0"),
            ("MPI_LOCALNRANKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            (e.launcher, e.rank, e.world_size, e.local_world_size),
            (Launcher::Pmi, 2, 3, 1)
        );
    }

    #[test]
    fn slurm_variables_find_the_first_host() {
        let batch_script = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "0")];
        assert_eq!(env(&batch_script).unwrap(), LaunchEnv::single(), "not in a job step");
        let e = env(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_TASKS_PER_NODE", "8(x2)"),
            ("SLURM_JOB_NODELIST", "gpu-[003-004]"),
        ])
        .unwrap();
        assert_eq!(
            (e.launcher, e.rank, e.world_size, e.local_rank, e.local_world_size),
            (Launcher::Slurm, 9, 16, 1, 8)
        );
        assert_eq!(e.master, Some(("gpu-003".into(), DEFAULT_PORT)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = format!("{:#}", env(&[("RANK", "one"), ("WORLD_SIZE", "2")]).unwrap_err());
        assert!(err.contains("RANK=\"one\""), "{err}");
        let err = format!("{:#}", env(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err());
        assert!(err.contains("RANK=2 is not below WORLD_SIZE=2"), "{err}");
        let err = format!(
            "{:#}",
            env(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "a"),
                ("MASTER_PORT", "70000")
            ])
            .unwrap_err()
        );
        assert!(err.contains("MASTER_PORT"), "{err}");
        let err = format!(
            "{:#}",
            env(&[
                ("SLURM_STEP_ID", "3"),
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_JOB_NODELIST", "n[x-y]")
            ])
            .unwrap_err()
        );
        assert!(err.contains("SLURM_JOB_NODELIST"), "{err}");
    }

    #[test]
    fn first_hosts_of_slurm_lists() {
        for (list, host) in [
            ("node1", "node1"),
            ("node1,node2", "node1"),
            ("gpu-[003-005,9],login1", "gpu-003"),
            ("rack[1-2]-n[07,9]", "rack1-n07"),
            (" a[10] ", "a10"),
        ] {
            assert_eq!(first_host(list).unwrap(), host, "{list}");
        }
        for bad in ["", "n[1-2", "n]1", "n[]"] {
            assert!(first_host(bad).is_err(), "{bad:?}");
        }
    }
}
