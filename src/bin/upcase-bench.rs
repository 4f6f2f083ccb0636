//! `upcase-bench`: the load generator. Parses arguments, runs
//! [`upcase::bench::run_and_print`] (the report on stdout, as text or JSON),
//! and maps the outcome to the exit status: 0 every reply verified, 1 errors
//! found, 2 bad usage, 3 the bench itself failed.

use std::process::ExitCode;

use clap::Parser;

use upcase::bench::{self, Options};

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let options = Options::parse();
    // --workers re-executes this binary with these arguments.
    bench::enable_worker_processes();
    match bench::run_and_print(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("upcase-bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
