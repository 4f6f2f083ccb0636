//! The `churn` mode: connection churn, the textbook client's own pattern.
//! Each of `--connections` clients loops: connect, send
//! `--requests-per-connection` requests (up to `--pipeline` in flight),
//! verify every byte of every reply, close, and connect again at once.
//! Every client socket is driven by one `mio::Poll` on one thread, the
//! client's index being its token.
//!
//! A connection ends in one of two ways (`--close`):
//!
//! - `fin`: the client shuts down its write side and waits for the server's
//!   EOF, with nothing after the last reply, then closes. The client closed
//!   first, so its side of the connection stays in TIME_WAIT for 60 s,
//!   holding its ephemeral port (see [`limits`]).
//! - `rst`: the client closes with `SO_LINGER` 0 right after the last reply:
//!   the kernel sends a reset and frees the connection at once on both
//!   sides (no TIME_WAIT anywhere).
//!
//! Timed per connection: connect (`connect()` to established), first reply
//! (first request sent to the last byte of its reply), close (start of the
//! close to its end: the server's EOF, or the return of `close` with a
//! reset), and the whole connection. Only phases that end inside the
//! measured window count in the figures; errors count whenever they happen.
//!
//! The phases of the run are those of the `tcp` mode: every client
//! completes a first connection (a client whose first connection fails
//! stops there: against a server that gets it wrong every time the run
//! ends quickly), `--warmup`, the window, then no new connections and
//! `--drain-timeout` for the ones under way. Later failures are counted and
//! the client goes on with a new connection.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::payload::Payloads;
use super::report::{ChurnFailures, ChurnFigures, Latency, Report};
use super::tcp::{connect_failure, connected, write_unsent};
use super::verify::StreamCheck;
use super::{new_histogram, BenchError, Close, ErrorKind, Options, Recorder};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Non-blocking connect in progress.
    Connecting,
    /// Requests and replies.
    Exchange,
    /// `fin`: the client shut down its write side and awaits the EOF.
    Closing,
}

/// One connection of a client.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Where it is.
    step: Step,
    /// The requests in flight and the check of their replies (tag: when
    /// each was sent, and which it was).
    check: StreamCheck<(Instant, usize)>,
    /// Requests queued but not completely written, oldest first.
    unsent: VecDeque<usize>,
    /// Bytes of the oldest unsent request already written.
    unsent_offset: usize,
    /// Requests queued so far on this connection.
    sent: u32,
    /// The variant of its first request: each connection starts at another
    /// one, so a server that answers with a previous connection's bytes
    /// sends wrong bytes.
    first_variant: usize,
    /// When `connect()` was called.
    started: Instant,
    /// When the first request was queued.
    first_sent: Option<Instant>,
    /// When the close began.
    close_started: Option<Instant>,
}

/// One of the concurrent clients.
#[derive(Default)]
struct Client {
    /// Its connection now, if any.
    conn: Option<Conn>,
    /// Whether it completed a whole connection (it counts as up).
    up: bool,
    /// Its first connection failed: it opens no more.
    retired: bool,
    /// Connections it started (picks the requests' variants).
    serial: u64,
}

/// The phase histograms, nanoseconds.
struct Phases {
    connect: Histogram<u64>,
    first_reply: Histogram<u64>,
    close: Histogram<u64>,
    connection: Histogram<u64>,
}

/// Everything the handlers share besides the client itself.
struct Shared<'a> {
    options: &'a Options,
    payloads: &'a Payloads,
    rec: Recorder,
    phases: Phases,
    failures: ChurnFailures,
    /// Connections completed in the window, and in all.
    connections: u64,
    connections_total: u64,
    /// Read buffer shared by every connection.
    buf: Vec<u8>,
    /// Where queued requests are put together for one write.
    scratch: Vec<u8>,
    /// Requests per connection.
    requests: u32,
    /// In flight per connection.
    depth: usize,
    /// Clients up.
    up: usize,
}

/// What a handler tells the loop.
enum Outcome {
    /// The connection goes on.
    Keep,
    /// Every reply verified (and, `fin`, the server's EOF read): close it
    /// and count it.
    Completed,
    /// It failed (counted already): drop it.
    Failed,
}

/// The run's phases, as in the `tcp` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunPhase {
    Connect,
    Warmup { until: Instant },
    Measure,
    Drain { until: Instant },
}

pub(super) fn run(options: &Options) -> Result<Report, BenchError> {
    let payloads = super::payloads(options, options.size.get())?;
    let close = options.close.unwrap_or(Close::Fin);
    let mut poll = Poll::new().map_err(BenchError::io("create poll"))?;
    let mut events = Events::with_capacity(1024);
    let n = options.connections.get();
    let mut clients: Vec<Client> = (0..n).map(|_| Client::default()).collect();
    let mut sh = Shared {
        options,
        payloads: &payloads,
        rec: Recorder::new(options)?,
        phases: Phases {
            connect: new_histogram(),
            first_reply: new_histogram(),
            close: new_histogram(),
            connection: new_histogram(),
        },
        failures: ChurnFailures::default(),
        connections: 0,
        connections_total: 0,
        buf: vec![0; 64 * 1024],
        scratch: Vec::new(),
        requests: options.requests_per_connection.map_or(1, |r| r.get()),
        depth: options.pipeline.get(),
        up: 0,
    };
    let start = Instant::now();
    let connect_deadline = start + options.connect_timeout;
    let mut phase = RunPhase::Connect;
    // Clients to (re)start after the current batch of events: never in
    // the middle of it, where an event of the old socket could still be
    // taken for one of the new.
    let mut idle: Vec<usize> = (0..n).collect();

    loop {
        let now = Instant::now();
        match phase {
            RunPhase::Connect => {
                let settled = clients.iter().all(|c| c.up || c.retired);
                if settled || now >= connect_deadline {
                    for (i, c) in clients.iter_mut().enumerate() {
                        if !c.up && !c.retired {
                            c.retired = true;
                            if let Some(mut conn) = c.conn.take() {
                                let _ = poll.registry().deregister(&mut conn.stream);
                            }
                            sh.failures.connect += 1;
                            sh.rec.error(ErrorKind::ConnectTimeout, || {
                                format!(
                                    "client {i}: no whole connection within {:?}",
                                    options.connect_timeout
                                )
                            });
                        }
                    }
                    phase = RunPhase::Warmup {
                        until: now + options.warmup,
                    };
                    sh.rec.expect_end(now + options.warmup + options.duration);
                }
            }
            RunPhase::Warmup { until } if now >= until => {
                sh.rec
                    .start_window(now, options.duration, options.server_pid);
                phase = RunPhase::Measure;
            }
            RunPhase::Measure if sh.rec.window_over(now) => {
                sh.rec.close_window(now, options.server_pid);
                phase = RunPhase::Drain {
                    until: now + options.drain_timeout,
                };
            }
            RunPhase::Drain { until } => {
                if clients.iter().all(|c| c.conn.is_none()) {
                    break;
                }
                if now >= until {
                    give_up(&poll, &mut clients, &mut sh);
                    break;
                }
            }
            _ => {}
        }
        // New connections, except once the window is over. A client
        // whose connect could not even start (no port, no descriptor)
        // tries again after the next poll.
        if !matches!(phase, RunPhase::Drain { .. }) {
            let waiting = std::mem::take(&mut idle);
            for i in waiting {
                if clients[i].retired {
                    continue;
                }
                let started = start_connection(&poll, &mut clients[i], i, &mut sh);
                if !started && !clients[i].retired {
                    idle.push(i);
                }
            }
        }
        let label = match phase {
            RunPhase::Connect => "connecting",
            RunPhase::Warmup { .. } => "warm-up",
            RunPhase::Measure => "measuring",
            RunPhase::Drain { .. } => "draining",
        };
        sh.rec.tick(now, label, sh.up);

        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BenchError::io("poll")(e)),
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(client) = clients.get_mut(i) else {
                continue;
            };
            // The connection that raised this event ended earlier in the
            // batch: sporadic events for it can be ignored.
            let Some(conn) = client.conn.as_mut() else {
                continue;
            };
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            match service(conn, i, readable, close, &mut sh) {
                Outcome::Keep => continue,
                Outcome::Completed => complete(&poll, client, &mut sh),
                Outcome::Failed => {
                    if let Some(mut conn) = client.conn.take() {
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                    // A client whose first connection fails while the run
                    // is still connecting opens no more.
                    if !client.up && phase == RunPhase::Connect {
                        client.retired = true;
                    }
                }
            }
            idle.push(i);
        }
    }

    let mut report = Report {
        kind: "churn".into(),
        connections_up: sh.up,
        ..Report::default()
    };
    let (connections, connections_total, failures, phases) =
        (sh.connections, sh.connections_total, sh.failures, sh.phases);
    sh.rec.finish(&mut report, options)?;
    if report.window_s > 0.0 {
        report.connections_per_second = Some(connections as f64 / report.window_s);
    } else {
        report.connections_per_second = Some(0.0);
    }
    if let Some(server) = &mut report.server {
        if connections > 0 {
            server.cpu_us_per_conn = Some(server.cpu_s * 1e6 / connections as f64);
        }
    }
    let hist = [
        phases.connect,
        phases.first_reply,
        phases.close,
        phases.connection,
    ];
    report.churn = Some(ChurnFigures {
        requests_per_connection: options.requests_per_connection.map_or(1, |r| r.get()),
        close: close.to_string(),
        connections,
        connections_total,
        connect_us: Latency::from_histogram(&hist[0]),
        first_reply_us: Latency::from_histogram(&hist[1]),
        close_us: Latency::from_histogram(&hist[2]),
        connection_us: Latency::from_histogram(&hist[3]),
        failures,
        limits: limits(options.addr, close),
        histograms: hist.into(),
    });
    Ok(report)
}

/// Opens a client's next connection; returns whether it started. A failure
/// to even start one is counted; a client that has not been up yet stops
/// there, the others try again.
fn start_connection(poll: &Poll, client: &mut Client, i: usize, sh: &mut Shared) -> bool {
    let started = Instant::now();
    let mut stream = match open(sh.options.addr, sh.options.close.unwrap_or(Close::Fin)) {
        Ok(s) => s,
        Err(e) => {
            // EMFILE, or EADDRNOTAVAIL: no ephemeral port left to this
            // server (see `limits`).
            sh.failures.connect += 1;
            sh.rec.error(ErrorKind::ConnectFailed, || {
                format!("client {i}: connect to {}: {e}", sh.options.addr)
            });
            if !client.up {
                client.retired = true;
            }
            return false;
        }
    };
    if let Err(e) = poll.registry().register(
        &mut stream,
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        sh.failures.connect += 1;
        sh.rec
            .error(ErrorKind::Other, || format!("client {i}: register: {e}"));
        client.retired = true;
        return false;
    }
    client.conn = Some(Conn {
        stream,
        step: Step::Connecting,
        check: StreamCheck::default(),
        unsent: VecDeque::new(),
        unsent_offset: 0,
        sent: 0,
        first_variant: i.wrapping_add(client.serial as usize),
        started,
        first_sent: None,
        close_started: None,
    });
    client.serial += 1;
    true
}

/// A non-blocking socket with a connect to `addr` under way.
fn open(addr: SocketAddr, close: Close) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if close == Close::Rst {
        // close() then sends a reset and frees the connection at once.
        socket.set_linger(Some(Duration::ZERO))?;
    }
    // Small requests leave at once, not after Nagle's wait for an ACK.
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A connection completed: close it (with a reset for `rst`: the linger
/// of 0 was set at the start), then count it and its phases.
fn complete(poll: &Poll, client: &mut Client, sh: &mut Shared) {
    let Some(mut conn) = client.conn.take() else {
        return;
    };
    let _ = poll.registry().deregister(&mut conn.stream);
    let (started, close_started) = (conn.started, conn.close_started);
    drop(conn);
    let now = Instant::now();
    if !client.up {
        client.up = true;
        sh.up += 1;
    }
    sh.connections_total += 1;
    if let Some(t) = &mut sh.rec.timeline {
        t.connection(now);
    }
    if sh.rec.in_window(now) {
        sh.connections += 1;
        if let Some(c) = close_started {
            sh.phases.close.saturating_record(nanos(now, c));
        }
        sh.phases.connection.saturating_record(nanos(now, started));
    }
}

/// The window is over and the drain time too: whatever is still under way
/// failed in the phase it is stuck in.
fn give_up(poll: &Poll, clients: &mut [Client], sh: &mut Shared) {
    let drain = sh.options.drain_timeout;
    for (i, c) in clients.iter_mut().enumerate() {
        let Some(mut conn) = c.conn.take() else {
            continue;
        };
        let _ = poll.registry().deregister(&mut conn.stream);
        match conn.step {
            Step::Connecting => {
                sh.failures.connect += 1;
                sh.rec.error(ErrorKind::ConnectTimeout, || {
                    format!("client {i}: connect not complete {drain:?} after the end")
                });
            }
            Step::Exchange => {
                let missing = sh.requests as u64 - conn.check.completed();
                sh.failures.exchange += 1;
                for _ in 0..missing {
                    sh.rec.error(ErrorKind::Missing, || {
                        format!(
                            "client {i}: {missing} of {} replies still missing {drain:?} after the end",
                            sh.requests
                        )
                    });
                }
            }
            Step::Closing => {
                sh.failures.close += 1;
                sh.rec.error(ErrorKind::NoEof, || {
                    format!(
                        "client {i}: no EOF from the server within {drain:?} of the client's half-close"
                    )
                });
            }
        }
    }
}

/// Counts a failure of kind `kind` in the phase the connection is in.
fn fail(
    conn: &Conn,
    i: usize,
    kind: ErrorKind,
    sh: &mut Shared,
    describe: impl FnOnce() -> String,
) -> Outcome {
    match conn.step {
        Step::Connecting => sh.failures.connect += 1,
        Step::Exchange => sh.failures.exchange += 1,
        Step::Closing => sh.failures.close += 1,
    }
    sh.rec.error(kind, || format!("client {i}: {}", describe()));
    Outcome::Failed
}

/// A socket error, by kind.
fn io_failure(conn: &Conn, i: usize, e: io::Error, sh: &mut Shared) -> Outcome {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectFailed,
        _ => ErrorKind::Other,
    };
    let step = conn.step;
    fail(conn, i, kind, sh, || format!("{step:?}: {e}"))
}

/// Handles readiness of one client's connection (any event may find room
/// to write, so only whether to read is told).
fn service(conn: &mut Conn, i: usize, readable: bool, close: Close, sh: &mut Shared) -> Outcome {
    if conn.step == Step::Connecting {
        match connected(&conn.stream) {
            Ok(true) => {}
            Ok(false) => return Outcome::Keep,
            Err(e) => {
                let kind = connect_failure(&e);
                return fail(conn, i, kind, sh, || format!("connect: {e}"));
            }
        }
        let now = Instant::now();
        if sh.rec.in_window(now) {
            sh.phases
                .connect
                .saturating_record(nanos(now, conn.started));
        }
        conn.step = Step::Exchange;
        return fill_and_flush(conn, i, sh);
    }
    if readable {
        match receive(conn, i, close, sh) {
            Outcome::Keep => {}
            done => return done,
        }
    }
    // Only the exchange writes (`fill_and_flush` does nothing otherwise),
    // and in it there may be room for the next request whatever the event.
    fill_and_flush(conn, i, sh)
}

/// Nanoseconds from `from` to `to`, at least 1 (the histogram's floor).
fn nanos(to: Instant, from: Instant) -> u64 {
    (to.saturating_duration_since(from).as_nanos() as u64).max(1)
}

/// Reads until `WouldBlock`, checking every byte; ends the connection when
/// its last reply is in (`rst`) or the server's EOF after it (`fin`).
fn receive(conn: &mut Conn, i: usize, close: Close, sh: &mut Shared) -> Outcome {
    loop {
        match conn.stream.read(&mut sh.buf) {
            Ok(0) => {
                if conn.step == Step::Closing {
                    return Outcome::Completed;
                }
                let (pending, done) = (
                    sh.requests as u64 - conn.check.completed(),
                    conn.check.completed(),
                );
                return fail(conn, i, ErrorKind::UnexpectedClose, sh, || {
                    format!(
                        "connection closed by the server with {pending} replies awaited, \
                         after {done} verified"
                    )
                });
            }
            Ok(n) => {
                let now = Instant::now();
                let was = conn.check.completed();
                let rec = &mut sh.rec;
                let payloads = sh.payloads;
                let result = conn.check.check(payloads, &sh.buf[..n], |(sent, variant)| {
                    rec.reply(sent, now, payloads.reply(variant).len());
                });
                if was == 0 && conn.check.completed() > 0 && sh.rec.in_window(now) {
                    if let Some(first) = conn.first_sent {
                        sh.phases.first_reply.saturating_record(nanos(now, first));
                    }
                }
                if let Err(m) = result {
                    return fail(conn, i, ErrorKind::Mismatch, sh, || m.to_string());
                }
                if conn.step == Step::Exchange && conn.check.completed() == u64::from(sh.requests) {
                    match close {
                        Close::Fin => {
                            conn.close_started = Some(now);
                            if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
                                return io_failure(conn, i, e, sh);
                            }
                            conn.step = Step::Closing;
                        }
                        Close::Rst => {
                            conn.close_started = Some(now);
                            return Outcome::Completed;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return io_failure(conn, i, e, sh),
        }
    }
}

/// Queues requests up to the depth and the connection's total, and writes
/// until `WouldBlock`.
fn fill_and_flush(conn: &mut Conn, i: usize, sh: &mut Shared) -> Outcome {
    if conn.step != Step::Exchange {
        return Outcome::Keep;
    }
    let now = Instant::now();
    while conn.check.pending() < sh.depth && conn.sent < sh.requests {
        // Neighbouring requests differ, so a reply repeated or out of
        // order is a wrong byte.
        let variant = conn.first_variant + conn.sent as usize;
        conn.check.expect(variant, (now, variant));
        conn.unsent.push_back(variant);
        conn.sent += 1;
        conn.first_sent.get_or_insert(now);
    }
    if let Err(e) = write_unsent(
        &mut conn.stream,
        &mut conn.unsent,
        &mut conn.unsent_offset,
        sh.payloads,
        &mut sh.scratch,
    ) {
        return io_failure(conn, i, e, sh);
    }
    Outcome::Keep
}

/// What limits the connection rate besides the server: the ephemeral ports
/// of one source address to one server address, and how long a closed
/// connection keeps its port (TIME_WAIT, on the side that closed first).
fn limits(addr: SocketAddr, close: Close) -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let ports = read("/proc/sys/net/ipv4/ip_local_port_range").and_then(|s| {
        let mut it = s.split_whitespace().map(|x| x.parse::<u32>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(lo), Some(hi)) if hi >= lo => Some((lo, hi)),
            _ => None,
        }
    });
    let range = match ports {
        Some((lo, hi)) => format!("{} ephemeral ports ({lo}-{hi})", hi - lo + 1),
        None => "the ephemeral ports".into(),
    };
    match close {
        Close::Rst => format!(
            "rst leaves no TIME_WAIT on either side: {range} to one server address are free again at once"
        ),
        Close::Fin => {
            let reuse = read("/proc/sys/net/ipv4/tcp_tw_reuse")
                .and_then(|s| s.trim().parse::<u32>().ok());
            let loopback = addr.ip().is_loopback();
            let reused = match reuse {
                Some(1) => true,
                Some(2) => loopback,
                _ => false,
            };
            let per_s = ports.map_or(470, |(lo, hi)| (hi - lo + 1) / 60);
            if reused {
                format!(
                    "fin: the client closes first, so each connection leaves a TIME_WAIT \
                     (60 s) on the client's port; net.ipv4.tcp_tw_reuse = {} lets new \
                     connections reuse those ports{}, so {range} do not cap the rate",
                    reuse.unwrap_or(0),
                    if loopback { " (loopback)" } else { "" }
                )
            } else {
                format!(
                    "fin: the client closes first, so each connection holds its port in \
                     TIME_WAIT for 60 s and net.ipv4.tcp_tw_reuse does not free it here: \
                     {range} cap a sustained run at about {per_s} connections/s; use --close rst \
                     or more source addresses"
                )
            }
        }
    }
}
