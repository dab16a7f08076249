//! The data path: shard sources -> validated records -> chat template + loss mask -> token ids
//! -> packed rows, with a resumable, prefetching loader; plus the data commands (validate,
//! inspect, decontaminate, prepare, train a tokenizer). `config` is a run's `[data]` section.
//! Imports only `io` and `config`: rows leave this module as plain `PackedRow`s, and the model's
//! view of them is built by the trainer.

pub mod config;
pub mod decontam;
pub mod encoder;
pub mod epoch_size;
pub mod generation_blocks;
pub mod hub;
pub mod inspect;
pub mod loader;
pub mod loader_state;
pub mod mask_policy;
pub mod pack;
pub mod prepared;
pub mod record;
pub mod reread;
pub mod sample;
pub mod sample_ref;
pub mod shard;
pub mod show;
pub mod template;
pub mod tokenizer_train;
pub mod validate;

pub use config::{DataConfig, PackKind};
pub use record::{Message, Record, RecordError, Role};
pub use sample::{Dropped, Overflow, Sample, SampleBuilder};
pub use shard::{ShardLines, SourceLine};
pub use template::{ChatTemplate, QWEN25_DEFAULT_SYSTEM};
