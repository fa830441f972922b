//! The `hemostat` command line.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = hemostat::cli::Cli::parse();
    match hemostat::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
