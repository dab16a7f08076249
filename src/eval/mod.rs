//! Execution-based evaluation (EvalPlus, MultiPL-E) beside CodeArena: the benchmarks' problems
//! (`benchmark`), the samples a model gives (`samples`), the code in a reply (`extract`), the
//! program a sample is tested as (`program`), the sandbox that runs untrusted programs
//! (`sandbox`), how a run ended (`execute`), pass@k (`pass_at_k`), and the command's
//! orchestration and report (`exec_eval`, `report`).

pub mod benchmark;
pub mod exec_eval;
pub mod execute;
pub mod extract;
pub mod language;
pub mod pass_at_k;
pub mod program;
pub mod report;
pub mod samples;
pub mod sandbox;
