//! `upcase-bench`, the load generator: many concurrent TCP clients, a UDP
//! flood, or a crowd of idle connections, every reply checked byte for byte.
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
//! - [`report`]: the figures, shown as text or JSON, and `/proc` sampling
//!   of the server.
//!
//! # A run
//!
//! Connect (at most `--max-connecting` at once, `--connect-rate` per
//! second); a connection counts as up only after its first verified
//! exchange. Once every connection is up (or `--connect-timeout` passed),
//! `--warmup` more seconds of load, then the measured window of
//! `--duration` seconds (or `--messages` replies): only replies completed in
//! it count in the figures. Then no new requests; the replies in flight are
//! awaited (`--drain-timeout`), every TCP connection is half-closed, and its
//! EOF awaited: a byte too many, a reset, or a reply still missing is an
//! error. Any error makes the run fail (non-zero exit).

pub mod payload;
pub mod report;
mod tcp;
mod udp;
pub mod verify;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use payload::PayloadKind;
pub use report::Report;
use report::{Errors, ProcSample};

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
    /// tcp, udp or idle.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:12000")]
    pub addr: SocketAddr,
    /// TCP connections (tcp, idle) or UDP flows (udp).
    #[arg(short, long, default_value_t = 1)]
    pub connections: usize,
    /// Seconds measured (idle: seconds the connections are held).
    #[arg(short, long, default_value = "3", value_parser = parse_secs)]
    pub duration: Duration,
    /// Request size in bytes (udp: at least 16, the sequence header).
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Requests in flight per connection (udp: datagrams per flow).
    #[arg(short, long, default_value_t = 1)]
    pub pipeline: usize,
    /// What requests are made of: ascii (any server), utf8 (upcased in
    /// unicode mode), binary (upcased in ascii mode).
    #[arg(long, value_enum, default_value = "ascii")]
    pub payload: PayloadKind,
    /// The server's process id: report its CPU time per message and its RSS.
    #[arg(long)]
    pub server_pid: Option<i32>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// End the measured window after this many replies (or at --duration).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seconds of load after every connection is up, before measuring.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// New connections per second; 0: as fast as --max-connecting allows.
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
    /// Connects in progress at once (keeps within the server's backlog).
    #[arg(long, default_value_t = 256)]
    pub max_connecting: usize,
    /// Seconds for every connection to complete its first exchange.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// Seconds to wait at the end for replies in flight and for EOFs.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub drain_timeout: Duration,
    /// Seconds after which a UDP datagram with no reply counts as lost.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub udp_timeout: Duration,
}

/// Seconds, possibly fractional ("0.5").
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
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
}

impl BenchError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> BenchError {
        move |source| BenchError::Io { context, source }
    }
}

/// Runs the benchmark described by `options` and returns its report.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    if options.connections == 0 {
        return Err(BenchError::Usage("--connections must be at least 1".into()));
    }
    if options.pipeline == 0 {
        return Err(BenchError::Usage("--pipeline must be at least 1".into()));
    }
    if options.size == 0 {
        return Err(BenchError::Usage("--size must be at least 1".into()));
    }
    raise_nofile_limit();
    match options.kind {
        Kind::Tcp | Kind::Idle => tcp::run(options),
        Kind::Udp => {
            if options.size < payload::UDP_HEADER {
                return Err(BenchError::Usage(format!(
                    "udp: --size must be at least {} (the sequence header)",
                    payload::UDP_HEADER
                )));
            }
            udp::run(options)
        }
    }
}

/// Raises the soft limit on open files to the hard one: each connection is
/// a descriptor, and the soft limit is often far below the hard one.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let below = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
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
    /// The live progress line (hidden when stderr is not a terminal).
    progress: ProgressBar,
    /// When the progress line was last redrawn.
    last_progress: Instant,
}

impl Recorder {
    fn new(options: &Options) -> Recorder {
        // Hidden unless stderr is a terminal: scripts get no escape codes.
        let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        progress.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Recorder {
            window: None,
            max_messages: options.messages,
            // 1 ns to 1 hour at 3 significant digits; bounds are valid
            // constants, so this cannot fail.
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid")),
            messages: 0,
            reply_bytes: 0,
            errors: Errors::default(),
            samples: Vec::new(),
            server_start: None,
            server_end: None,
            closed_at: None,
            progress,
            last_progress: Instant::now(),
        }
    }

    /// Opens the measured window at `now`, for `duration`.
    fn start_window(&mut self, now: Instant, duration: Duration, server_pid: Option<i32>) {
        self.window = Some((now, now + duration));
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
        if !self.in_window(now) {
            return false;
        }
        self.messages += 1;
        self.reply_bytes += bytes as u64;
        let ns = now.saturating_duration_since(sent).as_nanos() as u64;
        self.latency.saturating_record(ns.max(1));
        true
    }

    /// Counts an error; keeps its description if it is one of the first.
    fn error(&mut self, kind: ErrorKind, describe: impl FnOnce() -> String) {
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

    /// Redraws the progress line at most 5 times a second.
    fn tick(&mut self, now: Instant, phase: &str, up: usize) {
        if now.duration_since(self.last_progress) < Duration::from_millis(200) {
            return;
        }
        self.last_progress = now;
        let rate = match self.window {
            Some((start, _)) if now > start => {
                self.messages as f64 / now.duration_since(start).as_secs_f64()
            }
            _ => 0.0,
        };
        self.progress.set_message(format!(
            "{phase}: {up} up, {} replies measured, {rate:.0} msgs/s, {} errors",
            self.messages,
            self.errors.total()
        ));
        self.progress.tick();
    }

    /// Fills in the common figures of `report` at the end of the run.
    fn finish(self, report: &mut Report, options: &Options) {
        self.progress.finish_and_clear();
        let window_s = match (self.window, self.closed_at) {
            (Some((start, end)), Some(closed)) => end.min(closed).saturating_duration_since(start),
            _ => Duration::ZERO,
        }
        .as_secs_f64();
        report.addr = options.addr.to_string();
        report.connections = options.connections;
        report.size = options.size;
        report.pipeline = options.pipeline;
        report.payload = options.payload.to_string();
        report.window_s = window_s;
        report.messages = self.messages;
        if window_s > 0.0 {
            report.msgs_per_s = self.messages as f64 / window_s;
            report.mb_per_s = self.reply_bytes as f64 / window_s / 1e6;
        }
        report.latency_us = report::Latency::from_histogram(&self.latency);
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
                });
            }
        }
        report.ok = self.errors.total() == 0;
        report.errors = self.errors;
        report.error_samples = self.samples;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{getrlimit, Resource};

    /// The soft limit on open files ends at the hard one (it can only go
    /// up: no other test of this process depends on it being low).
    #[test]
    fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
        raise_nofile_limit();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum, "{limit:?}");
    }
}
