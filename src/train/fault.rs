//! Fault injection for the crash-safety tests: `SYNCODER_FAULT` holds comma-separated points at
//! which the process kills itself with SIGKILL (as a pre-emption or OOM-killer would), or
//! poisons a step's loss:
//!
//! - `kill-at-micro:STEP:MICRO` before micro-batch MICRO (0-based) of optimizer step STEP
//! - `kill-in-save:STEP` while the checkpoint of STEP is half written
//! - `kill-after-save:STEP` right after the checkpoint of STEP is complete
//! - `nan-loss:STEP` makes the loss (and so every gradient) of STEP NaN
//! - `hang-at-micro:STEP:MICRO` sleeps for ever before micro-batch MICRO of STEP (a rank that
//!   hangs without dying)
//!
//! Steps are 1-based, as in `metrics.jsonl`. Unset, every check is a no-op. In a data-parallel
//! run, `SYNCODER_FAULT_RANK=R` arms the points on rank R only (the launcher's rank variable);
//! without it every rank is armed.

use std::sync::OnceLock;

/// Whether this process is the rank `SYNCODER_FAULT_RANK` names (or no rank is named).
fn this_rank() -> bool {
    let Ok(want) = std::env::var("SYNCODER_FAULT_RANK") else {
        return true;
    };
    crate::dist::LaunchEnv::from_process().is_ok_and(|l| want.trim() == l.rank.to_string())
}

fn points() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        if !this_rank() {
            return Vec::new();
        }
        std::env::var("SYNCODER_FAULT")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn armed(point: &str) -> bool {
    points().iter().any(|p| p == point)
}

fn kill_self() {
    eprintln!("syncoder: SYNCODER_FAULT: killing the process with SIGKILL");
    // SAFETY: getpid and kill have no preconditions; SIGKILL ends the process here.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Before micro-batch `micro` of step `step`.
pub fn at_micro(step: u64, micro: usize) {
    if armed(&format!("kill-at-micro:{step}:{micro}")) {
        kill_self();
    }
    if armed(&format!("hang-at-micro:{step}:{micro}")) {
        eprintln!("syncoder: SYNCODER_FAULT: hanging");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// In the middle of writing the checkpoint of `step`.
pub fn in_save(step: u64) {
    if armed(&format!("kill-in-save:{step}")) {
        kill_self();
    }
}

/// Right after the checkpoint of `step` is complete.
pub fn after_save(step: u64) {
    if armed(&format!("kill-after-save:{step}")) {
        kill_self();
    }
}

/// The factor applied to the loss of `step` (NaN when poisoned).
pub fn loss_factor(step: u64) -> f64 {
    if armed(&format!("nan-loss:{step}")) {
        f64::NAN
    } else {
        1.0
    }
}
