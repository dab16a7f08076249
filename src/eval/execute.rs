//! Running one sample's program in the sandbox and naming how it ended: passed, a wrong
//! answer, a timeout, a crash, a compile error, or killed for memory.
//!
//! The program runs as `bash -c SCRIPT` in its fresh directory: the compile step (if the
//! language has one), whose failure prints a marker and exits, then the run step. How it
//! ended is read from the exit status and what the runtime printed:
//!
//! | ending | kind |
//! |---|---|
//! | exit 0 | passed |
//! | the compile marker | compile error |
//! | the wall-clock limit, or `SIGXCPU` / `SIGKILL` at the CPU limit | timeout |
//! | `MemoryError`, `bad_alloc`, `OutOfMemoryError`, "heap out of memory", "Cannot allocate memory" | memory |
//! | a failed assertion or test (`AssertionError`, `Assertion ... failed`, `Test failed`, `ERR_ASSERTION`), or a bare non-zero exit | wrong answer |
//! | an uncaught error (a Python traceback, a Java or JS exception), or another signal | crash |

use super::language::Language;
use super::sandbox::{self, Ending, Limits, Outcome};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    WrongAnswer,
    Timeout,
    Crash,
    CompileError,
    Memory,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Passed,
        Verdict::WrongAnswer,
        Verdict::Timeout,
        Verdict::Crash,
        Verdict::CompileError,
        Verdict::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::WrongAnswer => "wrong answer",
            Verdict::Timeout => "timeout",
            Verdict::Crash => "crash",
            Verdict::CompileError => "compile error",
            Verdict::Memory => "memory",
        }
    }
}

const COMPILE_MARKER: &str = "__syncoder_compile_error__";

/// How long a program may run: `run_seconds` of wall and CPU time for the run, plus the
/// compile step's own allowance.
#[derive(Clone, Debug)]
pub struct RunLimits {
    pub run_seconds: u64,
    pub compile_seconds: u64,
    pub memory_bytes: u64,
    pub output_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            run_seconds: 10,
            compile_seconds: 30,
            memory_bytes: 2 << 30,
            output_bytes: 64 << 10,
        }
    }
}

/// How one program ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub verdict: Verdict,
    /// The exit code or signal, and the last lines of what it printed to stderr.
    pub detail: String,
    pub seconds: f64,
    pub network_isolated: bool,
}

/// Runs `program` (in `lang`) in the sandbox.
pub fn execute(lang: Language, program: &str, limits: &RunLimits) -> Result<Execution> {
    let tc = lang.toolchain();
    let compile = tc.compile.map_or(String::new(), |c| {
        format!("{c} > .compile.log 2>&1 || {{ tail -c 4000 .compile.log >&2; echo {COMPILE_MARKER} >&2; exit 97; }}\n")
    });
    let script = format!("{compile}{}\n", tc.run);
    let compile_s = if tc.compile.is_some() {
        limits.compile_seconds
    } else {
        0
    };
    let sandbox_limits = Limits {
        wall: Duration::from_secs(limits.run_seconds + compile_s),
        cpu_seconds: limits.run_seconds + compile_s,
        // The runtime's own reservation on top of the program's allowance.
        memory_bytes: tc.address_space.max(limits.memory_bytes),
        file_bytes: 64 << 20,
        processes: 256,
        output_bytes: limits.output_bytes,
        isolate_network: true,
    };
    let out = sandbox::run(
        "bash",
        &["-c", &script],
        &[(tc.file, program.as_bytes())],
        b"",
        &sandbox_limits,
    )?;
    Ok(classify(&out))
}

/// The verdict of an outcome.
pub fn classify(out: &Outcome) -> Execution {
    let err = &out.stderr;
    let has = |needles: &[&str]| needles.iter().any(|n| err.contains(n) || out.stdout.contains(n));
    let memory = has(&[
        "MemoryError",
        "bad_alloc",
        "OutOfMemoryError",
        "heap out of memory",
        "Cannot allocate memory",
        "memory allocation failed",
        "Allowed memory size",
    ]);
    let assertion = has(&[
        "AssertionError",
        "Assertion `",
        "Assertion failed",
        "assertion failed",
        "Test failed",
        "ERR_ASSERTION",
    ]);
    let uncaught = has(&[
        "Traceback (most recent call last)",
        "Exception in thread",
        "Uncaught",
        "panicked at",
    ]);
    let verdict = match out.ending {
        Ending::Exited(0) => Verdict::Passed,
        _ if err.contains(COMPILE_MARKER) => Verdict::CompileError,
        Ending::TimedOut => Verdict::Timeout,
        // SIGXCPU, or the kernel's SIGKILL past the hard CPU limit (a program that ignored
        // SIGXCPU; the OOM killer's SIGKILL would land here too).
        Ending::Signaled(libc::SIGXCPU | libc::SIGKILL) => Verdict::Timeout,
        _ if memory => Verdict::Memory,
        _ if assertion => Verdict::WrongAnswer,
        Ending::Signaled(_) => Verdict::Crash,
        Ending::Exited(_) if uncaught => Verdict::Crash,
        Ending::Exited(_) => Verdict::WrongAnswer,
    };
    let ending = match out.ending {
        Ending::Exited(c) => format!("exit {c}"),
        Ending::Signaled(s) => format!("signal {s}"),
        Ending::TimedOut => "timed out".into(),
    };
    let tail: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains(COMPILE_MARKER))
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let detail = if tail.is_empty() {
        ending
    } else {
        format!("{ending}: {}", tail.join("\n"))
    };
    Execution {
        verdict,
        detail: detail.chars().take(2000).collect(),
        seconds: out.wall.as_secs_f64(),
        network_isolated: out.network_isolated,
    }
}
