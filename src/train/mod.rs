//! Supervised fine-tuning. `trainer` is the loop (fetch → step → update → record → maybe
//! save / evaluate / stop), `setup` and `finish` its two ends, and the rest are the components it
//! wires together, each owning its config section: `config` (the run config composing them),
//! `model_source` (`[model]`), `step` (micro-batches and their gradients), `optimizer`
//! (`[optim]`, AdamW), `schedule`, `checkpoint` (`[checkpoint]`, save and resume), `loss_eval`
//! (`[eval]` and `syncoder loss`), `metrics`, `progress` (`[log]`), `arena_eval` (`[arena]`),
//! `memory` (the estimate; `memory_plan` prints it for `syncoder plan`), `signals`, `fault` (crash tests) and `loss_curve`.

pub mod arena_eval;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod fault;
pub mod finish;
pub mod grad_reduce;
pub mod loss_curve;
pub mod loss_eval;
pub mod memory;
pub mod memory_plan;
pub mod metrics;
pub mod model_source;
pub mod optimizer;
mod plan;
pub mod progress;
pub mod schedule;
pub mod setup;
pub mod signals;
mod stage;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod zero;

pub use config::RunConfig;
pub use finish::{print_summary, Summary};
pub use optimizer::OptimConfig;
pub use plan::dry_run;
pub use setup::TrainOptions;
pub use signals::Stopped;
pub use trainer::{run, Trainer};
