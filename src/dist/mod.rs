//! Many processes, one training job. Built so far: who this process is (`launch_env`: rank,
//! world, local rank and rendezvous from torchrun, Slurm or MPI variables) and the collectives
//! over MPI for CPU runs (`comm`, `mpi_comm` with `--features mpi`, checked by `syncoder
//! selftest --comm`). Not built yet: NCCL, data-parallel gradient reduction and ZeRO sharding in
//! the trainer — until they are, `train` refuses to run as one rank of several (see
//! `train::setup`).

pub mod comm;
pub mod launch_env;
#[cfg(feature = "mpi")]
pub mod mpi_comm;

pub use comm::Comm;

pub use launch_env::{LaunchEnv, Launcher};
