//! `syncoder synth`: making SynCode-Instruct-style instruction data from code-related web text
//! with any OpenAI-compatible model — recall, instruct, respond, validate (LLM scorer and, where
//! the language runs here, generated tests), deduplicate, decontaminate — resumable after a
//! kill, bounded in memory, reporting what it kept, dropped and spent (docs/synth.md).

pub mod config;
pub mod finalize;
pub mod journal;
pub mod minhash;
pub mod prompts;
pub mod recall;
pub mod replies;
pub mod run;
pub mod source;
pub mod worker;

pub use config::SynthConfig;
pub use run::run;
