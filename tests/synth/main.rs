//! `syncoder synth` end to end against a scripted generator and scorer on loopback.

#[path = "../common/mod.rs"]
mod common;

mod pipeline;
