//! `upcased` from its arguments to its exit, so that `src/bin/upcased.rs`
//! is only `main → run → ExitCode` (as ripgrep's `main` is):
//!
//! 1. the configuration: the file and the flags ([`DaemonArgs::resolve`]);
//!    `--check-config` prints it (nothing with `--quiet`) and stops there;
//! 2. logging, at the config's `log_level` unless `RUST_LOG` is set;
//! 3. the descriptor limit raised, with a warning if `max_connections`
//!    still does not fit ([`crate::rlimit`]);
//! 4. the sockets: adopted from systemd when socket-activated, bound from
//!    the config otherwise ([`open`]);
//! 5. the server run until a clean shutdown, reloading on SIGHUP with
//!    [`reloader`].
//!
//! Whatever stops it is a [`DaemonError`], which knows its exit status
//! (the contract: 0 clean shutdown, 1 runtime failure, 2 bad usage or
//! config) and where its message goes ([`DaemonError::report`]).

use std::io;
use std::num::NonZeroUsize;

use crate::cli::DaemonArgs;
use crate::config::{Config, ConfigError};
use crate::logging::{self, LogControl};
use crate::rlimit;
use crate::server::{Reloader, Server, ServerError};
use crate::systemd::{self, ListenFd};

/// The log target of the lines written here: the binary's name, as when
/// they were written in `src/bin/upcased.rs` (env_logger prints the target:
/// `[... ERROR upcased] cannot bind ...`).
const LOG_TARGET: &str = "upcased";

/// Why `upcased` stopped other than by a clean shutdown.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file or the flags are invalid (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sockets systemd says it passed cannot be taken (exit status 1).
    #[error("socket activation: {0}")]
    Activation(#[source] io::Error),
    /// The server could not start, or failed while running (exit status 1;
    /// 2 when the configuration leaves nothing to listen on).
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl DaemonError {
    /// The exit status of the contract: 2 bad usage or config (an empty
    /// listen list for both transports is a config that cannot run), 1 any
    /// runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Server(ServerError::NothingToServe) => 2,
            DaemonError::Activation(_) | DaemonError::Server(_) => 1,
        }
    }

    /// Says what went wrong where the operator looks. A config error comes
    /// before logging is set up: standard error, as `upcased: MESSAGE`.
    /// Everything later goes through the log (with its journald priority
    /// under systemd).
    pub fn report(&self) {
        match self {
            DaemonError::Config(e) => eprintln!("upcased: {e}"),
            DaemonError::Activation(_) | DaemonError::Server(_) => {
                log::error!(target: LOG_TARGET, "{self}")
            }
        }
    }
}

/// Runs the daemon described by `args` until a clean shutdown (`Ok`) or
/// until something stops it (see the module docs for the order of things).
pub fn run(args: DaemonArgs) -> Result<(), DaemonError> {
    let config = args.resolve()?;
    if args.check_config {
        if !args.quiet {
            print!("{}", config.to_toml());
        }
        return Ok(());
    }
    let logs = logging::init(config.log_level);
    raise_descriptor_limit(config.tcp.max_connections);
    // Read (and cleared from the environment, which is only sound while no
    // other thread exists: none has been started yet) before the sockets
    // are opened; empty unless systemd passed sockets to this process.
    let passed = systemd::take_listen_fds().map_err(DaemonError::Activation)?;
    let mut server = open(config, passed)?;
    server.handle_signals()?;
    server.set_reloader(reloader(args, logs));
    server.run()?;
    Ok(())
}

/// The server's sockets: under socket activation the ones systemd passed
/// (`passed`, which replace both listen lists of `config`), otherwise bound
/// from `config`.
pub fn open(config: Config, passed: Vec<ListenFd>) -> Result<Server, ServerError> {
    if passed.is_empty() {
        Server::bind(config)
    } else {
        Server::adopt(config, passed)
    }
}

/// What SIGHUP does: read the config file again with the flags of `args`
/// over it (so flags keep winning), and apply its `log_level` through
/// `logs`. A bad file is an `Err` with the message; the server logs it and
/// keeps the old config.
pub fn reloader(args: DaemonArgs, logs: LogControl) -> Reloader {
    Box::new(move || {
        let config = args.resolve().map_err(|e| e.to_string())?;
        logs.set_level(config.log_level);
        Ok(config)
    })
}

/// Every connection is a descriptor: takes all the kernel allows, and says
/// so if `max_connections` still cannot fit (accepting would then pause at
/// EMFILE, which works, but the operator should know). Nothing here is
/// fatal: the daemon runs with whatever limit it has.
fn raise_descriptor_limit(max_connections: NonZeroUsize) {
    match rlimit::raise_nofile_limit() {
        Ok((before, after)) => {
            if after > before {
                log::info!(target: LOG_TARGET, "file descriptor limit raised from {before} to {after}");
            }
            if !rlimit::fits(max_connections.get(), after) {
                log::warn!(
                    target: LOG_TARGET,
                    "max_connections is {max_connections} but the file descriptor limit is {after}: \
                     accepting will pause before the limit (raise LimitNOFILE or ulimit -n)"
                );
            }
        }
        Err(e) => log::warn!(
            target: LOG_TARGET,
            "cannot read or raise the file descriptor limit: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn exit_codes_follow_the_contract() {
        let config_error =
            DaemonArgs::try_parse_from(["upcased", "-c", "/nonexistent/upcased.toml"])
                .unwrap()
                .resolve()
                .unwrap_err();
        assert_eq!(DaemonError::from(config_error).exit_code(), 2);
        assert_eq!(
            DaemonError::from(ServerError::NothingToServe).exit_code(),
            2
        );
        let io = || io::Error::from(io::ErrorKind::AddrInUse);
        let bind = ServerError::Bind {
            proto: "tcp",
            addr: crate::config::DEFAULT_LISTEN,
            source: io(),
        };
        assert_eq!(DaemonError::from(bind).exit_code(), 1);
        assert_eq!(DaemonError::Activation(io()).exit_code(), 1);
        assert_eq!(
            DaemonError::from(ServerError::Interrupted(3)).exit_code(),
            1
        );
    }

    #[test]
    fn messages_are_the_inner_ones() {
        let e = DaemonError::from(ServerError::NothingToServe);
        assert_eq!(
            e.to_string(),
            "nothing to listen on: [tcp] listen and [udp] listen are both empty"
        );
        let e = DaemonError::Activation(io::Error::new(
            io::ErrorKind::InvalidInput,
            "LISTEN_FDS=\"x\" is not a number",
        ));
        assert_eq!(
            e.to_string(),
            "socket activation: LISTEN_FDS=\"x\" is not a number"
        );
    }
}
