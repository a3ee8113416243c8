//! `strata`: the Strata command line client. Docker's commands and flags, over the Engine API.

mod client;
mod commands;
mod progress;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use client::Client;
use commands::Command;

pub const DEFAULT_HOST: &str = "unix:///run/strata.sock";

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "A container engine with pluggable storage drivers"
)]
pub struct Cli {
    /// Daemon socket to connect to (unix:///path or tcp://127.0.0.1:PORT).
    #[arg(short = 'H', long = "host", env = "STRATA_HOST", default_value = DEFAULT_HOST, global = true)]
    host: String,

    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "strata",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: {e}");
            return ExitCode::from(125);
        }
    };
    let result = runtime.block_on(async {
        let client = Client::new(&cli.host)?;
        commands::run(&client, cli.command).await
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}
