//! `syncoder launch`: one node's ranks of a multi-GPU job, started and supervised the way
//! `torchrun` does it (`dist::launcher`), for nodes without PyTorch.

use crate::dist::launcher::{self, LaunchSpec};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Processes to start on this node: one per GPU (each takes the GPU of its local rank).
    #[arg(long)]
    pub nproc_per_node: usize,
    /// Nodes in the job (run `syncoder launch` once on each).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index among them (its ranks are node_rank × nproc_per_node + local rank).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// The host of rank 0 (node 0), reachable from every node; required with --nnodes > 1.
    #[arg(long)]
    pub master_addr: Option<String>,
    /// A free port on rank 0's host; the ranks meet at this port + 1 (torchrun's convention
    /// leaves the port itself to its own store).
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds the other ranks get to stop after one fails, before SIGKILL.
    #[arg(long, default_value_t = 30)]
    pub grace_s: u64,
    /// The syncoder command every rank runs, after `--` (e.g. `-- train --config run.toml`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> Result<()> {
    let master_addr = match (args.master_addr, args.nnodes) {
        (Some(a), _) => a,
        (None, 1) => "127.0.0.1".to_string(),
        (None, n) => bail!("--nnodes {n}: give --master-addr, the host of node 0 that every node can reach"),
    };
    let spec = LaunchSpec {
        nproc_per_node: args.nproc_per_node,
        nnodes: args.nnodes,
        node_rank: args.node_rank,
        master_addr,
        master_port: args.master_port,
        grace: Duration::from_secs(args.grace_s),
        program: std::env::current_exe().context("finding this syncoder's own path")?,
        args: args.command,
    };
    let code = launcher::run(&spec)?;
    if code != 0 {
        // The failed rank said why on the shared stderr; the launcher's status is its.
        std::process::exit(code);
    }
    Ok(())
}
