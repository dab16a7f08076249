//! Supervised fine-tuning: the training loop, AdamW, LR schedules, gradient accumulation,
//! checkpoints with exact resume, metrics and the loss curve.

pub mod arena_eval;
pub mod checkpoint;
pub mod eval;
pub mod fault;
pub mod loss_curve;
pub mod memory;
pub mod metrics;
pub mod model_source;
pub mod optimizer;
pub mod progress;
pub mod schedule;
pub mod signals;
pub mod step;
pub mod trainer;

pub use trainer::{print_summary, run, Summary, TrainOptions};
