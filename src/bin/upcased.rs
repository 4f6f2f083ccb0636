//! `upcased`: the daemon. Parses arguments and runs
//! [`upcase::daemon::run`], which maps what went wrong to the exit codes of
//! the contract: 0 clean shutdown, 1 runtime failure, 2 bad usage or config.

use std::process::ExitCode;

use clap::Parser;

use upcase::cli::DaemonArgs;

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let args = DaemonArgs::parse();
    match upcase::daemon::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
