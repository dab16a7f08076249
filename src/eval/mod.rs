//! Execution-based evaluation (EvalPlus, MultiPL-E). Built so far: the sandbox that runs
//! untrusted generated programs (`sandbox`); the benchmarks, generation and pass@k are not built
//! yet.

pub mod sandbox;
