//! The `hemostat` command line.

use clap::Parser;

#[tokio::main]
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
