//! `upcased`: the daemon. Parses arguments, sets up logging, runs the server,
//! and maps what went wrong to the exit codes of the contract:
//! 0 clean shutdown, 1 runtime failure, 2 bad usage or config.

use std::process::ExitCode;

use clap::Parser;
use log::error;

use upcase::cli::DaemonArgs;
use upcase::server::{Server, ServerError};

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let args = DaemonArgs::parse();
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("upcased: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let logs = upcase::logging::init(config.log_level);
    // Every connection is a descriptor: take all the kernel allows us, and
    // say so if max_connections still cannot fit (accepting would then
    // pause at EMFILE, which works, but the operator should know).
    match upcase::rlimit::raise_nofile_limit() {
        Ok((before, after)) => {
            if after > before {
                log::info!("file descriptor limit raised from {before} to {after}");
            }
            if !upcase::rlimit::fits(config.tcp.max_connections.get(), after) {
                log::warn!(
                    "max_connections is {} but the file descriptor limit is {after}: \
                     accepting will pause before the limit (raise LimitNOFILE or ulimit -n)",
                    config.tcp.max_connections
                );
            }
        }
        Err(e) => log::warn!("cannot read or raise the file descriptor limit: {e}"),
    }
    // Read (and cleared from the environment) first thing, before any
    // thread exists; empty unless systemd passed sockets to this process.
    let passed = match upcase::systemd::take_listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            error!("socket activation: {e}");
            return ExitCode::from(1);
        }
    };
    let server = if passed.is_empty() {
        Server::bind(config)
    } else {
        Server::adopt(config, passed)
    };
    let result = server.and_then(|mut server| {
        server.handle_signals()?;
        server.set_reloader(Box::new(move || {
            let config = args.resolve().map_err(|e| e.to_string())?;
            logs.set_level(config.log_level);
            Ok(config)
        }));
        server.run()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            match e {
                ServerError::NothingToServe => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}
