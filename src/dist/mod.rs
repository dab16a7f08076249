//! Many processes, one training job: who this process is (`launch_env`: rank, world, local rank
//! and rendezvous from torchrun, Slurm or MPI variables), the collectives (`comm`: over NCCL
//! for GPU runs in `nccl_comm` on `nccl_lib`, over MPI for CPU runs in `mpi_comm`), which of
//! them a launch uses and how rank 0's NCCL id reaches the others (`connect`, `bootstrap`),
//! and `syncoder launch`'s process supervisor (`launcher`). Checked by `syncoder selftest
//! --comm`; the trainer's use of them is `train::data_parallel`.

pub mod bootstrap;
pub mod comm;
pub mod connect;
pub mod launch_env;
pub mod launcher;
#[cfg(feature = "mpi")]
pub mod mpi_comm;
#[cfg(feature = "cuda")]
pub mod nccl_comm;
pub mod nccl_lib;

pub use comm::Comm;

pub use launch_env::{LaunchEnv, Launcher};
