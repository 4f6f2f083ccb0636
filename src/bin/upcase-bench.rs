//! `upcase-bench`: the load generator. Parses arguments, runs, prints the
//! report (text on stderr-free stdout, or JSON), and maps the outcome to the
//! exit status: 0 every reply verified, 1 errors found, 2 bad usage, 3 the
//! bench itself failed.

use std::process::ExitCode;

use clap::Parser;

use upcase::bench::{self, BenchError, Options};

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let options = Options::parse();
    match bench::run(&options) {
        Ok(report) => {
            if options.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("upcase-bench: JSON: {e}");
                        return ExitCode::from(3);
                    }
                }
            } else {
                println!("{report}");
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                if options.json {
                    // Scripts read stdout; a person reads stderr.
                    eprintln!("upcase-bench: FAILED: {} errors", report.errors.total());
                }
                ExitCode::from(1)
            }
        }
        Err(e @ BenchError::Usage(_)) => {
            eprintln!("upcase-bench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("upcase-bench: {e}");
            ExitCode::from(3)
        }
    }
}
