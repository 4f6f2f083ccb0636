//! `upcase-bench`, the load generator: many concurrent TCP clients, a UDP
//! flood, a crowd of idle connections, or connection churn, every reply
//! checked byte for byte.
//!
//! # Layout
//!
//! - [`payload`]: the requests and their expected replies, computed once
//!   with [`crate::transform::upcase`].
//! - [`verify`]: sans-I/O checking of a TCP reply stream or a UDP datagram;
//!   a wrong byte becomes a [`verify::Mismatch`] with its position and both
//!   texts.
//! - `tcp` (the `tcp` and `idle` modes) and `udp`: one `mio::Poll` each
//!   driving every client socket from one thread; the bench is pinned to
//!   one core, and a second thread would only compete with the first.
//! - `churn`: the `churn` mode (connect, requests, verify, close with FIN
//!   or RST), one `mio::Poll` too.
//! - `openloop`: the schedule of `tcp --rate` (open loop, latency from
//!   each request's scheduled time), sans I/O.
//! - [`progress`]: the progress line on a terminal and `--timeline`;
//!   `hgrm`: `--latency-out`, HdrHistogram's percentile distribution text.
//! - [`report`]: the figures, shown as text or JSON, and `/proc` sampling
//!   of the server.
//! - `workers` and `source`: a `tcp` or `idle` run split over processes
//!   and event loops (`--workers`, `--threads`), merged exactly, and its
//!   source addresses (`--source-addrs`). `churn`, `--rate` and
//!   `--timeline` stay in one loop: split, they are usage errors.
//!
//! # A run
//!
//! Connect (at most `--max-connecting` at once, `--connect-rate` per
//! second); a connection counts as up only after its first verified
//! exchange. Once every connection is up (or `--connect-timeout` passed),
//! `--warmup` more load, then the measured window of `--duration` (or
//! `--messages` replies): only replies completed in it count in the
//! figures. Then no new requests; the replies in flight are
//! awaited (`--drain-timeout`), every TCP connection is half-closed, and its
//! EOF awaited: a byte too many, a reset, or a reply still missing is an
//! error. Any error makes the run fail (non-zero exit).
//!
//! Durations and sizes are written as in the config file ([`crate::units`]):
//! `--duration 3s --warmup 500ms --size 4KiB`. A bare number of seconds
//! (`--duration 3`, the old spelling) still works, with a deprecation
//! warning on standard error.

mod churn;
mod hgrm;
mod openloop;
pub mod payload;
pub mod progress;
pub mod report;
mod source;
mod tcp;
mod udp;
pub mod verify;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

pub use payload::PayloadKind;
use progress::{Progress, Status, Timeline};
pub use report::Report;
use report::{Errors, ProcSample};
pub use workers::{enable_worker_processes, Part};

use crate::transform::Mode;
use crate::units::{self, DeprecatedSeconds};

/// `--mode`: as in the config file (`ascii`, `unicode`).
fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Concurrent TCP connections, each with `--pipeline` requests in flight.
    Tcp,
    /// UDP flows, each with a window of `--pipeline` datagrams in flight.
    Udp,
    /// Open `--connections` TCP connections, verify each once, hold them
    /// for `--duration` (for the server's memory per connection).
    Idle,
    /// Connection churn: each of `--connections` clients loops connect,
    /// `--requests-per-connection` requests, verify, close (`--close`).
    Churn,
}

/// How a churn client ends each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Close {
    /// Half-close (shutdown of the write side), wait for the server's EOF,
    /// then close: the orderly end, which leaves the client's side in
    /// TIME_WAIT.
    Fin,
    /// Close with `SO_LINGER` 0: the kernel sends a reset, and neither side
    /// keeps a TIME_WAIT.
    Rst,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
        })
    }
}

/// The command line of `upcase-bench`; also what tests pass to [`run`].
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "upcase-bench",
    version,
    about = "Load generator for upcased: many TCP clients, a UDP flood or idle connections; \
             every reply is checked byte for byte against the expected upper case",
    after_help = "Exit status: 0 every reply verified; 1 errors (wrong byte, reset, unexpected \
                  close, failed connect, missing reply); 2 bad usage; 3 the bench itself failed."
)]
pub struct Options {
    /// tcp, udp, idle or churn.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The server's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:12000")]
    pub addr: SocketAddr,
    /// TCP connections (tcp, idle), UDP flows (udp) or concurrent clients
    /// each opening one connection after another (churn).
    #[arg(short, long, value_name = "N", default_value = "1")]
    pub connections: NonZeroUsize,
    /// How long the window measured lasts (idle: how long the connections
    /// are held), e.g. 3s, 500ms.
    #[arg(short, long, value_name = "DURATION", default_value = "3s", value_parser = DeprecatedSeconds::default())]
    pub duration: Duration,
    /// Request size, e.g. 64, 4KiB (udp: at least 16 bytes, the sequence
    /// header).
    #[arg(short, long, value_name = "SIZE", default_value = "64", value_parser = units::nonzero_size)]
    pub size: NonZeroUsize,
    /// Requests in flight per connection (udp: datagrams per flow).
    #[arg(short, long, value_name = "DEPTH", default_value = "1")]
    pub pipeline: NonZeroUsize,
    /// What requests are made of: ascii (any server), utf8 (upcased in
    /// unicode mode), binary (upcased in ascii mode).
    #[arg(long, value_enum, default_value = "ascii")]
    pub payload: PayloadKind,
    /// Take the requests from FILE instead: its consecutive pieces of
    /// --size bytes, cut short where a piece would end inside a UTF-8
    /// character (by up to 3 bytes in valid UTF-8), at most 1,024 of them;
    /// any bytes, invalid UTF-8 too. Checked against unicode mode unless
    /// --mode says otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    pub payload_file: Option<PathBuf>,
    /// The server's mode, which decides the replies expected: unicode
    /// (std's upper case of each character, invalid bytes unchanged) or
    /// ascii (only a-z change) [default: unicode for utf8 and
    /// --payload-file, ascii for ascii and binary].
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// The server's process id: report its CPU time per message and its RSS.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// End the measured window after this many replies (or at --duration).
    #[arg(long, value_name = "N")]
    pub messages: Option<NonZeroU64>,
    /// Load after every connection is up, before measuring, e.g. 1s, 0s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = DeprecatedSeconds::default())]
    pub warmup: Duration,
    /// New connections per second; 0: as fast as --max-connecting allows.
    #[arg(long, value_name = "PER_SEC", default_value_t = 0)]
    pub connect_rate: u64,
    /// Connects in progress at once (keeps within the server's backlog).
    #[arg(long, value_name = "N", default_value = "256")]
    pub max_connecting: NonZeroUsize,
    /// How long every connection has to complete its first exchange.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = DeprecatedSeconds::nonzero())]
    pub connect_timeout: Duration,
    /// How long to wait at the end for replies in flight and for EOFs.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = DeprecatedSeconds::default())]
    pub drain_timeout: Duration,
    /// After how long a UDP datagram with no reply counts as lost.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = DeprecatedSeconds::nonzero())]
    pub udp_timeout: Duration,
    /// tcp, idle: split the run over N processes (the binary runs itself N
    /// times), the figures merged exactly [default: enough processes for
    /// --connections under the descriptor limit, 19,936 each here].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// tcp, idle: event loops (threads) per process. One loop drives about
    /// one server core; more help only when the server has more cores than
    /// one loop keeps busy (several reuse_port instances under full load)
    /// and the machine has cores to spare for them.
    #[arg(long, value_name = "N", default_value = "1")]
    pub threads: NonZeroUsize,
    /// tcp, idle: connect from 127.0.0.1 ... 127.0.0.N in turn (the server
    /// must be on 127.0.0.0/8), N times the ephemeral ports of one source
    /// address, and quicker connects [default: one address per 2,000
    /// connections].
    #[arg(long, value_name = "N")]
    pub source_addrs: Option<usize>,
    /// This process runs part I of N of the run (set for the worker
    /// processes it starts).
    #[arg(long, value_name = "I/N", hide = true)]
    pub part: Option<Part>,
    /// The number of this part's first connection in the whole run.
    #[arg(skip)]
    pub first_connection: usize,
    /// Source addresses in use (resolved from --source-addrs).
    #[arg(skip)]
    pub sources: usize,
    /// churn: requests on each connection before it is closed [default: 1].
    #[arg(long, value_name = "N")]
    pub requests_per_connection: Option<NonZeroU32>,
    /// churn: how each connection ends: fin (half-close, await the
    /// server's EOF) or rst (SO_LINGER 0) [default: fin].
    #[arg(long, value_enum, value_name = "HOW")]
    pub close: Option<Close>,
    /// tcp: open loop: send this many requests per second across all
    /// connections, each at its scheduled time, and measure latency from
    /// that time, not from when it could be sent.
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<NonZeroU64>,
    /// Write the latency histogram of the measured window to FILE, as
    /// HdrHistogram's percentile distribution (.hgrm text, milliseconds).
    #[arg(long, value_name = "FILE")]
    pub latency_out: Option<PathBuf>,
    /// Write one row per second of the run to FILE (replies, errors,
    /// connections, p50 and p99 of that second): JSON lines if FILE ends
    /// in .jsonl or .json, else CSV.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
}

/// Why the bench could not run (as opposed to: it ran and found errors,
/// which is a [`Report`] with `ok == false`).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options contradict each other.
    #[error("{0}")]
    Usage(String),
    /// The bench's own machinery failed (poll, socket creation).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The report could not be encoded as JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BenchError {
    /// The exit status for this error: 2 bad usage, 3 the bench itself
    /// failed. (1, errors found, is a run that completed: see
    /// [`run_and_print`].)
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_) => 2,
            BenchError::Io { .. } | BenchError::Json(_) => 3,
        }
    }

    fn io(context: &'static str) -> impl FnOnce(io::Error) -> BenchError {
        move |source| BenchError::Io { context, source }
    }
}

/// The whole of `upcase-bench`: runs the benchmark, prints the report on
/// standard output (text, or one JSON object with `--json`) and returns
/// whether every reply was verified (exit status 0, else 1).
pub fn run_and_print(options: &Options) -> Result<bool, BenchError> {
    let report = run(options)?;
    if options.part.is_some() {
        // A worker process: its figures go to the process that started it.
        workers::print_part(&report)?;
        return Ok(report.ok);
    }
    if let Some(path) = &options.latency_out {
        write_latency_out(path, &report).map_err(BenchError::io("write --latency-out"))?;
    }
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
        if !report.ok {
            // Scripts read stdout; a person reads stderr.
            eprintln!("upcase-bench: FAILED: {} errors", report.errors.total());
        }
    } else {
        println!("{report}");
    }
    Ok(report.ok)
}

/// Writes the report's latency histogram (of the measured window) to
/// `path` as HdrHistogram percentile distribution text, in milliseconds.
pub fn write_latency_out(path: &std::path::Path, report: &Report) -> io::Result<()> {
    match &report.latency_histogram {
        Some(h) => hgrm::write(path, h),
        None => hgrm::write(path, &new_histogram()),
    }
}

impl Options {
    /// The server mode replies are checked against (`--mode`, or the
    /// payload's).
    pub fn server_mode(&self) -> Mode {
        match (self.mode, &self.payload_file) {
            (Some(mode), _) => mode,
            (None, Some(_)) => Mode::Unicode,
            (None, None) => self.payload.mode(),
        }
    }

    /// The payload's name in the report: the kind, or `file:NAME`.
    pub fn payload_name(&self) -> String {
        match &self.payload_file {
            Some(path) => format!(
                "file:{}",
                path.file_name()
                    .unwrap_or(path.as_os_str())
                    .to_string_lossy()
            ),
            None => self.payload.to_string(),
        }
    }
}

/// The requests of a run whose bodies are `size` bytes, and their replies.
fn payloads(options: &Options, size: usize) -> Result<payload::Payloads, BenchError> {
    let mode = options.server_mode();
    let Some(path) = &options.payload_file else {
        return Ok(payload::Payloads::generated(options.payload, mode, size));
    };
    let text = std::fs::read(path)
        .map_err(|e| BenchError::Usage(format!("--payload-file {}: {e}", path.display())))?;
    payload::Payloads::from_text(&text, mode, size).ok_or_else(|| {
        BenchError::Usage(format!(
            "--payload-file {}: no request can be cut from it (empty, or one incomplete UTF-8 character)",
            path.display()
        ))
    })
}

/// The request body size of a run: --size, less the UDP header.
fn body_size(options: &Options) -> usize {
    match options.kind {
        Kind::Udp => options.size.get().saturating_sub(payload::UDP_HEADER),
        _ => options.size.get(),
    }
}

/// Runs the benchmark described by `options` and returns its report.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    // Each connection is a descriptor, and the soft limit is often far
    // below the hard one. Not fatal: a run that gets fewer descriptors than
    // it needs reports its failed connects.
    if let Err(e) = crate::rlimit::raise_nofile_limit() {
        eprintln!("upcase-bench: warning: cannot raise the file descriptor limit: {e}");
    }
    check_kind_options(options)?;
    if options.kind == Kind::Udp && options.size.get() < payload::UDP_HEADER {
        return Err(BenchError::Usage(format!(
            "udp: --size must be at least {} (the sequence header)",
            payload::UDP_HEADER
        )));
    }
    // A file that cannot be read is a usage error before any connection
    // (or worker process) is made.
    payloads(options, body_size(options))?;
    match options.kind {
        Kind::Tcp | Kind::Idle => workers::run(options),
        Kind::Churn => {
            // Not split: this only rejects the options that would.
            workers::check_unsplit(options)?;
            churn::run(options)
        }
        Kind::Udp => {
            // Flows are not split: this only rejects the options that would.
            workers::check_unsplit(options)?;
            udp::run(options)
        }
    }
}

/// Options that only one kind understands are usage errors with the others:
/// a `--rate` that an idle run silently ignored would be a wrong figure.
fn check_kind_options(o: &Options) -> Result<(), BenchError> {
    let only = |given: bool, flag: &str, kind: Kind, name: &str| {
        if given && o.kind != kind {
            Err(BenchError::Usage(format!(
                "{flag} is for `{name}` runs only"
            )))
        } else {
            Ok(())
        }
    };
    only(
        o.requests_per_connection.is_some(),
        "--requests-per-connection",
        Kind::Churn,
        "churn",
    )?;
    only(o.close.is_some(), "--close", Kind::Churn, "churn")?;
    only(o.rate.is_some(), "--rate", Kind::Tcp, "tcp")
}

/// A latency histogram: 1 ns to 1 hour at 3 significant digits. Every
/// part of a split run makes its own the same way, so they add up.
fn new_histogram() -> Histogram<u64> {
    // The bounds are valid constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid"))
}

/// How many error descriptions a report keeps (the counts keep the rest).
const MAX_SAMPLES: usize = 10;

/// The kinds of [`Errors`], to count one.
#[derive(Clone, Copy, Debug)]
enum ErrorKind {
    ConnectFailed,
    ConnectTimeout,
    Reset,
    UnexpectedClose,
    Mismatch,
    Missing,
    NoEof,
    Other,
}

/// The measuring state both transports share: the measured window, the
/// latency histogram, the counts, the errors, the progress line.
struct Recorder {
    /// Start and end of the measured window, once known.
    window: Option<(Instant, Instant)>,
    /// Stop the window after this many replies.
    max_messages: Option<u64>,
    /// Latency of replies in the window, nanoseconds.
    latency: Histogram<u64>,
    /// Replies in the window.
    messages: u64,
    /// Reply bytes in the window.
    reply_bytes: u64,
    /// Errors by kind.
    errors: Errors,
    /// The first errors, in words.
    samples: Vec<String>,
    /// The server's figures when the window started.
    server_start: Option<ProcSample>,
    /// The server's figures when the window closed.
    server_end: Option<ProcSample>,
    /// When the window closed (its end, or when `--messages` was reached).
    closed_at: Option<Instant>,
    /// Verified replies in any phase (for the replies per second shown).
    all_replies: u64,
    /// The live progress line (hidden when stderr is not a terminal, and
    /// with `--json`).
    progress: Progress,
    /// `--timeline`: one row per second.
    timeline: Option<Timeline>,
    /// Connections (clients, flows) asked for, for the progress line.
    target: usize,
    /// When the run is expected to end, for the progress line.
    ends: Option<Instant>,
}

impl Recorder {
    fn new(options: &Options) -> Result<Recorder, BenchError> {
        let start = Instant::now();
        let timeline = match &options.timeline {
            Some(path) => {
                Some(Timeline::create(path, start).map_err(BenchError::io("create --timeline"))?)
            }
            None => None,
        };
        Ok(Recorder {
            window: None,
            max_messages: options.messages.map(NonZeroU64::get),
            latency: new_histogram(),
            messages: 0,
            reply_bytes: 0,
            errors: Errors::default(),
            samples: Vec::new(),
            server_start: None,
            server_end: None,
            closed_at: None,
            all_replies: 0,
            progress: Progress::new(options.json, start),
            timeline,
            target: options.connections.get(),
            ends: None,
        })
    }

    /// Opens the measured window at `now`, for `duration`.
    fn start_window(&mut self, now: Instant, duration: Duration, server_pid: Option<i32>) {
        self.window = Some((now, now + duration));
        self.ends = Some(now + duration);
        self.server_start = server_pid.and_then(ProcSample::read);
    }

    /// Closes the window at `now`, sampling the server before the drain and
    /// the closes add CPU time that is not load.
    fn close_window(&mut self, now: Instant, server_pid: Option<i32>) {
        if self.closed_at.is_none() {
            self.closed_at = Some(now);
            self.server_end = server_pid.and_then(ProcSample::read);
        }
    }

    /// Whether the window is over (its end passed, or enough replies).
    fn window_over(&self, now: Instant) -> bool {
        match self.window {
            Some((_, end)) => now >= end || self.max_messages.is_some_and(|m| self.messages >= m),
            None => false,
        }
    }

    /// Whether a reply completed at `now` counts in the figures.
    fn in_window(&self, now: Instant) -> bool {
        matches!(self.window, Some((start, end)) if now >= start && now < end)
            && self.max_messages.is_none_or(|m| self.messages < m)
    }

    /// Notes a verified reply of `bytes` bytes sent at `sent`; returns
    /// whether it counted in the window.
    fn reply(&mut self, sent: Instant, now: Instant, bytes: usize) -> bool {
        self.all_replies += 1;
        let ns = now.saturating_duration_since(sent).as_nanos() as u64;
        if let Some(t) = &mut self.timeline {
            t.reply(now, ns);
        }
        if !self.in_window(now) {
            return false;
        }
        self.messages += 1;
        self.reply_bytes += bytes as u64;
        self.latency.saturating_record(ns.max(1));
        true
    }

    /// Counts an error; keeps its description if it is one of the first.
    fn error(&mut self, kind: ErrorKind, describe: impl FnOnce() -> String) {
        if let Some(t) = &mut self.timeline {
            t.error(Instant::now());
        }
        let e = &mut self.errors;
        *match kind {
            ErrorKind::ConnectFailed => &mut e.connect_failed,
            ErrorKind::ConnectTimeout => &mut e.connect_timeout,
            ErrorKind::Reset => &mut e.reset,
            ErrorKind::UnexpectedClose => &mut e.unexpected_close,
            ErrorKind::Mismatch => &mut e.mismatch,
            ErrorKind::Missing => &mut e.missing,
            ErrorKind::NoEof => &mut e.no_eof,
            ErrorKind::Other => &mut e.other,
        } += 1;
        if self.samples.len() < MAX_SAMPLES {
            let text = describe();
            // Printed as it happens too: a run that hangs afterwards still
            // shows what went wrong first.
            self.progress.suspend(|| eprintln!("upcase-bench: {text}"));
            self.samples.push(text);
        }
    }

    /// Redraws the progress line (at most 5 times a second) and writes the
    /// timeline's rows of the seconds that ended.
    fn tick(&mut self, now: Instant, phase: &'static str, up: usize) {
        if let Some(t) = &mut self.timeline {
            t.phase(now, phase);
        }
        self.progress.update(
            now,
            &Status {
                phase,
                up,
                target: self.target,
                replies: self.all_replies,
                errors: self.errors.total(),
                ends: self.ends,
            },
        );
    }

    /// Notes when the run is expected to end, for the progress line.
    fn expect_end(&mut self, at: Instant) {
        self.ends = Some(at);
    }

    /// Fills in the common figures of `report` at the end of the run.
    fn finish(mut self, report: &mut Report, options: &Options) -> Result<(), BenchError> {
        self.progress.finish();
        if let Some(t) = self.timeline.take() {
            t.finish(Instant::now())
                .map_err(BenchError::io("write --timeline"))?;
        }
        let window_s = match (self.window, self.closed_at) {
            (Some((start, end)), Some(closed)) => end.min(closed).saturating_duration_since(start),
            _ => Duration::ZERO,
        }
        .as_secs_f64();
        report.addr = options.addr.to_string();
        report.connections = options.connections.get();
        report.size = options.size.get();
        report.pipeline = options.pipeline.get();
        report.payload = options.payload_name();
        report.mode = options.server_mode().to_string();
        report.window_s = window_s;
        report.messages = self.messages;
        if window_s > 0.0 {
            report.msgs_per_s = self.messages as f64 / window_s;
            report.mb_per_s = self.reply_bytes as f64 / window_s / 1e6;
        }
        report.latency_us = report::Latency::from_histogram(&self.latency);
        report.latency_histogram = Some(self.latency);
        if let (Some(start), Some(end)) = (self.server_start, self.server_end) {
            {
                let cpu_s = end.cpu.saturating_sub(start.cpu).as_secs_f64();
                report.server = Some(report::ServerUsage {
                    cpu_s,
                    cpu_us_per_msg: if self.messages > 0 {
                        cpu_s * 1e6 / self.messages as f64
                    } else {
                        0.0
                    },
                    rss_kib: end.rss_kib,
                    peak_rss_kib: end.peak_rss_kib,
                    idle_bytes_per_conn: None,
                    cpu_us_per_conn: None,
                });
            }
        }
        report.ok = self.errors.total() == 0;
        report.errors = self.errors;
        report.error_samples = self.samples;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("upcase-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_the_vocabulary_of_the_config() {
        Options::command().debug_assert();
        let o = parse(&["tcp"]).unwrap();
        assert_eq!(o.duration, Duration::from_secs(3));
        assert_eq!(o.warmup, Duration::from_secs(1));
        assert_eq!(o.connect_timeout, Duration::from_secs(30));
        assert_eq!(o.drain_timeout, Duration::from_secs(5));
        assert_eq!(o.udp_timeout, Duration::from_secs(1));
        assert_eq!(
            (o.connections.get(), o.size.get(), o.pipeline.get()),
            (1, 64, 1)
        );
        assert_eq!(o.max_connecting.get(), 256);
        let o = parse(&[
            "udp",
            "--duration",
            "2m",
            "--warmup",
            "0s",
            "--udp-timeout",
            "50ms",
            "--size",
            "4KiB",
            "--messages",
            "10",
        ])
        .unwrap();
        assert_eq!(o.duration, Duration::from_secs(120));
        assert_eq!(o.warmup, Duration::ZERO);
        assert_eq!(o.udp_timeout, Duration::from_millis(50));
        assert_eq!(o.size.get(), 4096);
        assert_eq!(o.messages.map(NonZeroU64::get), Some(10));
    }

    #[test]
    fn zero_and_nonsense_are_usage_errors() {
        for args in [
            &["tcp", "--connections", "0"][..],
            &["tcp", "--pipeline", "0"],
            &["tcp", "--size", "0"],
            &["tcp", "--size", "0KiB"],
            &["tcp", "--size", "64KB"],
            &["tcp", "--max-connecting", "0"],
            &["tcp", "--messages", "0"],
            &["tcp", "--connect-timeout", "0s"],
            &["udp", "--udp-timeout", "0"],
            &["tcp", "--duration", "3x"],
            &["tcp", "--duration", "1.5s"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let e = parse(&["tcp", "--size", "64KB"]).unwrap_err().to_string();
        assert!(e.contains("invalid size \"64KB\""), "{e}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(BenchError::Usage("x".into()).exit_code(), 2);
        let io = BenchError::Io {
            context: "poll",
            source: io::Error::from(io::ErrorKind::Other),
        };
        assert_eq!(io.exit_code(), 3);
    }
}
