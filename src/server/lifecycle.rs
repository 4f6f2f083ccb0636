//! The daemon's lifecycle beside serving: graceful shutdown (and cutting
//! what is left at its deadline), reload on SIGHUP, and what systemd is
//! told (readiness, status, stopping, the watchdog).

use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::accept::{self, Accepted};
use super::idle::IdleList;
use super::throttle::count;
use super::{udp, Server, ServerError};
use crate::transform;

/// systemd's watchdog: pinged twice per interval, as systemd recommends, so
/// that a late wake-up does not cost us the service.
#[derive(Debug)]
pub struct Watchdog {
    /// `WATCHDOG_USEC`: how long systemd waits for a ping.
    interval: Duration,
    /// When the next ping is due.
    next: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC` for this process),
    /// its first ping due at once.
    pub fn from_environment() -> Option<Watchdog> {
        crate::systemd::watchdog_interval().map(|interval| Watchdog {
            interval,
            next: Instant::now(),
        })
    }

    /// When the next ping is due.
    pub fn due(&self) -> Instant {
        self.next
    }
}

/// How often `STATUS=` is renewed while serving: `systemctl status` shows
/// the last one, so it should be a few seconds old at most.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often during a graceful shutdown, which counts down in tenths.
const STATUS_EVERY_DRAINING: Duration = Duration::from_secs(1);
/// What `EXTEND_TIMEOUT_USEC` asks beyond the shutdown deadline: the time
/// to close what is left and exit.
const EXTEND_MARGIN: Duration = Duration::from_secs(2);

/// Keeps systemd's `STATUS=` current: only under a service manager
/// (`NOTIFY_SOCKET` set), so that nothing is computed or sent elsewhere.
#[derive(Debug)]
pub struct StatusTicker {
    /// When the next update is due.
    next: Instant,
    /// Messages (TCP reads with data, datagrams) counted at the last update.
    msgs: u64,
    /// When the last update was made.
    at: Instant,
}

impl StatusTicker {
    /// A ticker under a service manager, the first update one interval away.
    pub fn from_environment() -> Option<StatusTicker> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let now = Instant::now();
        Some(StatusTicker {
            next: now + STATUS_EVERY,
            msgs: 0,
            at: now,
        })
    }

    /// When the next update is due.
    pub fn due(&self) -> Instant {
        self.next
    }
}

/// `41203` as `41,203`: how `systemctl status` readers take large counts in.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The serving status line.
pub fn serving_status(open: u64, msgs_per_s: u64, errors: u64) -> String {
    format!(
        "serving {}, {} msgs/s, {}",
        count(open, "connection"),
        thousands(msgs_per_s),
        count(errors, "error")
    )
}

/// The status line and the timeout extension during a graceful shutdown:
/// `left` until its deadline.
pub fn draining_status(open: u64, left: Duration) -> String {
    format!(
        "STATUS=draining {}, {:.1} s left\nEXTEND_TIMEOUT_USEC={}",
        count(open, "connection"),
        left.as_secs_f64(),
        (left + EXTEND_MARGIN).as_micros()
    )
}

impl Server {
    /// Pings the watchdog if a ping is due.
    pub(super) fn tick_watchdog(&mut self, now: Instant) {
        let Some(watchdog) = &mut self.watchdog else {
            return;
        };
        if now < watchdog.next {
            return;
        }
        watchdog.next = now + watchdog.interval / 2;
        self.notify(&format!("WATCHDOG=1\nSTATUS={}", self.status()));
    }

    /// Renews systemd's `STATUS=` if an update is due: while serving, the
    /// open connections, the messages a second since the last update and
    /// the errors; while draining, what is left and until when, with an
    /// `EXTEND_TIMEOUT_USEC` (see `draining_status`).
    pub(super) fn tick_status(&mut self, now: Instant) {
        let Some(ticker) = &mut self.status else {
            return;
        };
        if now < ticker.next {
            return;
        }
        let c = &self.shared.counters;
        let open = self.conns.len() as u64;
        let message = match self.deadline {
            Some(deadline) => {
                ticker.next = now + STATUS_EVERY_DRAINING;
                draining_status(open, deadline.saturating_duration_since(now))
            }
            None => {
                let msgs = c.tcp_reads + c.dgrams_in;
                let secs = now.saturating_duration_since(ticker.at).as_secs_f64();
                let rate = if secs > 0.0 {
                    ((msgs - ticker.msgs) as f64 / secs).round() as u64
                } else {
                    0
                };
                ticker.next = now + STATUS_EVERY;
                ticker.msgs = msgs;
                ticker.at = now;
                format!(
                    "STATUS={}",
                    serving_status(open, rate, c.errors() + c.closed_error)
                )
            }
        };
        self.notify(&message);
    }

    /// SIGTERM/SIGINT: stop accepting, answer everything already received,
    /// flush, half-close, and wait (up to the deadline) for clients to finish.
    /// With an agent, drain first (`drain.rs`).
    pub(super) fn begin_shutdown(&mut self, now: Instant) -> Result<(), ServerError> {
        if self.deadline.is_some() {
            return Ok(());
        }
        if self.can_hand_over() {
            // A restart through the service manager's store (handover.rs).
            self.begin_handover(now);
            return Ok(());
        }
        let timeout = self.config.shutdown_timeout;
        self.deadline = Some(now + timeout);
        // The countdown (and its EXTEND_TIMEOUT_USEC) starts at once.
        if let Some(ticker) = &mut self.status {
            ticker.next = now;
        }
        if !self.agent.listeners.is_empty() {
            // Behind a balancer: let it move new clients away first.
            self.begin_drain(now);
            return Ok(());
        }
        self.notify(&format!(
            "STOPPING=1\nSTATUS=shutting down: {} to finish",
            count(self.conns.len() as u64, "connection")
        ));
        info!(target: super::LOG_TARGET, "shutting down: {} to finish (deadline {})",
            count(self.conns.len() as u64, "connection"),
            crate::config::format_duration(timeout)
        );
        self.close_listeners(now);
        self.close_gracefully();
        Ok(())
    }

    /// Closes the listeners, serving the clients already in their backlogs,
    /// and the UDP sockets, answering the datagrams already queued.
    pub(super) fn close_listeners(&mut self, now: Instant) {
        let open = self.conns.len();
        let registry = self.poll.registry();
        let queued = self.acceptor.drain_at_shutdown(
            open,
            &self.config.tcp,
            &mut self.shared,
            now,
            registry,
        );
        for accepted in queued {
            if let Accepted::Client {
                stream,
                peer,
                ip_counted,
                proxy,
            } = accepted
            {
                self.add_connection(stream, peer, ip_counted, proxy, now);
            }
        }
        // Datagrams already queued get their answers; then the sockets close.
        for mut endpoint in self.udp.drain(..) {
            let mode = self.config.mode;
            let budget = udp::SHUTDOWN_BUDGET;
            endpoint.serve(mode, &mut self.guard, &mut self.shared, budget, now);
            let _ = self.poll.registry().deregister(&mut endpoint.socket);
        }
    }

    /// Every connection answers what it received, flushes and half-closes.
    pub(super) fn close_gracefully(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if self.conns[key].header.is_some() {
                // Its bytes so far are (part of) a PROXY header: it is
                // answered once the header is in (`proxied.rs`), or closed
                // at the header timeout.
                continue;
            }
            let status = self.conns[key].conn.begin_shutdown(&mut self.shared);
            self.after(key, status);
        }
    }

    /// The shutdown deadline passed: close what is left and say what was cut.
    pub(super) fn cut_all(&mut self) {
        let n = self.conns.len();
        let unsent: usize = self
            .conns
            .iter()
            .map(|(_, s)| s.conn.pending_output())
            .sum();
        warn!(target: super::LOG_TARGET, "shutdown deadline passed: cut {} with {} of replies unsent",
            count(n as u64, "connection"),
            count(unsent as u64, "byte")
        );
        self.shared.counters.closed_cut += n as u64;
        self.shared.counters.conns_open -= n as u64;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.record(key, super::records::Ended::Cut);
        }
        self.conns.clear();
        self.idle = IdleList::default();
    }

    /// Tells systemd (if it is listening) about our state.
    pub(super) fn notify(&self, message: &str) {
        if let Err(e) = crate::systemd::notify(message) {
            warn!(target: super::LOG_TARGET, "cannot notify the service manager: {e}");
        }
    }

    /// A one-line summary for systemd's `STATUS=`.
    pub(super) fn status(&self) -> String {
        let sockets: Vec<String> = (self.acceptor.listeners.iter())
            .map(|l| format!("tcp://{}", l.addr))
            .chain(self.udp.iter().map(|u| format!("udp://{}", u.addr)))
            .collect();
        format!(
            "serving {} ({} connections open)",
            sockets.join(" "),
            self.conns.len()
        )
    }

    /// SIGHUP: apply what can change live; report what cannot. systemd
    /// hears RELOADING=1 before and READY=1 after, whatever the outcome.
    pub(super) fn reload(&mut self) {
        self.notify(&crate::systemd::reloading_message());
        self.apply_reload();
        self.notify(&format!("READY=1\nSTATUS={}", self.status()));
    }

    fn apply_reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            info!(target: super::LOG_TARGET, "SIGHUP: no configuration source to reload");
            return;
        };
        let new = match reloader() {
            Ok(config) => config,
            Err(message) => {
                error!(target: super::LOG_TARGET, "reload failed, keeping the current configuration: {message}");
                self.reloads.failed += 1;
                self.reloads.last_failed = true;
                return;
            }
        };
        self.reloads.ok += 1;
        self.reloads.last_failed = false;
        self.reloads.last_ok = Some(std::time::SystemTime::now());
        let old = std::mem::replace(&mut self.config, new);
        let new = &self.config;
        if new.tcp.listen != old.tcp.listen
            || new.udp.listen != old.udp.listen
            || new.tcp.proxy_listen != old.tcp.proxy_listen
            || new.agent.listen != old.agent.listen
            || new.metrics.listen != old.metrics.listen
            || new.tcp.backlog != old.tcp.backlog
            || new.reuse_port != old.reuse_port
        {
            warn!(target: super::LOG_TARGET, "reload: listen addresses, backlog and reuse_port cannot change live; restart to apply them");
        }
        transform::warm_up(new.mode);
        if new.tcp.socket_buffer != old.tcp.socket_buffer {
            // Handshakes from now on get windows that fit the new size.
            match new.tcp.socket_buffer {
                Some(size) => {
                    for l in &self.acceptor.listeners {
                        if let Err(e) = accept::set_buffers(socket2::SockRef::from(&l.socket), size)
                        {
                            warn!(target: super::LOG_TARGET, "reload: tcp://{}: socket_buffer: {e}", l.addr);
                        }
                    }
                }
                // A buffer size once set stays locked on the listener
                // (Linux has no way back to autotuning), and accepted
                // sockets inherit it.
                None => {
                    warn!(target: super::LOG_TARGET, "reload: socket_buffer = 0 (autotuning) needs a restart; new connections keep the old size")
                }
            }
        }
        self.shared.max_pending_output = new.tcp.max_pending_output.get();
        self.guard.reconfigure(&new.udp);
        if new.tcp.proxy_trusted != old.tcp.proxy_trusted {
            let trusted: Vec<String> = new
                .tcp
                .proxy_trusted
                .iter()
                .map(|n| n.to_string())
                .collect();
            info!(target: super::LOG_TARGET, "reload: proxy_trusted is now [{}], for connections accepted from now on",
                trusted.join(", ")
            );
        }
        if new.tcp.max_connections_per_ip.is_some() != old.tcp.max_connections_per_ip.is_some() {
            // Counting starts (or stops) with connections accepted from now
            // on; those already open are not counted against the new limit.
            warn!(target: super::LOG_TARGET, "reload: max_connections_per_ip applies to connections accepted from now on");
        }
        info!(target: super::LOG_TARGET, "configuration reloaded: mode {}, telnet {}, max_connections {}, idle_timeout {}, max_pending_output {}, socket_buffer {}, shutdown_timeout {}",
            new.mode,
            new.tcp.telnet,
            new.tcp.max_connections,
            new.tcp.idle_timeout.map_or("off".to_owned(), crate::config::format_duration),
            count(new.tcp.max_pending_output.get() as u64, "byte"),
            new.tcp
                .socket_buffer
                .map_or("autotuned".to_owned(), |n| count(n.get() as u64, "byte")),
            crate::config::format_duration(new.shutdown_timeout)
        );
        let max = self.config.tcp.max_connections.get();
        if self.acceptor.below_limit(self.conns.len(), max) {
            self.resume_accepting();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_read_as_the_issue_wrote_them() {
        assert_eq!(
            serving_status(812, 41_203, 0),
            "serving 812 connections, 41,203 msgs/s, 0 errors"
        );
        assert_eq!(
            serving_status(1, 999, 1),
            "serving 1 connection, 999 msgs/s, 1 error"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(
            draining_status(37, Duration::from_millis(2_100)),
            "STATUS=draining 37 connections, 2.1 s left\nEXTEND_TIMEOUT_USEC=4100000"
        );
    }
}
