//! Many processes, one training job: who this process is (`launch_env`: rank, world, local rank
//! and rendezvous from torchrun, Slurm or MPI variables) and the collectives (`comm`; over MPI
//! for CPU runs in `mpi_comm` with `--features mpi`, checked by `syncoder selftest --comm`). The
//! trainer's use of them is `train::data_parallel`. Not built yet: NCCL, ZeRO sharding.

pub mod comm;
pub mod launch_env;
#[cfg(feature = "mpi")]
pub mod mpi_comm;

pub use comm::Comm;

pub use launch_env::{LaunchEnv, Launcher};
