//! Inference: batched generation with per-sequence KV caches, greedy or sampled decoding, and
//! chat prompts formatted as in training.

pub mod chat;
pub mod engine;
pub mod sampling;
pub mod server;

pub use chat::ChatFormat;
pub use engine::{generate, FinishReason, Generated, GenerationSettings};
pub use sampling::Sampling;
