//! The CodeArena evaluator end to end on loopback, and `syncoder serve` (the endpoint a local
//! judge or answerer runs behind).

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod serve;
mod serve_load;
