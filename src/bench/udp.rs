//! The `udp` mode: `--connections` flows, each a UDP socket connected to
//! the server with a window of `--pipeline` datagrams in flight, all driven
//! by one `mio::Poll`.
//!
//! Every request starts with its sequence number as 16 upper-case hex
//! digits, which the transform leaves alone, so each reply is matched to its
//! request whatever order datagrams arrive in, and compared whole. UDP may
//! drop: a request unanswered after `--udp-timeout` is counted lost (not an
//! error) and its slot reused; a reply that comes after that is counted
//! late. A reply that matches no request, or has a wrong byte, is an error.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::payload::{parse_udp_header, udp_header, Payloads, UDP_HEADER};
use super::report::{Fairness, Report, UdpFigures};
use super::verify::check_datagram;
use super::{BenchError, ErrorKind, Options, Recorder};

/// How many given-up sequence numbers a flow remembers, to tell a late
/// reply from one that matches nothing.
const REMEMBER_LOST: usize = 4096;

/// One request in flight.
struct Sent {
    /// Its sequence number (unique in the flow).
    seq: u64,
    /// When it was sent.
    at: Instant,
}

/// One UDP flow.
struct Flow {
    /// A socket connected to the server (so only its datagrams arrive, and
    /// an ICMP "port unreachable" shows up as ECONNREFUSED).
    socket: UdpSocket,
    /// Requests awaiting replies, oldest first.
    in_flight: VecDeque<Sent>,
    /// Sequence numbers given up as lost, most recent last.
    lost: VecDeque<u64>,
    /// Next sequence number.
    next_seq: u64,
    /// Whether a reply was verified (the flow counts as up).
    up: bool,
    /// Replies verified in the measured window.
    in_window: u64,
    /// Replies verified in all.
    replies: u64,
    /// An error ended the flow.
    dead: bool,
}

pub(super) fn run(options: &Options) -> Result<Report, BenchError> {
    let payloads = super::payloads(options, options.size.get() - UDP_HEADER)?;
    let mut poll = Poll::new().map_err(BenchError::io("create poll"))?;
    let mut events = Events::with_capacity(1024);
    let mut rec = Recorder::new(options)?;
    let mut figures = UdpFigures::default();
    // The unspecified address of the server's family: the kernel picks the
    // source address that routes to the server (loopback for loopback).
    let local: std::net::SocketAddr = if options.addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut flows = Vec::with_capacity(options.connections.get());
    for i in 0..options.connections.get() {
        let mut socket = UdpSocket::bind(local).map_err(BenchError::io("bind UDP socket"))?;
        socket
            .connect(options.addr)
            .map_err(BenchError::io("connect UDP socket"))?;
        poll.registry()
            .register(
                &mut socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(BenchError::io("register UDP socket"))?;
        flows.push(Flow {
            socket,
            in_flight: VecDeque::new(),
            lost: VecDeque::new(),
            next_seq: 0,
            up: false,
            in_window: 0,
            replies: 0,
            dead: false,
        });
    }
    let start = Instant::now();
    let connect_deadline = start + options.connect_timeout;
    let mut warmup_until: Option<Instant> = None;
    let mut sending = true;
    let mut draining = false;
    let mut fairness = Fairness::default();
    let mut datagram = Vec::with_capacity(options.size.get());
    let mut want = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut awake: Vec<usize> = (0..flows.len()).collect();

    loop {
        let now = Instant::now();
        if warmup_until.is_none() {
            let settled = flows.iter().all(|f| f.up || f.dead);
            if settled || now >= connect_deadline {
                for (i, f) in flows
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, f)| !f.up && !f.dead)
                {
                    rec.error(ErrorKind::ConnectTimeout, || {
                        format!(
                            "flow {i}: no verified reply within {:?}",
                            options.connect_timeout
                        )
                    });
                    f.dead = true;
                }
                warmup_until = Some(now + options.warmup);
            }
        } else if rec.window.is_none() && warmup_until.is_some_and(|t| now >= t) {
            rec.start_window(now, options.duration, options.server_pid);
        } else if !draining && rec.window_over(now) {
            rec.close_window(now, options.server_pid);
            fairness = Fairness::from_counts(flows.iter().filter(|f| !f.dead).map(|f| f.in_window));
            sending = false;
            draining = true;
        }
        if draining && flows.iter().all(|f| f.dead || f.in_flight.is_empty()) {
            break;
        }

        // Requests that waited too long are lost; their slots are reused.
        for (i, f) in flows.iter_mut().enumerate() {
            let mut freed = false;
            while f
                .in_flight
                .front()
                .is_some_and(|s| now.duration_since(s.at) >= options.udp_timeout)
            {
                if let Some(s) = f.in_flight.pop_front() {
                    figures.lost += 1;
                    if f.lost.len() == REMEMBER_LOST {
                        f.lost.pop_front();
                    }
                    f.lost.push_back(s.seq);
                    freed = true;
                }
            }
            if freed {
                awake.push(i);
            }
        }
        for &i in &awake {
            let f = &mut flows[i];
            if !f.dead && sending {
                send_window(
                    f,
                    i,
                    options,
                    &payloads,
                    &mut datagram,
                    &mut figures,
                    &mut rec,
                );
            }
        }
        awake.clear();
        let phase = if draining {
            "draining"
        } else if rec.window.is_some() {
            "measuring"
        } else {
            "starting"
        };
        rec.tick(now, phase, flows.iter().filter(|f| f.up).count());

        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BenchError::io("poll")(e)),
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(f) = flows.get_mut(i) else { continue };
            if f.dead {
                continue;
            }
            receive(f, i, &payloads, &mut buf, &mut want, &mut figures, &mut rec);
            awake.push(i);
        }
    }
    figures.lost += flows.iter().map(|f| f.in_flight.len() as u64).sum::<u64>();
    let mut report = Report {
        kind: "udp".into(),
        connections_up: flows.iter().filter(|f| f.up && !f.dead).count(),
        fairness,
        ..Report::default()
    };
    rec.finish(&mut report, options)?;
    report.udp = Some(figures);
    Ok(report)
}

/// Sends until the flow's window is full or the socket would block.
fn send_window(
    f: &mut Flow,
    i: usize,
    options: &Options,
    payloads: &Payloads,
    datagram: &mut Vec<u8>,
    figures: &mut UdpFigures,
    rec: &mut Recorder,
) {
    while f.in_flight.len() < options.pipeline.get() {
        let seq = f.next_seq;
        datagram.clear();
        udp_header(seq, datagram);
        datagram.extend_from_slice(payloads.request(seq as usize + i));
        match f.socket.send(datagram) {
            Ok(_) => {
                f.next_seq += 1;
                figures.sent += 1;
                f.in_flight.push_back(Sent {
                    seq,
                    at: Instant::now(),
                });
            }
            // Full send buffer: a writable event resumes it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                flow_error(f, i, e, rec);
                return;
            }
        }
    }
}

/// Receives until `WouldBlock`, matching and checking every reply.
fn receive(
    f: &mut Flow,
    i: usize,
    payloads: &Payloads,
    buf: &mut [u8],
    want: &mut Vec<u8>,
    figures: &mut UdpFigures,
    rec: &mut Recorder,
) {
    loop {
        let n = match f.socket.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                flow_error(f, i, e, rec);
                return;
            }
        };
        let now = Instant::now();
        let got = &buf[..n];
        let seq = parse_udp_header(got);
        let pos = seq.and_then(|s| f.in_flight.iter().position(|x| x.seq == s));
        let (Some(seq), Some(pos)) = (seq, pos) else {
            if seq.is_some_and(|s| f.lost.contains(&s)) {
                figures.late += 1;
                continue;
            }
            rec.error(ErrorKind::Mismatch, || {
                format!(
                    "flow {i}: a reply that matches no request in flight (a wrong or repeated \
                     sequence header): {:?}",
                    String::from_utf8_lossy(&got[..n.min(40)])
                )
            });
            continue;
        };
        want.clear();
        udp_header(seq, want);
        want.extend_from_slice(payloads.reply(seq as usize + i));
        if let Err(m) = check_datagram(got, want, seq) {
            rec.error(ErrorKind::Mismatch, || format!("flow {i}: datagram {m}"));
            // The request got its (wrong) answer: it is neither in flight
            // nor lost any more.
            f.in_flight.remove(pos);
            continue;
        }
        if let Some(sent) = f.in_flight.remove(pos) {
            figures.received += 1;
            f.replies += 1;
            f.up = true;
            if rec.reply(sent.at, now, n) {
                f.in_window += 1;
            }
        }
    }
}

/// Ends a flow on a socket error (ECONNREFUSED: nothing listens there).
fn flow_error(f: &mut Flow, i: usize, e: io::Error, rec: &mut Recorder) {
    let kind = if e.kind() == io::ErrorKind::ConnectionRefused {
        ErrorKind::ConnectFailed
    } else {
        ErrorKind::Other
    };
    rec.error(kind, || format!("flow {i}: {e}"));
    f.dead = true;
    f.in_flight.clear();
}
