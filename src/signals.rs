//! Signals as one more event source of the poll. The only file that knows
//! signal-hook: the handler merely writes to a pipe that the poll watches,
//! and the loop reads the signals out at its own pace.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals as MioSignals;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: graceful shutdown (a second one: exit at once).
    Shutdown,
    /// SIGHUP: re-read the config file.
    Reload,
    /// SIGUSR1: log the counters.
    Stats,
}

/// The daemon's signals, readable through the poll.
pub struct Signals {
    inner: MioSignals,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT, SIGHUP and SIGUSR1.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            inner: MioSignals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?,
        })
    }

    /// Registers with the poll under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.inner, token, Interest::READABLE)
    }

    /// The signals that arrived since the last call (several of one kind
    /// may be folded into one).
    pub fn pending(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.inner.pending().filter_map(|signal| match signal {
            SIGTERM | SIGINT => Some(Request::Shutdown),
            SIGHUP => Some(Request::Reload),
            SIGUSR1 => Some(Request::Stats),
            _ => None,
        })
    }
}
