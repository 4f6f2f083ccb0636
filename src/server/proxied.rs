//! Connections on PROXY listeners (`[tcp] proxy_listen`), from accept to
//! their header: a load balancer opens each one with a PROXY protocol
//! header (parsed by [`crate::proxy`]) naming the client it relays.
//!
//! ```text
//!  accept ── peer outside proxy_trusted ──> closed unanswered (untrusted)
//!    │
//!    v
//!  awaiting header ── invalid, EOF first, or HEADER_TIMEOUT ──> closed unanswered (proxy)
//!    │ valid header: its bytes are read and dropped
//!    │ the client's address (PROXY) or the balancer's (LOCAL, UNKNOWN)
//!    │ is the peer from now on; max_connections_per_ip counts it
//!    │ ── at its limit ──> closed unanswered (limit)
//!    v
//!  served as any connection (conn.rs); data after the header is data
//! ```
//!
//! While it waits, the connection's bytes are only peeked at: they stay in
//! the kernel until a whole header is there, so the header's bytes are then
//! read exactly and whatever the balancer sent after them is read by the
//! connection as its first data. Linux raises a new readiness edge for
//! every segment that arrives, read or not, so peeking misses nothing. No
//! state is kept per connection beyond its accept time (the slot's
//! `header`), and a peek looks at most [`proxy::MAX_HEADER`] bytes.
//!
//! The header timeout is [`HEADER_TIMEOUT`], counted from accept, like the
//! idle timeout, which runs from accept too and is not reset by a header
//! still incomplete: with an `idle_timeout` shorter than it, the idle
//! timeout closes first (counted `idle`).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::records::Ended;
use super::throttle::{count, Throttle};
use super::Server;
use crate::proxy::{self, Header, Parsed};

/// How long a balancer has, from accept, to send its whole header. The spec
/// asks for at least 3 s, to cover a TCP retransmission; 5 s covers two
/// (the SYN-ACK's and a first data segment's, at the 1 s initial RTO).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections awaiting their header, for the header timeout.
#[derive(Debug, Default)]
pub struct Headers {
    /// Slab key and accept time of each connection accepted on a PROXY
    /// listener, oldest first (so in deadline order). An entry whose slot
    /// no longer awaits that header (served, or closed and maybe reused) is
    /// stale and skipped; entries leave at their deadline, so there are at
    /// most as many as PROXY connections accepted in the last 5 s.
    waiting: VecDeque<(usize, Instant)>,
    /// The warning about connections closed for their header.
    warning: Throttle,
}

impl Headers {
    /// A connection accepted at `now` into slot `key` awaits its header.
    pub fn wait(&mut self, key: usize, now: Instant) {
        self.waiting.push_back((key, now));
    }

    /// When the oldest waiting connection's header timeout ends.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|&(_, at)| at + HEADER_TIMEOUT)
    }
}

impl Server {
    /// A readiness event for connection `key`, which awaits its header.
    /// Returns true when the header is in and the connection is to be
    /// served now (what follows the header may be waiting already); false
    /// when it still waits, or was closed.
    /// Out of line: only PROXY listeners' connections, before their first
    /// run, come here; every other event should not carry its code.
    #[cold]
    #[inline(never)]
    pub(super) fn await_header(&mut self, key: usize, hup: bool, now: Instant) -> bool {
        let slot = &mut self.conns[key];
        let buf = &mut self.shared.read_buf[..proxy::MAX_HEADER];
        let peeked = loop {
            match slot.conn.stream_mut().peek(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match peeked {
            Ok(0) => {
                self.refuse_header(key, "closed before its header", now);
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                self.lost(key, &e);
                return false;
            }
        };
        match proxy::parse(&self.shared.read_buf[..n]) {
            // Every byte queued was looked at (a peek shorter than
            // MAX_HEADER): with the client's FIN reported, no more will come.
            Parsed::NeedMore if hup => {
                self.refuse_header(key, "closed before its whole header", now)
            }
            Parsed::NeedMore => {}
            Parsed::Invalid(why) => self.refuse_header(key, why, now),
            Parsed::Header { header, consumed } => {
                return self.take_header(key, header, consumed, now)
            }
        }
        false
    }

    /// A whole header of `consumed` bytes is in the kernel: read them, and
    /// make the connection the client's.
    fn take_header(&mut self, key: usize, header: Header, consumed: usize, now: Instant) -> bool {
        let slot = &mut self.conns[key];
        let mut left = consumed;
        while left > 0 {
            // The bytes were peeked: they are there to read.
            match slot
                .conn
                .stream_mut()
                .read(&mut self.shared.read_buf[..left])
            {
                Ok(0) => break,
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(key, &e);
                    return false;
                }
            }
        }
        self.shared.counters.bytes_in += (consumed - left) as u64;
        let balancer = slot.conn.peer();
        if let Header::Proxied { source, .. } = header {
            slot.conn.set_peer(source);
            slot.balancer = Some(balancer);
        }
        slot.header = None;
        let client = slot.conn.peer();
        debug!(target: super::LOG_TARGET, "{balancer}: PROXY header: {}", describe(header, client));
        let tcp = &self.config.tcp;
        match self
            .acceptor
            .claim_ip(client.ip(), tcp, &mut self.shared, now)
        {
            None => {
                let slot = &mut self.conns[key];
                super::conn::refuse(slot.conn.stream_mut(), &mut self.shared);
                self.record(key, Ended::Limit);
                self.remove(key);
                return false;
            }
            Some(counted) => self.conns[key].ip_counted = counted,
        }
        if self.deadline.is_some() && !self.draining() {
            // A graceful shutdown began while it waited: what the client
            // sent so far is answered, as for every other connection.
            let status = self.conns[key].conn.begin_shutdown(&mut self.shared);
            self.after(key, status);
            return false;
        }
        // Data may have come with the header: read it now, no event will.
        self.conns[key].conn.note(true, false);
        true
    }

    /// Closes connection `key`, awaiting its header, unanswered: counted
    /// `proxy`, logged (rate-limited) with `why`.
    pub(super) fn refuse_header(&mut self, key: usize, why: impl std::fmt::Display, now: Instant) {
        let slot = &mut self.conns[key];
        let peer = slot.conn.peer();
        self.shared.counters.closed_proxy += 1;
        if let Some(quiet) = self.headers.warning.ready(now) {
            let since = match quiet {
                0 => String::new(),
                n => format!(" ({} more since the last warning)", count(n, "connection")),
            };
            warn!(target: super::LOG_TARGET, "PROXY listener: closed {peer} unanswered: {why}{since}");
        }
        super::conn::refuse(slot.conn.stream_mut(), &mut self.shared);
        self.record(key, Ended::Proxy);
        self.remove(key);
    }

    /// Connection `key` failed on a socket error while awaiting its header:
    /// counted, recorded and dropped as any connection's error
    /// (`conn::classify`, `Server::closed`).
    fn lost(&mut self, key: usize, e: &io::Error) {
        self.closed(key, super::conn::classify(e));
    }

    /// Closes the connections whose header timeout has ended.
    pub(super) fn expire_headers(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.headers.waiting.front() {
            if at + HEADER_TIMEOUT > now {
                break;
            }
            self.headers.waiting.pop_front();
            if self
                .conns
                .get(key)
                .is_some_and(|slot| slot.header == Some(at))
            {
                let timeout = crate::config::format_duration(HEADER_TIMEOUT);
                self.refuse_header(key, format!("no whole header within {timeout}"), now);
            }
        }
    }
}

/// A header for the debug log.
fn describe(header: Header, client: SocketAddr) -> String {
    match header {
        Header::Proxied { destination, .. } => format!("client {client} to {destination}"),
        Header::Local => "LOCAL (the balancer's own connection)".to_owned(),
        Header::Unknown => "UNKNOWN (served as the balancer's own connection)".to_owned(),
    }
}
