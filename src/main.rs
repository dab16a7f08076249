//! The `syncoder` binary: parses the command line and hands it to the library.

/// mimalloc: glibc malloc contends badly across the tokenizer's and rayon's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() {
    let cli = syncoder::cli::Cli::parse();
    if let Err(e) = syncoder::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
