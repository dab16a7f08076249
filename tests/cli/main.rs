//! Commands tested through the binary: `data inspect / decontam`, `exec-eval`, `init`, `launch`, `loss`, `selftest`,
//! `bench train`, and how inference commands find their model.

#[path = "../common/mod.rs"]
mod common;

mod data_commands;
mod exec_eval;
mod hygiene;
mod inference_models;
mod init;
mod launch;
mod loss;
mod selftest;
