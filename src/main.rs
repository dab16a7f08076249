//! The `syncoder` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    let cli = syncoder::cli::Cli::parse();
    if let Err(e) = syncoder::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
