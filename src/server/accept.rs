//! The acceptor: the TCP listening ("welcome") sockets and the policy for
//! taking clients off them: the connection limit (and its episodes in the
//! log), the back-off when the process is out of file descriptors, and the
//! per-address limit with its table.
//!
//! It hands each accepted client to the loop ([`Accepted::Client`]), which
//! owns the connections; it never touches the slab or the registry, and it
//! learns of closed connections through [`Acceptor::closed`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::TcpConfig;
use crate::server::buffers::Shared;
use crate::server::canonical_ip;
use crate::server::conn;
use crate::server::metrics::PausedTime;
use crate::server::throttle::{count, elapsed, Throttle};

/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listening socket and what the loop knows about it.
#[derive(Debug)]
pub struct Listener {
    /// The socket, registered READABLE (edge-triggered).
    pub socket: TcpListener,
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Clients may be waiting in the kernel's accept queue: the last accept
    /// did not end in `WouldBlock`. Edge-triggered readiness sends no new
    /// event for clients already queued, so after a pause (connection limit,
    /// no file descriptors) this flag is what restarts accepting.
    pub pending: bool,
    /// Its place in the loop's run queue.
    pub mark: crate::server::turns::Mark,
    /// A `[tcp] proxy_listen` socket: only `proxy_trusted` peers are
    /// accepted, and each connection must open with a PROXY header.
    pub proxy: bool,
}

/// What one attempt to accept gave.
#[derive(Debug)]
pub enum Accepted {
    /// A client to serve. `ip_counted`: it is counted in the per-address
    /// table, and [`Acceptor::closed`] must be told when it goes.
    Client {
        /// Its socket, non-blocking, with the listener's options.
        stream: TcpStream,
        /// Its address.
        peer: SocketAddr,
        /// Counted against `max_connections_per_ip`.
        ip_counted: bool,
        /// From a PROXY listener: its header is awaited (`proxied.rs`),
        /// and only then is its address counted.
        proxy: bool,
    },
    /// Nothing to serve this time, but more may be queued: a call that was
    /// interrupted, a client gone before it was accepted, one refused for
    /// its address (counted, closed).
    Nothing,
    /// Stop accepting on this listener for now: its queue is empty, or the
    /// connection limit or the descriptor limit was reached.
    Stop,
}

/// A stretch of time at `max_connections`, from the first client that had
/// to wait until accepting finds the backlog empty again.
#[derive(Debug)]
struct LimitEpisode {
    /// When it began.
    since: Instant,
    /// Clients accepted during it: each had waited in the backlog.
    waited: u64,
    /// Its start was logged (so its end is too).
    reported: bool,
}

/// The listeners and the accept policy.
#[derive(Debug)]
pub struct Acceptor {
    /// The listening sockets; their tokens follow the loop's fixed ones, in
    /// this order. Empty once a shutdown has closed them.
    pub listeners: Vec<Listener>,
    /// The connection limit is reached: accepting waits for a slot.
    at_limit: bool,
    /// The time at the connection limit under way, if any.
    episode: Option<LimitEpisode>,
    /// The lines about the connection limit.
    limit_warning: Throttle,
    /// Out of file descriptors: accepting waits until then.
    backoff: Option<Instant>,
    /// The warning about running out of file descriptors.
    fd_warning: Throttle,
    /// The last accept failed for want of a descriptor (EMFILE, ENFILE...),
    /// and none has succeeded or found the queue empty since: what the
    /// agent check reports as `down`.
    out_of_fds: bool,
    /// Open connections per client address, while `max_connections_per_ip`
    /// is set.
    per_ip: HashMap<IpAddr, usize>,
    /// The warning about `max_connections_per_ip` refusals.
    per_ip_warning: Throttle,
    /// The warning about peers outside `proxy_trusted`.
    untrusted_warning: Throttle,
    /// Time spent at the connection limit (`at_limit`), for the metrics.
    pub limit_time: PausedTime,
    /// Time spent out of file descriptors (`backoff`), for the metrics.
    pub backoff_time: PausedTime,
}

impl Acceptor {
    /// The policy over bound listeners.
    pub fn new(listeners: Vec<Listener>) -> Acceptor {
        Acceptor {
            listeners,
            at_limit: false,
            episode: None,
            limit_warning: Throttle::default(),
            backoff: None,
            fd_warning: Throttle::default(),
            out_of_fds: false,
            per_ip: HashMap::new(),
            per_ip_warning: Throttle::default(),
            untrusted_warning: Throttle::default(),
            limit_time: PausedTime::default(),
            backoff_time: PausedTime::default(),
        }
    }

    /// Accepting waits: at the connection limit or out of descriptors.
    /// (`pending` stays set on the listeners: accepting resumes when the
    /// pause ends.)
    pub fn paused(&self) -> bool {
        self.at_limit || self.backoff.is_some()
    }

    /// Accepting is paused for want of file descriptors (see `out_of_fds`).
    pub fn out_of_descriptors(&self) -> bool {
        self.out_of_fds
    }

    /// When the descriptor back-off ends, if one is under way.
    pub fn backoff_until(&self) -> Option<Instant> {
        self.backoff
    }

    /// The back-off is over at `now`: true if accepting may resume.
    pub fn backoff_over(&mut self, now: Instant) -> bool {
        if self.backoff.is_some_and(|at| at <= now) {
            self.backoff = None;
            self.backoff_time.stop(now);
            return true;
        }
        false
    }

    /// `open` connections remain of at most `max` (one closed, or the limit
    /// was reloaded): true if accepting was paused at the limit and resumes.
    /// Inlined: every closed connection asks, and it is one test unless
    /// accepting was paused.
    #[inline]
    pub fn below_limit(&mut self, open: usize, max: usize) -> bool {
        self.at_limit && self.leave_pause(open, max)
    }

    /// `below_limit` while paused at the limit.
    #[inline(never)]
    fn leave_pause(&mut self, open: usize, max: usize) -> bool {
        if open < max {
            self.at_limit = false;
            self.limit_time.stop(Instant::now());
            debug!(target: super::LOG_TARGET, "below the connection limit again: accepting resumed");
            return true;
        }
        false
    }

    /// A connection counted in the per-address table is gone.
    pub fn closed(&mut self, ip: IpAddr) {
        let ip = canonical_ip(ip);
        if let Some(open) = self.per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// A connection the previous process handed over (handover.rs) counts
    /// against its address's limit, like one accepted here; it is never
    /// refused for it.
    pub fn count_adopted(&mut self, ip: IpAddr) {
        *self.per_ip.entry(canonical_ip(ip)).or_insert(0) += 1;
    }

    /// Takes one client off listener `i`, `open` connections being open.
    /// Inlined into the loop's accept loop, with what is not a client
    /// taken (the limit, an error, an empty queue) out of line.
    #[inline]
    pub fn accept_one(
        &mut self,
        i: usize,
        open: usize,
        tcp: &TcpConfig,
        shared: &mut Shared,
        now: Instant,
    ) -> Accepted {
        if open >= tcp.max_connections.get() {
            return self.stop_at_limit(open, shared, now);
        }
        let listener = &mut self.listeners[i];
        match listener.socket.accept() {
            Ok((stream, peer)) => {
                self.out_of_fds = false;
                if let Some(episode) = &mut self.episode {
                    episode.waited += 1;
                }
                let proxy = listener.proxy;
                self.admit(stream, peer, proxy, tcp, shared, now)
            }
            // The usual end of a batch: the backlog is empty. Told by its
            // errno, inline: `accept_failed` decodes the error's kind (a
            // table walk) behind a call with a large frame for its warnings.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                self.listeners[i].pending = false;
                self.out_of_fds = false;
                if self.episode.is_some() {
                    self.leave_limit(now);
                }
                Accepted::Stop
            }
            Err(e) => self.accept_failed(i, e, open, shared, now),
        }
    }

    /// `max_connections` open: accepting pauses until one closes.
    #[inline(never)]
    fn stop_at_limit(&mut self, open: usize, shared: &mut Shared, now: Instant) -> Accepted {
        self.at_limit = true;
        self.limit_time.start(now);
        shared.counters.accept_pauses += 1;
        self.enter_limit(open, now);
        Accepted::Stop
    }

    /// An accept on listener `i` gave no client: the queue is empty, or
    /// the call failed.
    #[inline(never)]
    fn accept_failed(
        &mut self,
        i: usize,
        e: io::Error,
        open: usize,
        shared: &mut Shared,
        now: Instant,
    ) -> Accepted {
        let listener = &mut self.listeners[i];
        match e {
            e if e.kind() == io::ErrorKind::WouldBlock => {
                listener.pending = false;
                self.out_of_fds = false;
                // Below the limit with nobody waiting: accepting keeps up.
                self.leave_limit(now);
                Accepted::Stop
            }
            e if e.kind() == io::ErrorKind::Interrupted => Accepted::Nothing,
            e if is_resource_exhaustion(&e) => {
                // The client stays queued and no new event will come for
                // it: retry after a pause driven by the loop's timer,
                // instead of spinning on a descriptor we cannot get.
                self.backoff = Some(now + ACCEPT_BACKOFF);
                self.out_of_fds = true;
                self.backoff_time.start(now);
                shared.counters.accept_pauses += 1;
                if let Some(quiet) = self.fd_warning.ready(now) {
                    let since = if quiet > 0 {
                        format!("; {} since the last warning", count(quiet, "more pause"))
                    } else {
                        String::new()
                    };
                    warn!(target: super::LOG_TARGET, "accept on tcp://{}: {e}; pausing accepts for {} ms ({} open){since}",
                        listener.addr,
                        ACCEPT_BACKOFF.as_millis(),
                        count(open as u64, "connection")
                    );
                }
                Accepted::Stop
            }
            e => {
                // ECONNABORTED and the like: that client is gone, the next
                // one may be fine.
                shared.counters.errors_accept += 1;
                debug!(target: super::LOG_TARGET, "accept on tcp://{}: {e}", listener.addr);
                Accepted::Nothing
            }
        }
    }

    /// A graceful shutdown began: takes the clients still queued on every
    /// listener, which may have sent requests too, before closing the
    /// listeners (which would reset them). As many as `max_connections`
    /// allows are returned, to be served; the rest are closed cleanly
    /// unserved. Bounded by the backlog (plus what arrives meanwhile), so a
    /// connect flood cannot hold the shutdown here. The listeners are then
    /// closed.
    pub fn drain_at_shutdown(
        &mut self,
        mut open: usize,
        tcp: &TcpConfig,
        shared: &mut Shared,
        now: Instant,
        registry: &mio::Registry,
    ) -> Vec<Accepted> {
        let mut served = Vec::new();
        let max = tcp.max_connections.get();
        for i in 0..self.listeners.len() {
            for _ in 0..tcp.backlog as usize + super::ACCEPTS_PER_TURN {
                let (stream, peer) = match self.listeners[i].socket.accept() {
                    Ok(accepted) => accepted,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    Err(_) => break,
                };
                if open >= max {
                    shared.counters.conns_accepted += 1;
                    shared.counters.closed_limit += 1;
                    debug!(target: super::LOG_TARGET, "{peer}: shutting down at max_connections: closed unserved");
                    conn::refuse(&mut { stream }, shared);
                    continue;
                }
                let proxy = self.listeners[i].proxy;
                let accepted = self.admit(stream, peer, proxy, tcp, shared, now);
                if let Accepted::Client { .. } = accepted {
                    open += 1;
                    served.push(accepted);
                }
            }
        }
        for mut l in self.listeners.drain(..) {
            let _ = registry.deregister(&mut l.socket);
        }
        self.at_limit = false;
        self.limit_time.stop(now);
        served
    }

    /// A client just accepted: counted, and checked against its address's
    /// limit. It is accepted already (its address is known only then), so
    /// a refusal is a clean close, counted and reported. Inlined: with no
    /// PROXY and no per-address limit (the defaults) it is a count and a
    /// move, and every connection comes through here.
    #[inline]
    fn admit(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        proxy: bool,
        tcp: &TcpConfig,
        shared: &mut Shared,
        now: Instant,
    ) -> Accepted {
        // Counted accepted whatever happens next: every accepted connection
        // ends in exactly one `closed` reason, so accepted = open + closed.
        shared.counters.conns_accepted += 1;
        if !proxy && tcp.max_connections_per_ip.is_none() {
            return Accepted::Client {
                stream,
                peer,
                ip_counted: false,
                proxy,
            };
        }
        self.admit_checked(stream, peer, proxy, tcp, shared, now)
    }

    /// `admit` for a PROXY listener or under a per-address limit.
    #[inline(never)]
    fn admit_checked(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        proxy: bool,
        tcp: &TcpConfig,
        shared: &mut Shared,
        now: Instant,
    ) -> Accepted {
        if proxy {
            // Only a trusted balancer may say whose connection this is; the
            // client's own address is counted once its header names it.
            if !tcp.proxy_trusted.iter().any(|net| net.contains(peer.ip())) {
                shared.counters.closed_untrusted += 1;
                if let Some(quiet) = self.untrusted_warning.ready(now) {
                    warn!(target: super::LOG_TARGET, "PROXY listener: refused {} from outside proxy_trusted, latest from {}",
                        count(quiet + 1, "connection"),
                        peer.ip()
                    );
                }
                conn::refuse(&mut stream, shared);
                return Accepted::Nothing;
            }
            return Accepted::Client {
                stream,
                peer,
                ip_counted: false,
                proxy,
            };
        }
        let Some(ip_counted) = self.claim_ip(peer.ip(), tcp, shared, now) else {
            conn::refuse(&mut stream, shared);
            return Accepted::Nothing;
        };
        Accepted::Client {
            stream,
            peer,
            ip_counted,
            proxy,
        }
    }

    /// Counts a connection from `ip` against `max_connections_per_ip`:
    /// `Some(counted)` when it may be served (`counted`: [`Acceptor::closed`]
    /// must be told when it goes), `None` when the address is at its limit
    /// (counted as closed for the limit; the caller closes it).
    pub fn claim_ip(
        &mut self,
        ip: IpAddr,
        tcp: &TcpConfig,
        shared: &mut Shared,
        now: Instant,
    ) -> Option<bool> {
        let Some(limit) = tcp.max_connections_per_ip else {
            return Some(false);
        };
        let open = self.per_ip.entry(canonical_ip(ip)).or_insert(0);
        if *open >= limit.get() {
            shared.counters.closed_limit += 1;
            if let Some(quiet) = self.per_ip_warning.ready(now) {
                warn!(target: super::LOG_TARGET, "max_connections_per_ip ({limit}) reached: refused {}, latest from {ip}",
                    count(quiet + 1, "connection"),
                );
            }
            return None;
        }
        *open += 1;
        Some(true)
    }

    /// Accepting stopped at `max_connections`. The first stop of an episode
    /// is reported (at most once per `Throttle::EVERY`, however often a
    /// slot frees and fills again); the episode lasts until accepting finds
    /// the backlog empty.
    fn enter_limit(&mut self, open: usize, now: Instant) {
        if self.episode.is_some() {
            return;
        }
        let reported = match self.limit_warning.ready(now) {
            None => false,
            Some(quiet) => {
                let since = if quiet > 0 {
                    format!(
                        "; {} since the last report",
                        count(quiet, "shorter episode")
                    )
                } else {
                    String::new()
                };
                warn!(target: super::LOG_TARGET, "connection limit reached ({open} open): new clients wait in the listen backlog{since}"
                );
                true
            }
        };
        self.episode = Some(LimitEpisode {
            since: now,
            waited: 0,
            reported,
        });
    }

    /// Accepting found the backlog empty: an episode at the limit is over.
    fn leave_limit(&mut self, now: Instant) {
        let Some(episode) = self.episode.take() else {
            return;
        };
        if episode.reported {
            info!(target: super::LOG_TARGET, "connection limit left after {}: {} waited in the listen backlog",
                elapsed(now.saturating_duration_since(episode.since)),
                count(episode.waited, "client")
            );
        }
    }
}

/// Binds a listening socket the way a daemon should: built with socket2 so
/// that IPv6 is v6-only (`0.0.0.0:P` and `[::]:P` can coexist), the backlog is
/// ours (mio's own `bind` uses 128, too small for a load test's burst of
/// connects), close-on-exec and non-blocking from the start.
///
/// With `reuse_port`, several processes may listen on one port
/// (`SO_REUSEPORT`): the kernel spreads new connections across them.
/// `socket_buffer` caps the kernel buffers of every connection it accepts
/// (see [`set_buffers`]); it is set before `listen`, so that no client
/// completes a handshake under the kernel's defaults.
pub fn bind(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    socket_buffer: Option<NonZeroUsize>,
) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Lets a restarted daemon bind while its old connections sit in
    // TIME_WAIT; on Linux it does not let two live listeners share a port.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if let Some(size) = socket_buffer {
        set_buffers(SockRef::from(&socket), size)?;
    }
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    // The buffers are set already, before `listen`.
    adopt(socket, None)
}

/// Takes a socket that is already bound and listening (ours, or passed by
/// systemd, which hands them over blocking) into the loop. A passed one
/// gets `socket_buffer` now: handshakes from here on use it.
pub fn adopt(socket: Socket, socket_buffer: Option<NonZeroUsize>) -> io::Result<Listener> {
    if let Some(size) = socket_buffer {
        set_buffers(SockRef::from(&socket), size)?;
    }
    // Urgent data (telnet's Synch on Ctrl-C) stays in the stream as an
    // ordinary byte, in its place, instead of being cut out of it to wait
    // for a MSG_OOB read that never comes. Set here once: accepted sockets
    // inherit it (and the buffer sizes) from the listener.
    socket.set_out_of_band_inline(true)?;
    // Replies are written whole as soon as they are made; Nagle's
    // algorithm would only hold small ones back waiting for an ACK.
    // Accepted sockets inherit it too (Linux clones the listener's TCP
    // state), which saves a `setsockopt` per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    let socket = TcpListener::from_std(socket.into());
    let addr = socket.local_addr()?;
    Ok(Listener {
        socket,
        addr,
        pending: false,
        mark: Default::default(),
        proxy: false,
    })
}

/// Accept errors that mean "out of a resource", not "this client failed":
/// retrying at once would spin, since the client stays queued (and, under
/// edge-triggered readiness, no new event comes for it).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Caps a socket's kernel buffers: `SO_RCVBUF` and `SO_SNDBUF` of `size`
/// bytes, which the kernel doubles for its bookkeeping (and clamps to
/// `net.core.rmem_max` / `wmem_max`). Setting them also turns the kernel's
/// autotuning off for that socket, which is the point: autotuning grows each
/// buffer up to `tcp_rmem`/`tcp_wmem`'s maxima (tens of MiB), so a few
/// hundred clients that send without reading could hold gigabytes and push
/// the whole host past `tcp_mem`, where every connection stalls.
///
/// On a listener it matters for the handshake: the window scale and the
/// largest window a connection will ever offer (its clamp) are chosen from
/// the listener's receive buffer when the SYN arrives, and the accepted
/// socket inherits the buffers. Capped only after `accept`, a connection
/// would already have offered a window sized for the autotuned maximum,
/// which its smaller buffer could not hold (the kernel then prunes and drops
/// what arrives, and the peer retransmits).
pub fn set_buffers(socket: SockRef<'_>, size: NonZeroUsize) -> io::Result<()> {
    socket.set_recv_buffer_size(size.get())?;
    socket.set_send_buffer_size(size.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_their_connections_get_the_buffer_size() {
        let size = NonZeroUsize::new(96 * 1024);
        let listener = bind("127.0.0.1:0".parse().expect("addr"), 16, false, size).expect("bind");
        // Linux reports twice what was set: half is for its bookkeeping.
        let doubled = 2 * 96 * 1024;
        let l = SockRef::from(&listener.socket);
        assert_eq!(l.recv_buffer_size().expect("SO_RCVBUF"), doubled);
        let _client = std::net::TcpStream::connect(listener.addr).expect("connect");
        let (accepted, _) = loop {
            match listener.socket.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.expect("accept"),
            }
        };
        // Inherited from the listener, before the loop sets them again.
        let a = SockRef::from(&accepted);
        assert_eq!(a.recv_buffer_size().expect("SO_RCVBUF"), doubled);
        // Nagle off and urgent data inline: the loop sets neither itself.
        assert!(a.tcp_nodelay().expect("TCP_NODELAY"));
        assert!(a.out_of_band_inline().expect("SO_OOBINLINE"));
        assert_eq!(a.send_buffer_size().expect("SO_SNDBUF"), doubled);
        set_buffers(a, NonZeroUsize::new(64 * 1024).expect("non-zero")).expect("set");
        let a = SockRef::from(&accepted);
        assert_eq!(a.recv_buffer_size().expect("SO_RCVBUF"), 2 * 64 * 1024);
        assert_eq!(a.send_buffer_size().expect("SO_SNDBUF"), 2 * 64 * 1024);
    }
}
