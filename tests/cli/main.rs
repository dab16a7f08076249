//! Commands tested through the binary: `data inspect / decontam`, `init`, `loss`, `selftest`
//! and `bench train`.

#[path = "../common/mod.rs"]
mod common;

mod data_commands;
mod init;
mod loss;
mod selftest;
