//! Plumbing every component shares and none owns: files written whole or not at all, the
//! crash-safe JSONL log (training metrics, answers, judgments), the SVG helpers of the charts, and
//! the counting progress bar. Imports nothing of the crate.

pub mod atomic;
pub mod jsonl;
pub mod progress;
pub mod svg;

pub use atomic::{fsync_dir, write_atomic, write_dir_atomic};
pub use jsonl::AppendLog;
