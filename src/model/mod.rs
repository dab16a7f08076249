//! The Qwen2 decoder (the architecture of Qwen2.5-Coder) for training and inference, with
//! Hugging Face `config.json`, tensor names and safetensors layout.

pub mod attention;
pub mod batch;
pub mod config;
pub mod decoder_layer;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod params;
pub mod qwen2;
pub mod rms_norm;
pub mod training;
pub mod weights;

pub use batch::PackedBatch;
pub use config::Qwen2Config;
pub use kv_cache::{KvCache, KvPlacement};
pub use qwen2::Qwen2;
