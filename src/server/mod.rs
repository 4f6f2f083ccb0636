//! The event loop: one thread, one `mio::Poll`, every socket of the daemon.
//!
//! This module owns the only `poll()` call and every (re)registration.
//! Readiness events are dispatched by token to small handlers:
//!
//! ```text
//! SIGNALS            -> shutdown / reload / counters      (signals.rs)
//! WAKER              -> shutdown asked by a Handle        (tests, embedders)
//! TIMER              -> idle timeouts, accept back-off,   (timer.rs)
//!                       shutdown deadline, watchdog
//! listener i         -> accept until WouldBlock -> slab   (tcp.rs)
//! udp i              -> recv_from, transform, send_to     (udp.rs)
//! conn_base + key    -> read, transform, write            (conn.rs)
//! ```
//!
//! Every handler works under edge-triggered readiness: it keeps going until
//! `WouldBlock` or until its per-turn budget runs out; in the latter case its
//! token is queued for the next turn and the next poll does not wait, so no
//! work is forgotten. A token is queued at most once and runs at most once
//! per turn (`turns.rs`), so one busy client cannot starve the rest.

mod buffers;
mod conn;
mod guard;
mod idle;
mod mmsg;
mod stats;
mod tcp;
mod throttle;
mod timer;
mod turns;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::signals::{Request, Signals};
use crate::systemd::ListenFd;
use crate::transform;
use buffers::Shared;
use conn::{Close, Connection, Status};
use guard::UdpGuard;
use idle::{IdleList, Link, Linked};
pub use stats::Counters;
use throttle::{count, Throttle};
use timer::Timer;
use turns::{Mark, Turns};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const TIMER: Token = Token(2);
/// Tokens from here on are listeners, then UDP sockets, then connections.
const FIRST_SOCKET: usize = 3;

/// Capacity of the events array: how many readiness events one `poll` returns.
const EVENTS_CAPACITY: usize = 1024;
/// Connections one listener may accept per turn.
const ACCEPTS_PER_TURN: usize = 256;
/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address could not be bound (in use, not local, no permission...).
    #[error("cannot bind {proto}://{addr}: {source}")]
    Bind {
        /// "tcp" or "udp".
        proto: &'static str,
        /// The address from the config.
        addr: SocketAddr,
        /// The OS reason.
        source: io::Error,
    },
    /// Both listen lists are empty: there is nothing to serve.
    #[error("nothing to listen on: [tcp] listen and [udp] listen are both empty")]
    NothingToServe,
    /// A socket passed by the service manager cannot be served.
    #[error("cannot use the socket {0:?} passed by the service manager: {1}")]
    Adopt(String, #[source] io::Error),
    /// The poll, waker or signal handlers could not be set up.
    #[error("cannot set up the event loop: {0}")]
    Setup(#[source] io::Error),
    /// `poll` itself failed (not `EINTR`, which is retried).
    #[error("poll failed: {0}")]
    Poll(#[source] io::Error),
    /// Setting the loop's deadline timer (`timerfd_settime`) failed.
    #[error("cannot set the event loop's timer: {0}")]
    Timer(#[source] io::Error),
    /// A second SIGTERM/SIGINT arrived during the graceful shutdown.
    #[error("second shutdown signal: exited at once, {0} connections cut")]
    Interrupted(usize),
}

/// Re-reads the configuration on SIGHUP; an `Err` carries the message to log.
pub type Reloader = Box<dyn FnMut() -> Result<Config, String> + Send>;

/// Asks a running server to shut down gracefully, from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Handle {
    /// The same graceful shutdown as SIGTERM.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
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

/// A connection and the loop's bookkeeping for it.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    /// When bytes last moved in either direction.
    last_active: Instant,
    /// Its place in the list of connections by last activity.
    link: Link,
    /// Counted in `per_ip` (the per-address limit was on when it came).
    ip_counted: bool,
    /// Its place in the run queue (queued, last turn it ran).
    mark: Mark,
}

impl Linked for Slot {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

/// The daemon: bound sockets and the loop that serves them.
pub struct Server {
    poll: Poll,
    config: Config,
    listeners: Vec<tcp::Listener>,
    udp: Vec<udp::Endpoint>,
    conns: Slab<Slot>,
    /// Token of the first UDP socket (listeners come before, from `FIRST_SOCKET`).
    first_udp: usize,
    /// Token of slab key 0.
    conn_base: usize,
    shared: Shared,
    signals: Option<Signals>,
    reloader: Option<Reloader>,
    waker: Arc<Waker>,
    /// Wakes the loop for its nearest deadline.
    timer: Timer,
    stop: Arc<AtomicBool>,
    /// The turn counter and the tokens whose handler ran out of budget,
    /// served again next turn.
    turns: Turns,
    /// Every connection, the one idle the longest first.
    idle: IdleList,
    /// Open connections per client address, while `max_connections_per_ip` is set.
    per_ip: HashMap<IpAddr, usize>,
    /// The warning about `max_connections_per_ip` refusals.
    per_ip_warning: Throttle,
    /// Blocked source ports and per-source rate for UDP.
    guard: UdpGuard,
    /// The connection limit is reached: accepting waits for a slot.
    at_limit: bool,
    /// The time at the connection limit under way, if any.
    limit_episode: Option<LimitEpisode>,
    /// The lines about the connection limit.
    limit_warning: Throttle,
    /// Out of file descriptors: accepting waits until then.
    accept_backoff: Option<Instant>,
    /// The warning about running out of file descriptors.
    fd_warning: Throttle,
    /// Graceful shutdown is under way; connections are cut at this instant.
    deadline: Option<Instant>,
    /// systemd's watchdog: its interval, and when the next ping is due.
    watchdog: Option<(Duration, Instant)>,
}

impl Server {
    /// Binds every configured socket (the addresses are logged by `run`).
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        if config.tcp.listen.is_empty() && config.udp.listen.is_empty() {
            return Err(ServerError::NothingToServe);
        }
        let mut listeners = Vec::new();
        for &addr in &config.tcp.listen {
            let listener =
                tcp::bind(addr, config.tcp.backlog, config.reuse_port).map_err(|source| {
                    ServerError::Bind {
                        proto: "tcp",
                        addr,
                        source,
                    }
                })?;
            listeners.push(listener);
        }
        let mut udp = Vec::new();
        for &addr in &config.udp.listen {
            let endpoint =
                udp::bind(addr, config.reuse_port).map_err(|source| ServerError::Bind {
                    proto: "udp",
                    addr,
                    source,
                })?;
            udp.push(endpoint);
        }
        Server::with_sockets(config, listeners, udp)
    }

    /// Serves the sockets systemd passed (socket activation) instead of the
    /// configured addresses. Each is told apart by its type: a stream socket
    /// must be listening, a datagram socket is served as UDP.
    ///
    /// Closing our copy of a passed listener at shutdown is fine (systemd
    /// keeps its own); calling `shutdown()` on it would not be, and is never done.
    pub fn adopt(config: Config, fds: Vec<ListenFd>) -> Result<Server, ServerError> {
        let mut listeners = Vec::new();
        let mut udp = Vec::new();
        for passed in fds {
            let name = passed.name.unwrap_or_else(|| "unnamed".into());
            let socket = socket2::Socket::from(passed.fd);
            let adopted = |e: io::Error| ServerError::Adopt(name.clone(), e);
            match socket.r#type().map_err(adopted)? {
                socket2::Type::STREAM => {
                    if !socket.is_listener().map_err(adopted)? {
                        return Err(adopted(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a stream socket that is not listening (Accept=yes is not supported)",
                        )));
                    }
                    listeners.push(tcp::adopt(socket).map_err(adopted)?);
                }
                socket2::Type::DGRAM => udp.push(udp::adopt(socket).map_err(adopted)?),
                other => {
                    return Err(adopted(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("unsupported socket type {other:?}"),
                    )))
                }
            }
        }
        info!(
            "socket activation: serving {} and {} passed by the service manager; \
             the configured listen addresses are ignored",
            count(listeners.len() as u64, "TCP socket"),
            count(udp.len() as u64, "UDP socket")
        );
        if listeners.is_empty() && udp.is_empty() {
            return Err(ServerError::NothingToServe);
        }
        Server::with_sockets(config, listeners, udp)
    }

    fn with_sockets(
        config: Config,
        mut listeners: Vec<tcp::Listener>,
        mut udp: Vec<udp::Endpoint>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Setup)?);
        let timer = Timer::new(poll.registry(), TIMER).map_err(ServerError::Setup)?;
        let registry = poll.registry();
        let first_udp = FIRST_SOCKET + listeners.len();
        for (i, l) in listeners.iter_mut().enumerate() {
            registry
                .register(&mut l.socket, Token(FIRST_SOCKET + i), Interest::READABLE)
                .map_err(ServerError::Setup)?;
        }
        for (i, u) in udp.iter_mut().enumerate() {
            registry
                .register(&mut u.socket, Token(first_udp + i), Interest::READABLE)
                .map_err(ServerError::Setup)?;
        }
        let conn_base = first_udp + udp.len();
        let shared = Shared::new(config.tcp.max_pending_output.get());
        let guard = UdpGuard::new(&config.udp, udp.iter().map(|u| u.addr.port()).collect());
        Ok(Server {
            poll,
            config,
            listeners,
            udp,
            conns: Slab::new(),
            first_udp,
            conn_base,
            shared,
            signals: None,
            reloader: None,
            waker,
            timer,
            stop: Arc::new(AtomicBool::new(false)),
            turns: Turns::default(),
            idle: IdleList::default(),
            per_ip: HashMap::new(),
            per_ip_warning: Throttle::default(),
            guard,
            at_limit: false,
            limit_episode: None,
            limit_warning: Throttle::default(),
            accept_backoff: None,
            fd_warning: Throttle::default(),
            deadline: None,
            watchdog: crate::systemd::watchdog_interval().map(|i| (i, Instant::now())),
        })
    }

    /// Handles SIGTERM, SIGINT, SIGHUP and SIGUSR1 in the loop. Only the
    /// binary does this: a library user (or a test) keeps its own signals.
    pub fn handle_signals(&mut self) -> Result<(), ServerError> {
        let mut signals = Signals::new().map_err(ServerError::Setup)?;
        signals
            .register(self.poll.registry(), SIGNALS)
            .map_err(ServerError::Setup)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// What SIGHUP calls to get the new configuration.
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// A handle that stops this server gracefully from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// The bound TCP addresses (port 0 resolved).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// The bound UDP addresses (port 0 resolved).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|u| u.addr).collect()
    }

    /// Serves until a graceful shutdown completes (or is cut at its deadline).
    ///
    /// Logs `listening on PROTO://ADDR` for every socket, with the real
    /// address, and tells systemd it is ready: only here, once signal
    /// handlers are in place, so whoever reacts to those lines (a test, a
    /// script, systemd) can already signal the daemon safely.
    pub fn run(mut self) -> Result<Counters, ServerError> {
        transform::warm_up(self.config.mode);
        for l in &self.listeners {
            info!("listening on tcp://{}", l.addr);
        }
        for u in &self.udp {
            info!("listening on udp://{}", u.addr);
        }
        self.notify(&format!("READY=1\nSTATUS={}", self.status()));
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut due = Vec::new();
        loop {
            let timeout = self.poll_timeout().map_err(ServerError::Timer)?;
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    // A signal arrived during the wait; its own event follows.
                    continue;
                }
                return Err(ServerError::Poll(e));
            }
            let now = Instant::now();
            self.turns.begin(&mut due);
            for &token in &due {
                if let Some(mark) = self.mark(token) {
                    Turns::dequeued(mark);
                }
            }
            for event in events.iter() {
                // An error or hang-up is worth a read: it reports the cause
                // (or the EOF) in order, after the data before it. Urgent
                // data (EPOLLPRI) too: Linux ends a read at the urgent mark,
                // so a short read no longer means the queue is empty.
                let hup = event.is_read_closed() || event.is_error() || event.is_priority();
                self.dispatch(event.token(), event.is_readable() || hup, hup, now)?;
            }
            for &token in &due {
                self.dispatch(token, false, false, now)?;
            }
            self.expire(now);
            if let Some((interval, next)) = self.watchdog {
                if now >= next {
                    self.notify(&format!("WATCHDOG=1\nSTATUS={}", self.status()));
                    // Twice per interval, as systemd recommends: a late
                    // wake-up must not cost us the service.
                    self.watchdog = Some((interval, now + interval / 2));
                }
            }
            if let Some(deadline) = self.deadline {
                if !self.conns.is_empty() && now >= deadline {
                    self.cut_all();
                }
                if self.conns.is_empty() {
                    info!("shutdown complete; {}", self.shared.counters);
                    return Ok(self.shared.counters.clone());
                }
            }
        }
    }

    /// How long `poll` may sleep: not at all when work is queued, else
    /// until an event, the timer being set to wake the loop by the nearest
    /// deadline (idle timeout, accept back-off, shutdown, watchdog).
    fn poll_timeout(&mut self) -> io::Result<Option<Duration>> {
        if self.turns.has_queued() {
            return Ok(Some(Duration::ZERO));
        }
        let watchdog = self.watchdog.map(|(_, next)| next);
        let nearest = [
            self.idle_deadline(),
            self.accept_backoff,
            self.deadline,
            watchdog,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = nearest {
            self.timer.wake_by(at)?;
        }
        Ok(None)
    }

    /// The run-queue mark of the source behind `token`, if it still exists.
    fn mark(&mut self, token: Token) -> Option<&mut Mark> {
        match token.0 {
            t if t >= self.conn_base => self.conns.get_mut(t - self.conn_base).map(|s| &mut s.mark),
            t if t >= self.first_udp => self.udp.get_mut(t - self.first_udp).map(|u| &mut u.mark),
            t if t >= FIRST_SOCKET => self
                .listeners
                .get_mut(t - FIRST_SOCKET)
                .map(|l| &mut l.mark),
            _ => None,
        }
    }

    fn dispatch(
        &mut self,
        token: Token,
        readable: bool,
        hup: bool,
        now: Instant,
    ) -> Result<(), ServerError> {
        match token {
            SIGNALS => self.on_signals(now)?,
            WAKER => {
                if self.stop.load(Ordering::SeqCst) {
                    self.begin_shutdown(now)?;
                }
            }
            // What is due is done after every batch of events (`expire`).
            TIMER => self.timer.fired(),
            Token(t) if t >= self.conn_base => {
                self.on_connection(t - self.conn_base, readable, hup, now)
            }
            // Sockets are looked up with `get`: after a shutdown began, the
            // listener and UDP lists are empty but a queued token may remain.
            Token(t) if t >= self.first_udp => {
                if let Some(endpoint) = self.udp.get_mut(t - self.first_udp) {
                    if !self.turns.may_run(&mut endpoint.mark) {
                        return Ok(());
                    }
                    let mode = self.config.mode;
                    let budget = udp::DATAGRAMS_PER_TURN;
                    if endpoint.serve(mode, &mut self.guard, &mut self.shared, budget, now) {
                        self.turns.requeue(token, &mut endpoint.mark);
                    }
                }
            }
            Token(t) => {
                let i = t - FIRST_SOCKET;
                if let Some(listener) = self.listeners.get_mut(i) {
                    if readable {
                        listener.pending = true;
                    }
                    if self.turns.may_run(&mut listener.mark) {
                        self.accept(i, now);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_signals(&mut self, now: Instant) -> Result<(), ServerError> {
        let Some(signals) = self.signals.as_mut() else {
            return Ok(());
        };
        let requests: Vec<Request> = signals.pending().collect();
        for request in requests {
            match request {
                Request::Shutdown if self.deadline.is_some() => {
                    let cut = self.conns.len();
                    warn!(
                        "second shutdown signal: exiting now, cutting {}",
                        count(cut as u64, "connection")
                    );
                    return Err(ServerError::Interrupted(cut));
                }
                Request::Shutdown => self.begin_shutdown(now)?,
                Request::Reload => self.reload(),
                Request::Stats => info!("counters: {}", self.shared.counters),
            }
        }
        Ok(())
    }

    /// Accepts waiting clients until `WouldBlock`, the per-turn budget, the
    /// connection limit or the file-descriptor limit.
    fn accept(&mut self, i: usize, now: Instant) {
        if self.deadline.is_some() || self.at_limit || self.accept_backoff.is_some() {
            // `pending` stays set: accepting resumes when the pause ends.
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if self.conns.len() >= self.config.tcp.max_connections.get() {
                self.at_limit = true;
                self.shared.counters.accept_pauses += 1;
                self.enter_limit(now);
                return;
            }
            let listener = &mut self.listeners[i];
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    if let Some(episode) = &mut self.limit_episode {
                        episode.waited += 1;
                    }
                    self.add_connection(stream, peer, now)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    listener.pending = false;
                    // Below the limit with nobody waiting: accepting keeps up.
                    self.leave_limit(now);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if tcp::is_resource_exhaustion(&e) => {
                    // The client stays queued and no new event will come for
                    // it: retry after a pause driven by the poll timeout,
                    // instead of spinning on a descriptor we cannot get.
                    self.accept_backoff = Some(now + ACCEPT_BACKOFF);
                    self.shared.counters.accept_pauses += 1;
                    if let Some(quiet) = self.fd_warning.ready(now) {
                        let since = if quiet > 0 {
                            format!("; {} since the last warning", count(quiet, "more pause"))
                        } else {
                            String::new()
                        };
                        warn!(
                            "accept on tcp://{}: {e}; pausing accepts for {} ms ({} open){since}",
                            listener.addr,
                            ACCEPT_BACKOFF.as_millis(),
                            count(self.conns.len() as u64, "connection")
                        );
                    }
                    return;
                }
                Err(e) => {
                    // ECONNABORTED and the like: that client is gone, the
                    // next one may be fine.
                    self.shared.counters.errors += 1;
                    debug!("accept on tcp://{}: {e}", listener.addr);
                }
            }
        }
        // Budget spent with clients possibly still queued.
        let listener = &mut self.listeners[i];
        self.turns
            .requeue(Token(FIRST_SOCKET + i), &mut listener.mark);
    }

    fn add_connection(&mut self, stream: mio::net::TcpStream, peer: SocketAddr, now: Instant) {
        // Counted accepted whatever happens next: every accepted connection
        // ends in exactly one `closed` reason, so accepted = open + closed.
        self.shared.counters.conns_accepted += 1;
        let ip_counted = match self.config.tcp.max_connections_per_ip {
            None => false,
            Some(limit) => {
                let open = self.per_ip.entry(udp::canonical_ip(peer.ip())).or_insert(0);
                if *open >= limit.get() {
                    // Its address is at the limit. The client is already
                    // accepted (the address is known only then): closing it
                    // now is the refusal, counted and reported.
                    self.refuse_per_ip(peer, limit.get(), now);
                    conn::refuse(stream, &mut self.shared);
                    return;
                }
                *open += 1;
                true
            }
        };
        // Replies are written whole as soon as they are made; Nagle's
        // algorithm would only hold small ones back waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: TCP_NODELAY: {e}");
        }
        // Urgent data (telnet's Synch on Ctrl-C) stays in the stream as an
        // ordinary byte, in its place, instead of being cut out of it to
        // wait for a MSG_OOB read that never comes.
        if let Err(e) = socket2::SockRef::from(&stream).set_out_of_band_inline(true) {
            debug!("{peer}: SO_OOBINLINE: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(self.conn_base + key);
        let mut slot = Slot {
            conn: Connection::new(stream, peer, self.config.mode, self.config.tcp.telnet),
            last_active: now,
            link: Link::default(),
            ip_counted,
            mark: Mark::default(),
        };
        // Registered once for both directions and never re-registered: with
        // edge-triggered readiness, WRITABLE only fires when a full send
        // buffer gets room, which is exactly when pending output can move.
        // PRIORITY reports urgent data, after which a short read is no
        // proof of a drained socket.
        if let Err(e) = self.poll.registry().register(
            slot.conn.stream_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            self.shared.counters.closed_error += 1;
            warn!("{peer}: cannot register connection: {e}");
            if ip_counted {
                self.uncount_ip(peer.ip());
            }
            return;
        }
        entry.insert(slot);
        self.idle.push_back(&mut self.conns, key);
        self.shared.counters.conns_open += 1;
        debug!("{peer}: connected");
    }

    fn on_connection(&mut self, key: usize, readable: bool, hup: bool, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            // Sporadic events happen (an event for a connection closed
            // earlier in this same batch); there is nothing to do.
            return;
        };
        if !self.turns.may_run(&mut slot.mark) {
            // Served already this turn (a fresh event for a queued token):
            // keep what this event says for its next run.
            slot.conn.note(readable, hup);
            return;
        }
        let moved = self.shared.counters.bytes_in + self.shared.counters.bytes_out;
        let status = slot.conn.ready(readable, hup, &mut self.shared);
        if self.shared.counters.bytes_in + self.shared.counters.bytes_out != moved {
            slot.last_active = now;
            self.idle.touch(&mut self.conns, key);
        }
        self.after(key, status);
    }

    /// Acts on what a connection said about itself.
    fn after(&mut self, key: usize, status: Status) {
        match status {
            Status::Waiting => {}
            Status::Yielded => {
                let token = Token(self.conn_base + key);
                self.turns.requeue(token, &mut self.conns[key].mark);
            }
            Status::Closed(reason) => {
                let counters = &mut self.shared.counters;
                match reason {
                    Close::Done => counters.closed_done += 1,
                    Close::Reset => counters.closed_reset += 1,
                    Close::Error => counters.closed_error += 1,
                }
                self.remove(key);
            }
        }
    }

    /// Drops a connection (closing its socket also removes it from epoll)
    /// and, if accepting was paused at the limit, resumes it.
    fn remove(&mut self, key: usize) {
        self.idle.unlink(&mut self.conns, key);
        let slot = self.conns.remove(key);
        debug!("{}: closed", slot.conn.peer());
        if slot.ip_counted {
            self.uncount_ip(slot.conn.peer().ip());
        }
        self.shared.counters.conns_open -= 1;
        if self.at_limit && self.conns.len() < self.config.tcp.max_connections.get() {
            self.at_limit = false;
            debug!("below the connection limit again: accepting resumed");
            self.resume_accepting();
        }
    }

    /// Accepting stopped at `max_connections`. The first stop of an episode
    /// is reported (at most once per `Throttle::EVERY`, however often a
    /// slot frees and fills again); the episode lasts until accepting finds
    /// the backlog empty.
    fn enter_limit(&mut self, now: Instant) {
        if self.limit_episode.is_some() {
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
                warn!(
                    "connection limit reached ({} open): new clients wait in the listen backlog{since}",
                    self.conns.len()
                );
                true
            }
        };
        self.limit_episode = Some(LimitEpisode {
            since: now,
            waited: 0,
            reported,
        });
    }

    /// Accepting found the backlog empty: an episode at the limit is over.
    fn leave_limit(&mut self, now: Instant) {
        let Some(episode) = self.limit_episode.take() else {
            return;
        };
        if episode.reported {
            info!(
                "connection limit left after {}: {} waited in the listen backlog",
                throttle::elapsed(now.saturating_duration_since(episode.since)),
                count(episode.waited, "client")
            );
        }
    }

    fn uncount_ip(&mut self, ip: IpAddr) {
        let ip = udp::canonical_ip(ip);
        if let Some(open) = self.per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Closes a client whose address is at `max_connections_per_ip`; warns
    /// at most every ten seconds, with the count since the last warning.
    fn refuse_per_ip(&mut self, peer: SocketAddr, limit: usize, now: Instant) {
        self.shared.counters.closed_limit += 1;
        if let Some(quiet) = self.per_ip_warning.ready(now) {
            warn!(
                "max_connections_per_ip ({limit}) reached: refused {}, latest from {}",
                count(quiet + 1, "connection"),
                peer.ip()
            );
        }
    }

    /// Queues every listener that may hold waiting clients: no event will
    /// come for them on its own.
    fn resume_accepting(&mut self) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.pending {
                self.turns.requeue(Token(FIRST_SOCKET + i), &mut l.mark);
            }
        }
    }

    /// Timers: idle connections and the end of an accept back-off.
    fn expire(&mut self, now: Instant) {
        if self.accept_backoff.is_some_and(|at| at <= now) {
            self.accept_backoff = None;
            self.resume_accepting();
        }
        let Some(timeout) = self.config.tcp.idle_timeout else {
            return;
        };
        while let Some(key) = self.idle.front() {
            let slot = &self.conns[key];
            if slot.last_active + timeout > now {
                break;
            }
            // No bytes either way for the whole timeout, so none are
            // waiting to be read: closing sends a plain FIN.
            debug!("{}: idle for {timeout:?}, closing", slot.conn.peer());
            self.conns[key].conn.close_idle(&mut self.shared);
            self.shared.counters.closed_idle += 1;
            self.remove(key);
        }
    }

    /// When the connection idle the longest reaches the idle timeout.
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.tcp.idle_timeout?;
        let key = self.idle.front()?;
        Some(self.conns[key].last_active + timeout)
    }

    /// SIGTERM/SIGINT: stop accepting, answer everything already received,
    /// flush, half-close, and wait (up to the deadline) for clients to finish.
    fn begin_shutdown(&mut self, now: Instant) -> Result<(), ServerError> {
        if self.deadline.is_some() {
            return Ok(());
        }
        let timeout = self.config.shutdown_timeout;
        self.deadline = Some(now + timeout);
        self.notify(&format!(
            "STOPPING=1\nSTATUS=shutting down: {} to finish",
            count(self.conns.len() as u64, "connection")
        ));
        info!(
            "shutting down: {} to finish (deadline {})",
            count(self.conns.len() as u64, "connection"),
            crate::config::format_duration(timeout)
        );
        // Clients already in the accept queue may have sent requests too:
        // take them in before closing the listeners (which would reset them),
        // as many as `max_connections` allows; the rest are closed cleanly
        // unserved. Bounded by the backlog (plus what arrives meanwhile), so
        // a connect flood cannot hold the shutdown here.
        let max = self.config.tcp.max_connections.get();
        for i in 0..self.listeners.len() {
            for _ in 0..self.config.tcp.backlog as usize + ACCEPTS_PER_TURN {
                match self.listeners[i].socket.accept() {
                    Ok((stream, peer)) if self.conns.len() < max => {
                        self.add_connection(stream, peer, now)
                    }
                    Ok((stream, peer)) => {
                        self.shared.counters.conns_accepted += 1;
                        self.shared.counters.closed_limit += 1;
                        debug!("{peer}: shutting down at max_connections: closed unserved");
                        conn::refuse(stream, &mut self.shared);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(_) => break,
                }
            }
        }
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l.socket);
        }
        self.at_limit = false;
        // Datagrams already queued get their answers; then the sockets close.
        for mut endpoint in self.udp.drain(..) {
            let mode = self.config.mode;
            let budget = udp::SHUTDOWN_BUDGET;
            endpoint.serve(mode, &mut self.guard, &mut self.shared, budget, now);
            let _ = self.poll.registry().deregister(&mut endpoint.socket);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let status = self.conns[key].conn.begin_shutdown(&mut self.shared);
            self.after(key, status);
        }
        Ok(())
    }

    /// The shutdown deadline passed: close what is left and say what was cut.
    fn cut_all(&mut self) {
        let n = self.conns.len();
        let unsent: usize = self
            .conns
            .iter()
            .map(|(_, s)| s.conn.pending_output())
            .sum();
        warn!(
            "shutdown deadline passed: cut {} with {} of replies unsent",
            count(n as u64, "connection"),
            count(unsent as u64, "byte")
        );
        self.shared.counters.closed_cut += n as u64;
        self.shared.counters.conns_open -= n as u64;
        self.conns.clear();
        self.idle = IdleList::default();
    }

    /// Tells systemd (if it is listening) about our state.
    fn notify(&self, message: &str) {
        if let Err(e) = crate::systemd::notify(message) {
            warn!("cannot notify the service manager: {e}");
        }
    }

    /// A one-line summary for systemd's `STATUS=`.
    fn status(&self) -> String {
        let sockets: Vec<String> = (self.listeners.iter().map(|l| format!("tcp://{}", l.addr)))
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
    fn reload(&mut self) {
        self.notify(&crate::systemd::reloading_message());
        self.apply_reload();
        self.notify(&format!("READY=1\nSTATUS={}", self.status()));
    }

    fn apply_reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            info!("SIGHUP: no configuration source to reload");
            return;
        };
        let new = match reloader() {
            Ok(config) => config,
            Err(message) => {
                error!("reload failed, keeping the current configuration: {message}");
                return;
            }
        };
        let old = std::mem::replace(&mut self.config, new);
        let new = &self.config;
        if new.tcp.listen != old.tcp.listen
            || new.udp.listen != old.udp.listen
            || new.tcp.backlog != old.tcp.backlog
            || new.reuse_port != old.reuse_port
        {
            warn!("reload: listen addresses, backlog and reuse_port cannot change live; restart to apply them");
        }
        transform::warm_up(new.mode);
        self.shared.max_pending_output = new.tcp.max_pending_output.get();
        self.guard.reconfigure(&new.udp);
        if new.tcp.max_connections_per_ip.is_some() != old.tcp.max_connections_per_ip.is_some() {
            // Counting starts (or stops) with connections accepted from now
            // on; those already open are not counted against the new limit.
            warn!("reload: max_connections_per_ip applies to connections accepted from now on");
        }
        info!(
            "configuration reloaded: mode {}, telnet {}, max_connections {}, idle_timeout {}, max_pending_output {}, shutdown_timeout {}",
            new.mode,
            new.tcp.telnet,
            new.tcp.max_connections,
            new.tcp.idle_timeout.map_or("off".to_owned(), crate::config::format_duration),
            count(new.tcp.max_pending_output.get() as u64, "byte"),
            crate::config::format_duration(new.shutdown_timeout)
        );
        if self.at_limit && self.conns.len() < self.config.tcp.max_connections.get() {
            self.at_limit = false;
            self.resume_accepting();
        }
    }
}
