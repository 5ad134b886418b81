//! The `keelson` command: argument parsing, wiring of the pipeline and engine crates, rendering,
//! and mapping results to exit codes (0 success, 1 a job failed, 2 invalid input or usage,
//! 130 interrupted).

mod cli;
mod commands;
mod deploy;
mod init;
mod remote;
mod render;
mod scan;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(commands::EXIT_INVALID)
        }
    }
}
