//! The `tcp` and `idle` modes: every client connection in one slab, driven
//! by one `mio::Poll` (edge-triggered, so every socket is read and written
//! until `WouldBlock`).
//!
//! A connection writes its requests (up to `--pipeline` in flight), reads
//! the reply stream into one buffer shared by all connections and hands it
//! to its [`StreamCheck`]; each completed reply frees a slot for the next
//! request. In `idle` mode a connection sends one request, checks the reply,
//! and then only listens: the server must neither close nor reset it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::openloop::Schedule;
use super::payload::Payloads;
use super::report::{Fairness, ProcSample, Report};
use super::verify::StreamCheck;
use super::workers::Gate;
use super::{source, BenchError, ErrorKind, Kind, Options, Recorder};
use crate::server::timer::Timer;

/// The open-loop schedule's timer (`--rate`): a timerfd, since `poll`'s
/// own timeout has millisecond steps and sends would leave in bursts.
const TIMER: Token = Token(usize::MAX);

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// Connected: sending and receiving.
    Open,
    /// The client has shut down its write side and awaits the server's EOF.
    ShutDown,
}

/// One client connection.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Where it is in its life.
    state: State,
    /// The requests in flight and the check of their replies; the tag is
    /// the send time.
    check: StreamCheck<Instant>,
    /// Requests queued but not completely written, oldest first.
    unsent: VecDeque<usize>,
    /// Bytes of the oldest unsent request already written.
    unsent_offset: usize,
    /// Requests sent (queued) so far; also picks the next variant.
    sent: u64,
    /// Whether its first exchange was verified (it counts as up).
    up: bool,
    /// Replies completed in the measured window.
    in_window: u64,
    /// `--rate`: scheduled requests sent so far (its k-th is request
    /// number k·C + key of the schedule).
    scheduled_sent: u64,
}

/// Where the whole run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connections are being opened.
    Connect,
    /// A part of a split run, settled: waits for the other parts, which
    /// start their warm-up at the same moment.
    Gated,
    /// Every connection is up; load runs, not measured yet.
    Warmup { until: Instant },
    /// The measured window (idle: the hold).
    Measure,
    /// No new requests; the replies in flight are awaited.
    Drain { until: Instant },
    /// Every connection is half-closed; their EOFs are awaited.
    Close { until: Instant },
}

/// What every connection's handler needs besides the connection itself.
struct Shared<'a> {
    /// The requests and their replies.
    payloads: &'a Payloads,
    /// Counts, latency, errors.
    rec: Recorder,
    /// Read buffer shared by all connections.
    buf: Vec<u8>,
    /// Where several pipelined requests are put together for one write.
    scratch: Vec<u8>,
    /// Whether new requests may be sent.
    may_send: bool,
    /// Requests in flight per connection.
    depth: usize,
    /// `idle` mode: one request per connection.
    idle: bool,
    /// Connections up.
    up: usize,
    /// Connects in progress.
    connecting: usize,
    /// `--rate`: one request per connection until the schedule starts
    /// (with the warm-up), then the schedule's.
    rate: Option<u64>,
    /// The open-loop schedule, once started.
    schedule: Option<Schedule>,
}

/// What a handler tells the loop.
enum Outcome {
    /// Keep the connection.
    Keep,
    /// Remove it (an error was counted, or it closed cleanly).
    Remove,
}

/// Runs `options`; `gate`: this is a part of a split run ([`super::workers`]).
pub(super) fn run(options: &Options, mut gate: Option<Gate>) -> Result<Report, BenchError> {
    let idle = options.kind == Kind::Idle;
    let payloads = super::payloads(options, options.size.get())?;
    let mut poll = Poll::new().map_err(BenchError::io("create poll"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::with_capacity(options.connections.get());
    let mut sh = Shared {
        payloads: &payloads,
        rec: Recorder::new(options)?,
        buf: vec![0; 64 * 1024],
        scratch: Vec::new(),
        may_send: true,
        depth: if idle { 1 } else { options.pipeline.get() },
        idle,
        up: 0,
        connecting: 0,
        rate: options.rate.map(|r| r.get()),
        schedule: None,
    };
    let mut timer = match sh.rate {
        Some(_) => {
            Some(Timer::new(poll.registry(), TIMER).map_err(BenchError::io("create timer"))?)
        }
        None => None,
    };
    // The server's memory before any of our connections, for the memory
    // per idle connection.
    let baseline = options.server_pid.and_then(ProcSample::read);
    let start = Instant::now();
    let connect_deadline = start + options.connect_timeout;
    let mut started = 0usize;
    let mut phase = Phase::Connect;
    let mut fairness = Fairness::default();
    let mut idle_end: Option<ProcSample> = None;
    let mut connect_s = 0.0;

    loop {
        let now = Instant::now();
        // Phase changes.
        match phase {
            Phase::Connect => {
                start_connects(
                    options,
                    &poll,
                    &mut conns,
                    &mut sh,
                    &mut started,
                    start,
                    now,
                );
                let settled = started == options.connections.get()
                    && sh.connecting == 0
                    && conns.iter().all(|(_, c)| c.up);
                if settled || now >= connect_deadline {
                    if !settled {
                        // Whatever is not up by now never completed an
                        // exchange in time: give up on it.
                        let late: Vec<usize> = conns
                            .iter()
                            .filter(|(_, c)| !c.up)
                            .map(|(k, _)| k)
                            .collect();
                        for key in late {
                            sh.rec.error(ErrorKind::ConnectTimeout, || {
                                format!(
                                    "connection {key}: no verified exchange within {:?}",
                                    options.connect_timeout
                                )
                            });
                            remove(&poll, &mut conns, &mut sh, key);
                        }
                        let never = options.connections.get() - started;
                        for _ in 0..never {
                            sh.rec.error(ErrorKind::ConnectTimeout, || {
                                "connect not even started before --connect-timeout".into()
                            });
                        }
                        started = options.connections.get();
                    }
                    connect_s = now.duration_since(start).as_secs_f64();
                    phase = match &mut gate {
                        Some(gate) => {
                            gate.settled();
                            Phase::Gated
                        }
                        None => begin_warmup(&mut sh, options, now),
                    };
                }
            }
            Phase::Gated => {
                if let Some(at) = gate.as_mut().map(Gate::poll).transpose()?.flatten() {
                    // The common start may still be ahead (the coordinator
                    // sets it a little into the future).
                    phase = begin_warmup(&mut sh, options, at.max(now));
                }
            }
            Phase::Warmup { until } if now >= until => {
                sh.rec
                    .start_window(now, options.duration, options.server_pid);
                phase = Phase::Measure;
            }
            Phase::Measure if sh.rec.window_over(now) || (idle && now >= window_end(&sh)) => {
                sh.rec.close_window(now, options.server_pid);
                fairness = Fairness::from_counts(conns.iter().map(|(_, c)| c.in_window));
                if idle {
                    idle_end = options.server_pid.and_then(ProcSample::read);
                }
                sh.may_send = false;
                phase = Phase::Drain {
                    until: now + options.drain_timeout,
                };
            }
            Phase::Drain { until } => {
                let drained = conns.iter().all(|(_, c)| c.check.pending() == 0);
                if drained || now >= until {
                    let keys: Vec<usize> = conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        let missing = conns[key].check.pending();
                        if missing > 0 {
                            for _ in 0..missing {
                                sh.rec.error(ErrorKind::Missing, || {
                                    format!(
                                        "connection {key}: {missing} replies still missing {:?} after the end",
                                        options.drain_timeout
                                    )
                                });
                            }
                            remove(&poll, &mut conns, &mut sh, key);
                            continue;
                        }
                        // Half-close: the server must answer with its own
                        // EOF, after nothing but what was asked for.
                        if let Err(e) = conns[key].stream.shutdown(Shutdown::Write) {
                            sh.rec.error(ErrorKind::Other, || {
                                format!("connection {key}: shutdown: {e}")
                            });
                            remove(&poll, &mut conns, &mut sh, key);
                            continue;
                        }
                        conns[key].state = State::ShutDown;
                    }
                    phase = Phase::Close {
                        until: now + options.drain_timeout,
                    };
                }
            }
            Phase::Close { until } => {
                if conns.is_empty() {
                    break;
                }
                if now >= until {
                    let keys: Vec<usize> = conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        sh.rec.error(ErrorKind::NoEof, || {
                            format!(
                                "connection {key}: no EOF from the server within {:?} of the client's half-close",
                                options.drain_timeout
                            )
                        });
                        remove(&poll, &mut conns, &mut sh, key);
                    }
                    break;
                }
            }
            _ => {}
        }
        let label = match phase {
            Phase::Connect => "connecting",
            Phase::Gated => "waiting for the other parts",
            Phase::Warmup { .. } => "warm-up",
            Phase::Measure if idle => "holding",
            Phase::Measure => "measuring",
            Phase::Drain { .. } => "draining",
            Phase::Close { .. } => "closing",
        };
        sh.rec.tick(now, label, sh.up);
        if let (Some(timer), true) = (&mut timer, sh.may_send) {
            release_due(&poll, &mut conns, &mut sh, now, timer)?;
        }

        match poll.poll(&mut events, Some(Duration::from_millis(20))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BenchError::io("poll")(e)),
        }
        for event in events.iter() {
            if event.token() == TIMER {
                if let Some(timer) = &mut timer {
                    timer.fired();
                }
                continue;
            }
            let key = event.token().0;
            // A connection removed earlier in this batch: sporadic events
            // for it can be ignored.
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            let writable = event.is_writable() || event.is_error();
            let eof_seen = event.is_read_closed() || event.is_error();
            if let Outcome::Remove = service(conn, key, readable, writable, eof_seen, &mut sh) {
                remove(&poll, &mut conns, &mut sh, key);
            }
        }
    }

    let mut report = Report {
        kind: if idle { "idle" } else { "tcp" }.into(),
        connections_up: sh.up,
        connect_s,
        fairness,
        open_loop: sh
            .schedule
            .as_ref()
            .map(|s| s.figures(sh.rec.window, sh.rec.messages)),
        ..Report::default()
    };
    sh.rec.finish(&mut report, options)?;
    if idle {
        if let (Some(server), Some(before), Some(after)) = (&mut report.server, baseline, idle_end)
        {
            let added = after.rss_kib.saturating_sub(before.rss_kib) * 1024;
            server.idle_bytes_per_conn = Some(added as f64 / sh.up.max(1) as f64);
            server.rss_kib = after.rss_kib;
        }
        // Idle connections send no load: these figures would be noise.
        report.fairness = Fairness::default();
    }
    Ok(report)
}

/// End of the measured window, for `idle` (which counts no messages).
fn window_end(sh: &Shared) -> Instant {
    match sh.rec.window {
        Some((_, end)) => end,
        None => Instant::now(),
    }
}

/// Starts as many connects as the limits allow now.
fn start_connects(
    options: &Options,
    poll: &Poll,
    conns: &mut Slab<Conn>,
    sh: &mut Shared,
    started: &mut usize,
    start: Instant,
    now: Instant,
) {
    let mut allowed = options.connections.get() - *started;
    allowed = allowed.min(options.max_connecting.get().saturating_sub(sh.connecting));
    if options.connect_rate > 0 {
        let due =
            (now.duration_since(start).as_secs_f64() * options.connect_rate as f64) as usize + 1;
        allowed = allowed.min(due.saturating_sub(*started));
    }
    for _ in 0..allowed {
        // Its number in the whole run (over every part) picks its source.
        let from = source::of_connection(options.first_connection + *started, options.sources);
        *started += 1;
        let mut stream = match source::connect(options.addr, from) {
            Ok(s) => s,
            Err(e) => {
                // EMFILE, EADDRNOTAVAIL (out of source ports), ...
                sh.rec.error(ErrorKind::ConnectFailed, || match from {
                    Some(from) => format!("connect to {} from {from}: {e}", options.addr),
                    None => format!("connect to {}: {e}", options.addr),
                });
                continue;
            }
        };
        let entry = conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            sh.rec
                .error(ErrorKind::Other, || format!("register connection: {e}"));
            continue;
        }
        sh.connecting += 1;
        entry.insert(Conn {
            stream,
            state: State::Connecting,
            check: StreamCheck::default(),
            unsent: VecDeque::new(),
            unsent_offset: 0,
            sent: 0,
            up: false,
            in_window: 0,
            scheduled_sent: 0,
        });
    }
}

/// Drops a connection (closing its socket).
fn remove(poll: &Poll, conns: &mut Slab<Conn>, sh: &mut Shared, key: usize) {
    if let Some(mut conn) = conns.try_remove(key) {
        if conn.state == State::Connecting {
            sh.connecting -= 1;
        }
        let _ = poll.registry().deregister(&mut conn.stream);
    }
}

/// Handles readiness of one connection; `eof_seen`: the event says the
/// peer closed or failed, so reading must go on until the end is read.
fn service(
    conn: &mut Conn,
    key: usize,
    readable: bool,
    writable: bool,
    eof_seen: bool,
    sh: &mut Shared,
) -> Outcome {
    if conn.state == State::Connecting {
        match connected(&conn.stream) {
            Ok(true) => {}
            Ok(false) => return Outcome::Keep,
            Err(e) => {
                sh.rec.error(connect_failure(&e), || {
                    format!("connection {key}: connect: {e}")
                });
                return Outcome::Remove;
            }
        }
        sh.connecting -= 1;
        conn.state = State::Open;
        // Small requests must leave at once, not wait for Nagle.
        let _ = conn.stream.set_nodelay(true);
        return fill_and_flush(conn, key, sh);
    }
    if readable {
        if let Outcome::Remove = receive(conn, key, eof_seen, sh) {
            return Outcome::Remove;
        }
    }
    if writable || !conn.unsent.is_empty() || sh.may_send {
        return fill_and_flush(conn, key, sh);
    }
    Outcome::Keep
}

/// Reads until `WouldBlock` (or a short read), checking every byte.
fn receive(conn: &mut Conn, key: usize, eof_seen: bool, sh: &mut Shared) -> Outcome {
    loop {
        match conn.stream.read(&mut sh.buf) {
            Ok(0) => {
                if conn.state == State::ShutDown && conn.check.pending() == 0 {
                    // The server's EOF after ours: a clean end.
                    return Outcome::Remove;
                }
                let pending = conn.check.pending();
                sh.rec.error(ErrorKind::UnexpectedClose, || {
                    format!(
                        "connection {key}: closed by the server with {pending} replies awaited, \
                         after {} verified",
                        conn.check.completed()
                    )
                });
                return Outcome::Remove;
            }
            Ok(n) => {
                let now = Instant::now();
                let rec = &mut sh.rec;
                let in_window = &mut conn.in_window;
                let reply_len = |v: u64| sh.payloads.reply(v as usize).len();
                let base = conn.check.completed();
                let mut done = 0u64;
                let result = conn.check.check(sh.payloads, &sh.buf[..n], |sent| {
                    // Replies complete in order, so reply number base+done
                    // is request number base+done.
                    if rec.reply(sent, now, reply_len(base + done)) {
                        *in_window += 1;
                    }
                    done += 1;
                });
                if let Err(m) = result {
                    sh.rec
                        .error(ErrorKind::Mismatch, || format!("connection {key}: {m}"));
                    return Outcome::Remove;
                }
                if done > 0 && !conn.up {
                    conn.up = true;
                    sh.up += 1;
                }
                // A short read took everything the socket had: bytes that
                // arrive later raise a new edge, so the read that would
                // only say WouldBlock can be saved (a third of the client's
                // syscalls per reply, and the client is the bottleneck).
                // Not when the event reported the peer's close: that FIN
                // raises no new edge, so read on to the EOF. Nor while
                // awaiting the server's EOF at the end.
                if n < sh.buf.len() && !eof_seen && conn.state == State::Open {
                    return Outcome::Keep;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return io_error(key, e, sh),
        }
    }
}

/// Counts a socket error by kind.
fn io_error(key: usize, e: io::Error, sh: &mut Shared) -> Outcome {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
        _ => ErrorKind::Other,
    };
    sh.rec.error(kind, || format!("connection {key}: {e}"));
    Outcome::Remove
}

/// The warm-up from `at` on; `--rate`: the open-loop schedule starts with
/// it.
fn begin_warmup(sh: &mut Shared, options: &Options, at: Instant) -> Phase {
    sh.rec.expect_end(at + options.warmup + options.duration);
    if let Some(rate) = sh.rate {
        sh.schedule = Some(Schedule::new(at, rate, options.connections.get()));
    }
    Phase::Warmup {
        until: at + options.warmup,
    }
}

/// Whether a connection sends one request only: `idle` mode, and `--rate`
/// before its schedule starts (a connection is up after one exchange; the
/// load is the schedule's).
fn one_only(sh: &Shared) -> bool {
    sh.idle || (sh.rate.is_some() && sh.schedule.is_none())
}

/// `--rate`: hands every request that fell due to its connection and sets
/// the timer for the next.
fn release_due(
    poll: &Poll,
    conns: &mut Slab<Conn>,
    sh: &mut Shared,
    now: Instant,
    timer: &mut Timer,
) -> Result<(), BenchError> {
    let Some(schedule) = &mut sh.schedule else {
        return Ok(());
    };
    // The iterator holds only numbers, not the schedule: no list to build.
    let due = schedule.release(now);
    let next = schedule.next_due();
    for key in due {
        // A connection that is gone (an error ended it) sends nothing:
        // its share shows as `unsent`.
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        if let Outcome::Remove = fill_and_flush(conn, key, sh) {
            remove(poll, conns, sh, key);
        }
    }
    timer.wake_by(next).map_err(BenchError::io("set the timer"))
}

/// Queues requests up to the pipeline depth and writes until `WouldBlock`.
fn fill_and_flush(conn: &mut Conn, key: usize, sh: &mut Shared) -> Outcome {
    if conn.state != State::Open {
        return Outcome::Keep;
    }
    if let (Some(schedule), true) = (&mut sh.schedule, sh.may_send) {
        // Open loop: what the schedule says is due, each tagged with the
        // time it was due, so the wait for a free slot counts in its
        // latency.
        let now = Instant::now();
        while conn.check.pending() < sh.depth {
            let Some((_, due)) = schedule.owed(key, conn.scheduled_sent) else {
                break;
            };
            schedule.sent(due, now, sh.rec.window);
            let variant = (key as u64 + conn.sent) as usize;
            conn.check.expect(variant, due);
            conn.unsent.push_back(variant);
            conn.sent += 1;
            conn.scheduled_sent += 1;
        }
    } else if sh.may_send && !(one_only(sh) && conn.sent > 0) && conn.check.pending() < sh.depth {
        let now = Instant::now();
        while conn.check.pending() < sh.depth && !(one_only(sh) && conn.sent > 0) {
            // The variant is the request number: replies to neighbouring
            // requests differ, so a reordered or repeated reply is a wrong
            // byte. Connections start at different variants.
            let variant = (key as u64 + conn.sent) as usize;
            conn.check.expect(variant, now);
            conn.unsent.push_back(variant);
            conn.sent += 1;
        }
    }
    if let Err(e) = write_unsent(
        &mut conn.stream,
        &mut conn.unsent,
        &mut conn.unsent_offset,
        sh.payloads,
        &mut sh.scratch,
    ) {
        return io_error(key, e, sh);
    }
    Outcome::Keep
}

/// Writes the queued requests `unsent` (the first from byte `offset` on)
/// until they are all written or the socket says `WouldBlock`; what is
/// written leaves the queue. Shared with the `churn` mode.
pub(super) fn write_unsent(
    stream: &mut TcpStream,
    unsent: &mut VecDeque<usize>,
    offset: &mut usize,
    payloads: &Payloads,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    while !unsent.is_empty() {
        // One write for everything queued: a pipelined burst leaves in as
        // few segments as the kernel likes.
        scratch.clear();
        for (i, &v) in unsent.iter().enumerate() {
            let req = payloads.request(v);
            scratch.extend_from_slice(if i == 0 { &req[*offset..] } else { req });
        }
        match stream.write(scratch) {
            Ok(mut n) => {
                while n > 0 {
                    let Some(&front) = unsent.front() else {
                        break;
                    };
                    let left = payloads.request(front).len() - *offset;
                    if n >= left {
                        n -= left;
                        unsent.pop_front();
                        *offset = 0;
                    } else {
                        *offset += n;
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a non-blocking connect is complete: `Ok(false)` not yet (a
/// spurious wake-up), `Err` it failed. A connect finished (or failed) once
/// the socket is writable or has an error. Shared with the `churn` mode.
pub(super) fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// How a failed connect is counted: a timeout (`ETIMEDOUT`: the SYN went
/// unanswered) apart from a refusal or any other failure.
pub(super) fn connect_failure(e: &io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::TimedOut {
        ErrorKind::ConnectTimeout
    } else {
        ErrorKind::ConnectFailed
    }
}
