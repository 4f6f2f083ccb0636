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
//! listener i         -> accept until WouldBlock -> slab   (accept.rs)
//! udp i              -> recv_from, transform, send_to     (udp.rs)
//! conn_base + key    -> read, transform, write            (conn.rs)
//! ```
//!
//! Every handler works under edge-triggered readiness: it keeps going until
//! `WouldBlock` or until its per-turn budget runs out; in the latter case its
//! token is queued for the next turn and the next poll does not wait, so no
//! work is forgotten. A token is queued at most once and runs at most once
//! per turn (`turns.rs`), so one busy client cannot starve the rest.
//!
//! The files, by idea: this one is the loop (poll, dispatch, the slab of
//! connections, idle expiry); `accept.rs` the listeners and the accept
//! policy (connection limit, descriptor back-off, per-address table);
//! `lifecycle.rs` shutdown, reload and what systemd is told; `conn.rs` one
//! client; `udp.rs` the datagram sockets (`mmsg.rs` their batch syscalls),
//! `guard.rs` their policy; `metrics.rs` the Prometheus endpoint (its
//! tokens lie above every connection's), `records.rs` connection records.

mod accept;
mod agent;
mod buffers;
mod conn;
mod drain;
mod guard;
mod handover;
mod idle;
mod lifecycle;
mod metrics;
mod mmsg;
mod proxied;
mod records;
mod stats;
mod throttle;
pub(crate) mod timer;
mod turns;
mod udp;

use std::io;
use std::net::SocketAddr;
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
use accept::{Accepted, Acceptor};
use buffers::Shared;
use conn::{Close, Connection, Fast, Status};
use guard::UdpGuard;
pub use handover::Inherited;
use idle::IdleList;
use lifecycle::{StatusTicker, Watchdog};
use records::Ended;
pub use stats::Counters;
use throttle::count;
use timer::Timer;
use turns::{Mark, Turns};

const SIGNALS: Token = Token(0);
const WAKER: Token = Token(1);
const TIMER: Token = Token(2);
/// Tokens from here on are listeners, then UDP sockets, then connections.
const FIRST_SOCKET: usize = 3;
/// The agent-check listeners' tokens, from here on: far above any
/// connection's (the slab never holds 2^62 connections), and above the
/// metrics endpoint's (`metrics::FIRST_TOKEN`, from `usize::MAX / 4`).
const AGENT_BASE: usize = usize::MAX / 2;
// The endpoint's tokens (listeners, then at most `MAX_CLIENTS` scrapers)
// stay below the agent's, which `dispatch` tests first.
const _: () = assert!(metrics::LAST_TOKEN < AGENT_BASE);

/// Capacity of the events array: how many readiness events one `poll` returns.
const EVENTS_CAPACITY: usize = 1024;
/// The log target of every line the loop writes, whichever file of the
/// module writes it: operators filter on it (`RUST_LOG=upcase::server=debug`)
/// and it did not change when the module was split.
const LOG_TARGET: &str = "upcase::server";

/// Connections one listener may accept per turn.
const ACCEPTS_PER_TURN: usize = 256;

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

/// A connection and the loop's bookkeeping for it.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    /// When bytes last moved in either direction.
    last_active: Instant,
    /// Counted in `per_ip` (the per-address limit was on when it came).
    ip_counted: bool,
    /// Its place in the run queue (queued, last turn it ran).
    mark: Mark,
    /// On a PROXY listener, awaiting its header since this instant
    /// (`proxied.rs`); `None` once served.
    header: Option<Instant>,
    /// When it was accepted, for its record (`log_connections`).
    opened: Instant,
    /// On a PROXY listener, once its header named the client: the
    /// balancer's address (the socket's peer), for its record.
    balancer: Option<SocketAddr>,
}

/// The daemon: bound sockets and the loop that serves them.
pub struct Server {
    poll: Poll,
    config: Config,
    /// The TCP listeners and the accept policy (limits, back-off).
    acceptor: Acceptor,
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
    /// Blocked source ports and per-source rate for UDP.
    guard: UdpGuard,
    /// Graceful shutdown is under way; connections are cut at this instant.
    deadline: Option<Instant>,
    /// systemd's watchdog, when the service manager asked for one.
    watchdog: Option<Watchdog>,
    /// Restarts through the service manager's file descriptor store.
    handover: handover::Handover,
    /// Connections on PROXY listeners awaiting their header.
    headers: proxied::Headers,
    /// The HAProxy agent-check sockets (`[agent] listen`).
    agent: agent::Agent,
    /// The Prometheus endpoint, when `[metrics] listen` has addresses.
    metrics: Option<metrics::Endpoint>,
    /// Reloads and how they went (for the metrics).
    reloads: metrics::Reloads,
    /// Where connection records go (`log_connections`), rate-limited.
    records: records::Records,
    /// systemd's `STATUS=` line kept current, under a service manager.
    status: Option<StatusTicker>,
    /// `metrics` or `status` is there: the loop has work beside serving.
    /// One flag tested per turn, rather than both options.
    side_work: bool,
    /// A graceful shutdown with an agent, still serving (`drain.rs`).
    drain: Option<drain::Drain>,
}

impl Server {
    /// Binds every configured socket (the addresses are logged by `run`).
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        Server::bind_inheriting(config, &mut Inherited::default())
    }

    /// As [`bind`](Server::bind), but an address whose socket a previous
    /// process left in the service manager's store is taken from there
    /// (`handover.rs`) instead of bound.
    pub fn bind_inheriting(
        config: Config,
        inherited: &mut Inherited,
    ) -> Result<Server, ServerError> {
        if config.tcp.listen.is_empty()
            && config.udp.listen.is_empty()
            && config.tcp.proxy_listen.is_empty()
        {
            return Err(ServerError::NothingToServe);
        }
        let mut listeners = Vec::new();
        let proxy_listen = config.tcp.proxy_listen.iter().map(|&addr| (addr, true));
        for (addr, proxy) in config
            .tcp
            .listen
            .iter()
            .map(|&a| (a, false))
            .chain(proxy_listen)
        {
            // Whether a listener wants a PROXY header comes from the
            // config, never from the store: a stored socket is only a socket.
            if let Some(mut listener) = inherited.take_tcp(addr, &config)? {
                listener.proxy = proxy;
                listeners.push(listener);
                continue;
            }
            let mut listener = accept::bind(
                addr,
                config.tcp.backlog,
                config.reuse_port,
                config.tcp.socket_buffer,
            )
            .map_err(|source| ServerError::Bind {
                proto: "tcp",
                addr,
                source,
            })?;
            listener.proxy = proxy;
            listeners.push(listener);
        }
        let mut udp = Vec::new();
        for &addr in &config.udp.listen {
            if let Some(endpoint) = inherited.take_udp(addr)? {
                udp.push(endpoint);
                continue;
            }
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
                    listeners
                        .push(accept::adopt(socket, config.tcp.socket_buffer).map_err(adopted)?);
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
        mut listeners: Vec<accept::Listener>,
        mut udp: Vec<udp::Endpoint>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(ServerError::Setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Setup)?);
        let timer = Timer::new(poll.registry(), TIMER).map_err(ServerError::Setup)?;
        let registry = poll.registry();
        let first_udp = FIRST_SOCKET + listeners.len();
        for l in listeners.iter_mut() {
            // Under socket activation, a passed socket is a PROXY listener
            // when its address is one of proxy_listen.
            l.proxy |= config.tcp.proxy_listen.contains(&l.addr);
        }
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
        let mut agent = agent::Agent::bind(&config.agent.listen, config.reuse_port).map_err(
            |(addr, source)| ServerError::Bind {
                proto: "tcp",
                addr,
                source,
            },
        )?;
        for (i, l) in agent.listeners.iter_mut().enumerate() {
            registry
                .register(&mut l.socket, Token(AGENT_BASE + i), Interest::READABLE)
                .map_err(ServerError::Setup)?;
        }
        let conn_base = first_udp + udp.len();
        let shared = Shared::new(config.tcp.max_pending_output.get());
        let guard = UdpGuard::new(&config.udp, udp.iter().map(|u| u.addr.port()).collect());
        let metrics = metrics::Endpoint::bind(&config.metrics.listen, registry)?;
        let status = StatusTicker::from_environment();
        let side_work = metrics.is_some() || status.is_some();
        Ok(Server {
            poll,
            config,
            acceptor: Acceptor::new(listeners),
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
            guard,
            deadline: None,
            watchdog: Watchdog::from_environment(),
            handover: handover::Handover::default(),
            headers: proxied::Headers::default(),
            agent,
            metrics,
            reloads: metrics::Reloads {
                last_ok: Some(std::time::SystemTime::now()),
                ..Default::default()
            },
            records: records::Records::from_environment(),
            status,
            side_work,
            drain: None,
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

    /// The bound TCP addresses (port 0 resolved), PROXY listeners aside.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        let listeners = self.acceptor.listeners.iter();
        listeners.filter(|l| !l.proxy).map(|l| l.addr).collect()
    }

    /// The bound addresses of the PROXY listeners (`[tcp] proxy_listen`).
    pub fn proxy_addrs(&self) -> Vec<SocketAddr> {
        let listeners = self.acceptor.listeners.iter();
        listeners.filter(|l| l.proxy).map(|l| l.addr).collect()
    }

    /// The bound addresses of the agent-check sockets (`[agent] listen`).
    pub fn agent_addrs(&self) -> Vec<SocketAddr> {
        self.agent.listeners.iter().map(|a| a.addr).collect()
    }

    /// The bound addresses of the Prometheus endpoint (port 0 resolved).
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.metrics
            .as_ref()
            .map_or(Vec::new(), metrics::Endpoint::addrs)
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
        for l in &self.acceptor.listeners {
            let proxy = if l.proxy { " (PROXY protocol)" } else { "" };
            info!("listening on tcp://{}{proxy}", l.addr);
        }
        for u in &self.udp {
            info!("listening on udp://{}", u.addr);
        }
        for a in &self.agent.listeners {
            info!("listening on tcp://{} (agent)", a.addr);
        }
        for addr in self.metrics_addrs() {
            info!("listening on tcp://{addr} (metrics)");
        }
        self.notify(&format!("READY=1\nSTATUS={}", self.status()));
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut due = Vec::new();
        // When the connection idle the longest times out: `expire` finds it
        // at the end of every turn, and the next `poll_timeout` uses it.
        let mut idle_due = self.idle_deadline();
        loop {
            let timeout = self.poll_timeout(idle_due).map_err(ServerError::Timer)?;
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
            // Connections' tokens: `conn_base + key`, below `AGENT_BASE`.
            let conn_span = AGENT_BASE - self.conn_base;
            for event in events.iter() {
                // An error or hang-up is worth a read: it reports the cause
                // (or the EOF) in order, after the data before it. Urgent
                // data (EPOLLPRI) too: Linux ends a read at the urgent mark,
                // so a short read no longer means the queue is empty.
                // `|`, not `||`: every test reads the same flags word, and
                // without the short circuits they fold into a few masks.
                let hup = event.is_read_closed() | event.is_error() | event.is_priority();
                let readable = event.is_readable() | hup;
                let token = event.token();
                // Most events are connections': straight to them, as
                // `dispatch` would send them, without its other tests. One
                // comparison: a token below `conn_base` wraps above the span.
                let key = token.0.wrapping_sub(self.conn_base);
                if key < conn_span {
                    self.on_connection(key, readable, hup, now);
                    continue;
                }
                self.dispatch(token, readable, hup, now)?;
            }
            for &token in &due {
                self.dispatch(token, false, false, now)?;
            }
            idle_due = self.expire(now);
            self.tick_watchdog(now);
            self.handover_turn(now);
            if self.side_work {
                self.side_work(now);
            }
            if self.drain.is_some() {
                self.drain_turn(now);
            }
            if let Some(deadline) = self.deadline {
                if !self.conns.is_empty() && now >= deadline {
                    self.cut_all();
                }
                if self.conns.is_empty() && !self.draining() {
                    info!("shutdown complete; {}", self.shared.counters);
                    return Ok(self.shared.counters.clone());
                }
            }
        }
    }

    /// How long `poll` may sleep: not at all when work is queued, else
    /// until an event, the timer being set to wake the loop by the nearest
    /// deadline (idle timeout, accept back-off, shutdown, watchdog).
    ///
    /// `idle_due`: the idle timeout's deadline as `expire` found it. What
    /// the turn did after `expire` (a handover, a drain, cutting every
    /// connection) can only close connections, so the true deadline is
    /// that one or later: at worst the timer fires early, the turn finds
    /// nothing due and sets it again.
    fn poll_timeout(&mut self, idle_due: Option<Instant>) -> io::Result<Option<Duration>> {
        if self.turns.has_queued() {
            return Ok(Some(Duration::ZERO));
        }
        // One `earlier` after another rather than an array's
        // `flatten().min()`: this runs every turn, and the straight tests
        // cost a few instructions each where the array was built and walked.
        let watchdog = self.watchdog.as_ref().map(Watchdog::due);
        let mut nearest = earlier(idle_due, self.acceptor.backoff_until());
        nearest = earlier(nearest, self.headers.deadline());
        nearest = earlier(nearest, self.deadline);
        nearest = earlier(nearest, self.drain.as_ref().map(drain::Drain::next));
        nearest = earlier(nearest, watchdog);
        // Apart, so that a daemon with neither pays one test a turn.
        if self.side_work {
            let scrape = self.metrics.as_ref().and_then(metrics::Endpoint::deadline);
            let status = self.status.as_ref().map(StatusTicker::due);
            nearest = earlier(earlier(nearest, scrape), status);
        }
        if let Some(at) = nearest {
            self.timer.wake_by(at)?;
        }
        Ok(None)
    }

    /// The run-queue mark of the source behind `token`, if it still exists.
    fn mark(&mut self, token: Token) -> Option<&mut Mark> {
        match token.0 {
            t if t >= AGENT_BASE => {
                (self.agent.listeners.get_mut(t - AGENT_BASE)).map(|a| &mut a.mark)
            }
            t if t >= self.conn_base => self.conns.get_mut(t - self.conn_base).map(|s| &mut s.mark),
            t if t >= self.first_udp => self.udp.get_mut(t - self.first_udp).map(|u| &mut u.mark),
            t if t >= FIRST_SOCKET => self
                .acceptor
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
            Token(t) if t >= AGENT_BASE => self.on_agent(t - AGENT_BASE, token),
            // The metrics endpoint's tokens lie above every connection's:
            // `on_connection` hands them on, so that serving clients pays
            // no test for them.
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
                if let Some(listener) = self.acceptor.listeners.get_mut(i) {
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
        // A drain accepts until its listeners close (then there are none).
        if (self.deadline.is_some() && !self.draining()) || self.acceptor.paused() {
            // `pending` stays set: accepting resumes when the pause ends.
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let open = self.conns.len();
            let tcp = &self.config.tcp;
            match self
                .acceptor
                .accept_one(i, open, tcp, &mut self.shared, now)
            {
                Accepted::Client {
                    stream,
                    peer,
                    ip_counted,
                    proxy,
                } => self.add_connection(stream, peer, ip_counted, proxy, now),
                Accepted::Nothing => {}
                Accepted::Stop => return,
            }
        }
        // Budget spent with clients possibly still queued.
        let listener = &mut self.acceptor.listeners[i];
        self.turns
            .requeue(Token(FIRST_SOCKET + i), &mut listener.mark);
    }

    /// Takes an accepted client into the slab and the poll; from a PROXY
    /// listener (`proxy`), to await its header.
    fn add_connection(
        &mut self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        ip_counted: bool,
        proxy: bool,
        now: Instant,
    ) {
        // TCP_NODELAY, SO_OOBINLINE and the buffer sizes of `[tcp]
        // socket_buffer` come from the listener (`accept::adopt`), as
        // accepted sockets inherit them.
        let conn = Connection::new(stream, peer, self.config.mode, self.config.tcp.telnet);
        self.insert_connection(conn, ip_counted, proxy, now);
    }

    /// Takes a connection (accepted, or handed over by the previous
    /// process) into the slab and the poll; `proxy`: it awaits its PROXY
    /// header (never so for a handed-over one).
    /// Inlined, so that an accepted connection is built where the slab
    /// keeps it rather than moved there (a slot is over 200 bytes).
    #[inline]
    fn insert_connection(&mut self, conn: Connection, ip_counted: bool, proxy: bool, now: Instant) {
        let key = self.conns.insert(Slot {
            conn,
            last_active: now,
            ip_counted,
            mark: Mark::default(),
            header: proxy.then_some(now),
            opened: now,
            balancer: None,
        });
        let token = Token(self.conn_base + key);
        // Registered once for both directions and never re-registered: with
        // edge-triggered readiness, WRITABLE only fires when a full send
        // buffer gets room, which is exactly when pending output can move.
        // PRIORITY reports urgent data, after which a short read is no
        // proof of a drained socket.
        if let Err(e) = self.poll.registry().register(
            self.conns[key].conn.stream_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        ) {
            // Dropped, so closed: it never was in the poll.
            let peer = self.conns.remove(key).conn.peer();
            self.shared.counters.closed_error += 1;
            warn!("{peer}: cannot register connection: {e}");
            if ip_counted {
                self.acceptor.closed(peer.ip());
            }
            return;
        }
        self.idle.push_back(key);
        if proxy {
            self.headers.wait(key, now);
        }
        self.shared.counters.conns_open += 1;
        debug!("{}: connected", self.conns[key].conn.peer());
    }

    /// An event (or a turn) for connection `key`. Inlined into the loop,
    /// where nearly every event comes: a call of its own cost a prologue
    /// and epilogue per event.
    #[inline(always)]
    fn on_connection(&mut self, key: usize, readable: bool, hup: bool, now: Instant) {
        let Some(slot) = self.conns.get_mut(key) else {
            self.no_connection(key, now);
            return;
        };
        if !self.turns.may_run(&mut slot.mark) {
            // Served already this turn (a fresh event for a queued token):
            // keep what this event says for its next run.
            slot.conn.note(readable, hup);
            return;
        }
        // The plain steady state's event, inlined here: read, answer,
        // send, touch. Anything else leaves it by the general rules.
        if slot.header.is_none() {
            match slot.conn.serve_fast(readable, hup, &mut self.shared) {
                Fast::Served => {
                    slot.last_active = now;
                    self.idle.touch(key);
                    return;
                }
                Fast::Ran(status, moved) => {
                    self.ran(key, status, moved, now);
                    return;
                }
                Fast::General => {}
            }
        }
        let slot = if slot.header.is_some() {
            if !self.await_header(key, hup, now) {
                return;
            }
            &mut self.conns[key]
        } else {
            slot
        };
        let moved = self.shared.counters.bytes_in + self.shared.counters.bytes_out;
        let status = slot.conn.ready(readable, hup, &mut self.shared);
        if self.shared.counters.bytes_in + self.shared.counters.bytes_out != moved {
            slot.last_active = now;
            self.idle.touch(key);
        }
        match status {
            Status::Waiting => {}
            Status::Yielded => {
                let token = Token(self.conn_base + key);
                self.turns.requeue(token, &mut slot.mark);
            }
            Status::Closed(reason) => self.closed(key, reason),
        }
    }

    /// An event whose token is no connection's: the metrics endpoint's
    /// (its tokens lie above every connection's), or one for a connection
    /// closed earlier in this same batch, which happens and asks nothing.
    /// Out of line, so that serving connections does not carry it.
    #[cold]
    #[inline(never)]
    fn no_connection(&mut self, key: usize, now: Instant) {
        if key + self.conn_base >= metrics::FIRST_TOKEN {
            self.on_metrics(Token(key + self.conn_base), now);
        }
    }

    /// What a connection's event on the fast path ended in, when it went
    /// on by the general rules: as `on_connection`'s general path after
    /// `ready`. Out of line: the fast path's usual end is `Fast::Served`.
    #[inline(never)]
    fn ran(&mut self, key: usize, status: Status, moved: bool, now: Instant) {
        if moved {
            self.conns[key].last_active = now;
            self.idle.touch(key);
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
            Status::Closed(reason) => self.closed(key, reason),
        }
    }

    /// A connection finished: counted under its reason, recorded, dropped.
    /// Out of line, so that `after`, which runs on every event, stays
    /// small enough to be inlined into the event path.
    #[inline(never)]
    fn closed(&mut self, key: usize, reason: Close) {
        let counters = &mut self.shared.counters;
        let ended = match reason {
            Close::Done => {
                counters.closed_done += 1;
                Ended::Done
            }
            Close::Reset => {
                counters.closed_reset += 1;
                Ended::Reset
            }
            Close::Error => {
                counters.closed_error += 1;
                Ended::Error
            }
        };
        self.record(key, ended);
        self.remove(key);
    }

    /// Drops a connection and, if accepting was paused at the limit,
    /// resumes it. Closing a socket takes it out of epoll only when it was
    /// the socket's last descriptor: one that came through the service
    /// manager's store (not `alone`) may have a duplicate there still, and
    /// would stay registered under its key, its events going to the
    /// connection that takes the slot next; so that one is deregistered
    /// first.
    fn remove(&mut self, key: usize) {
        self.idle.unlink(key);
        let mut slot = self.conns.remove(key);
        if !slot.conn.alone() {
            // Already out if the handover took it; nothing else can fail.
            let _ = self.poll.registry().deregister(slot.conn.stream_mut());
        }
        debug!("{}: closed", slot.conn.peer());
        if slot.ip_counted {
            self.acceptor.closed(slot.conn.peer().ip());
        }
        self.shared.counters.conns_open -= 1;
        let max = self.config.tcp.max_connections.get();
        if self.acceptor.below_limit(self.conns.len(), max) {
            self.resume_accepting();
        }
    }

    /// Queues every listener that may hold waiting clients: no event will
    /// come for them on its own.
    fn resume_accepting(&mut self) {
        for (i, l) in self.acceptor.listeners.iter_mut().enumerate() {
            if l.pending {
                self.turns.requeue(Token(FIRST_SOCKET + i), &mut l.mark);
            }
        }
    }

    /// Timers: idle connections and the end of an accept back-off.
    /// Returns when the connection idle the longest (once those due are
    /// closed) times out, as `idle_deadline` would: computed here, where
    /// it was just compared, rather than again for the next turn's wait.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        self.expire_headers(now);
        if self.acceptor.backoff_over(now) {
            self.resume_accepting();
        }
        let timeout = self.config.tcp.idle_timeout?;
        while let Some(key) = self.idle.front() {
            let slot = &self.conns[key];
            let due = slot.last_active + timeout;
            if due > now {
                return Some(due);
            }
            // No bytes either way for the whole timeout. Usually none are
            // waiting to be read and closing sends a FIN; a client held back
            // by back-pressure (it stopped reading its replies) may still
            // have input in the kernel, and then the close resets it: the
            // replies it never read go with it.
            debug!("{}: idle for {timeout:?}, closing", slot.conn.peer());
            self.conns[key].conn.close_idle(&mut self.shared);
            self.shared.counters.closed_idle += 1;
            self.record(key, Ended::Idle);
            self.remove(key);
        }
        None
    }

    /// What the loop does beside serving, when it has any of it to do:
    /// slow scrapers closed, systemd's status renewed. Out of line: most
    /// daemons have neither, and serving should not carry their code.
    #[cold]
    #[inline(never)]
    fn side_work(&mut self, now: Instant) {
        if let Some(endpoint) = &mut self.metrics {
            endpoint.expire(now);
        }
        self.tick_status(now);
    }

    /// When the connection idle the longest reaches the idle timeout
    /// (before the loop's first turn; `expire` finds it after every turn).
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.config.tcp.idle_timeout?;
        let key = self.idle.front()?;
        Some(self.conns[key].last_active + timeout)
    }
}

/// The earlier of two deadlines, either of which may be absent.
#[inline]
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The address a client is counted under, by both transports (the per-IP
/// limit, the UDP rate limit): an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, from a dual-stack socket) is the IPv4 address.
pub(crate) fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}
