//! SIGINT / SIGTERM handling: the first signal asks the trainer to save a checkpoint after the
//! current optimizer step and stop; a second SIGINT ends the process at once.

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct StopRequest {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl StopRequest {
    /// Registers the handlers.
    pub fn install() -> Result<Self> {
        let int = Arc::new(AtomicBool::new(false));
        let term = Arc::new(AtomicBool::new(false));
        // Order matters: the conditional exit sees the flag set by an earlier SIGINT.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, int.clone())?;
        signal_hook::flag::register(SIGINT, int.clone())?;
        signal_hook::flag::register(SIGTERM, term.clone())?;
        Ok(Self { int, term })
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<&'static str> {
        if self.term.load(Ordering::SeqCst) {
            Some("SIGTERM")
        } else if self.int.load(Ordering::SeqCst) {
            Some("SIGINT")
        } else {
            None
        }
    }
}

/// A run stopped on request (SIGINT/SIGTERM) with its state saved: not a failure. The binary
/// prints it without `error:` and exits with 130 (SIGINT) or 143 (SIGTERM), the shell's codes
/// for those signals, so a requeue script can tell a pre-emption from a crash (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal} after step {step}; checkpoint {} saved — continue with: {resume}", .checkpoint.display())]
pub struct Stopped {
    pub signal: &'static str,
    pub step: u64,
    pub checkpoint: PathBuf,
    /// A command that continues the run, verbatim.
    pub resume: String,
}

impl Stopped {
    /// The process's exit code: 128 + the signal's number.
    pub fn exit_code(&self) -> i32 {
        if self.signal == "SIGTERM" {
            143
        } else {
            130
        }
    }
}
