//! Draining behind a balancer: the graceful shutdown of a daemon with an
//! agent (`[agent] listen`), which says it sits behind a balancer that
//! reads the agent to learn when to stop sending it connections.
//!
//! A SIGTERM then does not close anything at first:
//!
//! 1. the agent answers `drain` (HAProxy stops choosing this server once
//!    it has read that) while everything goes on as before: the listeners
//!    accept, every connection is read and answered;
//! 2. the listeners close [`GRACE`] after the agent first answered `drain`
//!    (a connect the balancer chose before its read is on the wire for a
//!    round trip, far less than that), or at once if no agent check ever
//!    came (nobody would learn of the drain), and at the latest when
//!    step 3 begins. Until they close, the daemon does not exit even with
//!    no connection open: a connect refused there would be an error for
//!    a balancer without `option redispatch`;
//! 3. in the last [`margin`] of `shutdown_timeout` (a quarter of it, at
//!    most 5 s) the connections still open get the graceful shutdown a
//!    daemon without an agent gives at once (answer what came, FIN, wait
//!    for the client's), and what is left at the deadline is cut.
//!
//! The daemon exits as soon as the listeners are closed and no connection
//! is open.

use std::time::{Duration, Instant};

use log::info;

use super::throttle::{count, elapsed};
use super::Server;

/// How long the listeners stay open after the agent first answered
/// `drain`: connects the balancer sent before reading it still arrive.
pub const GRACE: Duration = Duration::from_secs(1);

/// The last stretch of `shutdown_timeout`, in which the connections still
/// open get the graceful close: a quarter of it, at most 5 s (enough for
/// the replies in flight, a FIN and the client's FIN back).
pub fn margin(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(5))
}

/// A drain under way.
#[derive(Debug)]
pub struct Drain {
    /// When the shutdown began.
    began: Instant,
    /// When the agent first answered `drain`.
    read: Option<Instant>,
    /// The listeners are still open.
    listening: bool,
    /// When the connections still open get the graceful close.
    close_at: Instant,
}

impl Drain {
    /// When the listeners close, while they are open.
    fn listeners_close_at(&self) -> Option<Instant> {
        if !self.listening {
            return None;
        }
        let after_read = self.read.map(|at| at + GRACE);
        Some(after_read.map_or(self.close_at, |at| at.min(self.close_at)))
    }

    /// The next instant the drain moves on by itself (for the loop's timer).
    pub fn next(&self) -> Instant {
        self.listeners_close_at().unwrap_or(self.close_at)
    }
}

impl Server {
    /// A graceful shutdown with an agent: starts the drain (the deadline is
    /// set already).
    pub(super) fn begin_drain(&mut self, now: Instant) {
        let timeout = self.config.shutdown_timeout;
        let margin = margin(timeout);
        let open = count(self.conns.len() as u64, "connection");
        self.drain = Some(Drain {
            began: now,
            read: None,
            listening: true,
            close_at: now + (timeout - margin),
        });
        self.notify(&format!(
            "STOPPING=1\nSTATUS=shutting down, draining: {open} open"
        ));
        let listeners = if self.agent.checked {
            "listeners open until the balancer reads drain"
        } else {
            "no balancer has read the agent yet, listeners close now"
        };
        info!(target: super::LOG_TARGET, "shutting down, draining: {open} open, {listeners} (deadline {}, what is open in its last {} is closed gracefully)",
            crate::config::format_duration(timeout),
            crate::config::format_duration(margin)
        );
        if !self.agent.checked {
            self.close_listeners_draining(now);
        }
    }

    /// Whether a drain is under way: connections are served as usual.
    pub(super) fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// The agent answered a check, saying `drain` if `drain`.
    pub(super) fn agent_answered(&mut self, drain: bool, now: Instant) {
        self.agent.checked = true;
        if let Some(d) = self.drain.as_mut().filter(|d| drain && d.read.is_none()) {
            d.read = Some(now);
            info!(target: super::LOG_TARGET, "draining: the balancer read drain {} after the signal; listeners close in {}",
                elapsed(now - d.began),
                elapsed(GRACE)
            );
        }
    }

    /// After every turn of the loop: moves the drain on when its time has
    /// come, and ends it once the listeners are closed and every client
    /// has closed its connection.
    pub(super) fn drain_turn(&mut self, now: Instant) {
        let Some(d) = &self.drain else {
            return;
        };
        if d.listeners_close_at().is_some_and(|at| now >= at) {
            self.close_listeners_draining(now);
        }
        let Some(d) = &self.drain else {
            return;
        };
        if now >= d.close_at {
            let left =
                self.config.shutdown_timeout - (now - d.began).min(self.config.shutdown_timeout);
            info!(target: super::LOG_TARGET, "draining: {} still open with {} to the deadline: closing them gracefully",
                count(self.conns.len() as u64, "connection"),
                elapsed(left)
            );
            self.drain = None;
            self.close_gracefully();
        } else if !d.listening && self.conns.is_empty() {
            info!(target: super::LOG_TARGET, "drained: every client closed its connection, {} after the signal",
                elapsed(now - d.began)
            );
            self.drain = None;
        }
    }

    /// Closes the listeners (answering what their backlogs hold) during a
    /// drain.
    fn close_listeners_draining(&mut self, now: Instant) {
        let Some(d) = self.drain.as_mut() else {
            return;
        };
        if !d.listening {
            return;
        }
        d.listening = false;
        let since = elapsed(now - d.began);
        self.close_listeners(now);
        info!(target: super::LOG_TARGET, "draining: listeners closed {since} after the signal, {} open",
            count(self.conns.len() as u64, "connection")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_quarter_of_the_timeout_at_most_5_s() {
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(1250));
        assert_eq!(margin(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(margin(Duration::from_secs(300)), Duration::from_secs(5));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn listeners_close_a_grace_after_the_read_never_after_the_graceful_close() {
        let t = Instant::now();
        let mut d = Drain {
            began: t,
            read: None,
            listening: true,
            close_at: t + Duration::from_secs(10),
        };
        assert_eq!(d.next(), t + Duration::from_secs(10));
        d.read = Some(t + Duration::from_secs(2));
        assert_eq!(d.next(), t + Duration::from_secs(2) + GRACE);
        d.read = Some(t + Duration::from_millis(9500));
        assert_eq!(d.next(), t + Duration::from_secs(10));
        d.listening = false;
        assert_eq!(d.listeners_close_at(), None);
        assert_eq!(d.next(), t + Duration::from_secs(10));
    }
}
