//! Execution-based evaluation (EvalPlus, MultiPL-E) beside CodeArena: the benchmarks' problems
//! (`benchmark`), the samples a model gives (`samples`: chat replies; `completions`: a base
//! model continuing the prompt), the code in a reply (`extract`), the
//! program a sample is tested as (`program`), the sandbox that runs untrusted programs
//! (`sandbox`), how a run ended (`execute`), pass@k (`pass_at_k`), and the command's
//! orchestration and report (`exec_eval`, `report`), and the paper-style table of a fine-tune
//! against its base beside CodeArena (`paper_table`, for `syncoder compare`).

pub mod benchmark;
pub mod completions;
pub mod exec_eval;
pub mod execute;
pub mod extract;
pub mod language;
pub mod paper_table;
pub mod pass_at_k;
pub mod program;
pub mod report;
pub mod samples;
pub mod sandbox;
