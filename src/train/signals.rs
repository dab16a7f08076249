//! SIGINT / SIGTERM handling: the first signal asks the trainer to save a checkpoint after the
//! current optimizer step and stop; a second SIGINT ends the process at once.

use anyhow::Result;
use signal_hook::consts::{SIGINT, SIGTERM};
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
