//! The `syncoder` binary: parses the command line and hands it to the library.

/// mimalloc: glibc malloc contends badly across the tokenizer's and rayon's threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() {
    // Output piped into `head` and closed early ends the process quietly, as for any Unix tool,
    // instead of a panic in `println!` (sockets are unaffected: they write with MSG_NOSIGNAL).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // OpenBLAS's kernel choice goes into the environment while there is one thread.
    #[cfg(feature = "openblas")]
    syncoder::ops::blas::init();
    let cli = syncoder::cli::Cli::parse();
    if let Err(e) = syncoder::cli::run(cli) {
        if let Some(stop) = e.downcast_ref::<syncoder::train::Stopped>() {
            eprintln!("{stop}");
            std::process::exit(stop.exit_code());
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
