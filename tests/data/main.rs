//! The data path: shards → records → chat template + loss mask → packed rows → the resumable
//! loader, raw and prepared, local and `hf://`.

#[path = "../common/mod.rs"]
mod common;

mod chat_template;
mod hub;
mod loader;
mod prepared;
mod records;
mod sample_data;
mod shards;
