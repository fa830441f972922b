//! The `hemostat` command line.

use clap::Parser;

/// One thread runs every task: the operator waits on the engine, Redis and the network far
/// more than it computes (about 1 % of a core at 1000 containers). A runtime thread per core
/// gave each its own glibc malloc arena: at 1000 containers the anonymous memory was 16 MiB
/// with them, 8.4 MiB without (docs/BENCHMARKS.md §9c). Blocking work (file writes of the
/// state directory) still goes to tokio's blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = hemostat::cli::Cli::parse();
    match hemostat::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!(
                "error: {}",
                hemostat::util::error_text::error_text(e.as_ref())
            );
            std::process::exit(2);
        }
    }
}
