//! Inference: batched generation with per-sequence KV caches, greedy or sampled decoding, and
//! chat prompts formatted as in training, and the model of an inference command (`model_ref`).

pub mod chat;
pub mod engine;
pub mod model_ref;
pub mod running;
pub mod sampling;
pub mod serve_scheduler;
pub mod server;

pub use chat::ChatFormat;
pub use engine::{generate, generate_jobs, generate_placed, FinishReason, Generated, GenerationSettings, Job, Next};
pub use model_ref::{locate_model, InferDevice, LoadedModel};
pub use sampling::Sampling;
