//! `upcase`: the textbook client. Parses arguments, runs
//! [`upcase::client::run`] and maps what went wrong to the exit codes in
//! `--help`: 0 ok, 1 network or runtime failure, 2 bad usage.

use std::process::ExitCode;

use clap::Parser;

use upcase::client::{self, ClientArgs};

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let args = ClientArgs::parse();
    match client::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upcase: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
