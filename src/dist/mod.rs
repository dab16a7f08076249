//! Many processes, one training job. Built so far: who this process is (`launch_env`: rank,
//! world, local rank and rendezvous from torchrun, Slurm or MPI variables). Not built yet: the
//! communicator (NCCL / MPI), data-parallel gradient reduction and ZeRO sharding — until they
//! are, `train` refuses to run as one rank of several (see `train::setup`).

pub mod launch_env;

pub use launch_env::{LaunchEnv, Launcher};
