//! What a run measured, and how it is shown: a summary for people, JSON
//! (`--json`) for scripts. Also the only module that reads `/proc`.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Errors counted by kind. Any of them makes the run fail; UDP loss is not
/// among them (datagrams may be dropped) and is reported in [`UdpFigures`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Errors {
    /// Connects refused or failed (the server is down, or its backlog and
    /// the SYN retries gave up).
    pub connect_failed: u64,
    /// Connections (or UDP flows) with no verified exchange before
    /// `--connect-timeout`.
    pub connect_timeout: u64,
    /// Connections reset by the server (ECONNRESET, EPIPE).
    pub reset: u64,
    /// Connections the server closed while replies were awaited or before
    /// the client was done.
    pub unexpected_close: u64,
    /// Replies with a wrong byte, bytes nobody asked for, or UDP replies
    /// that match no request.
    pub mismatch: u64,
    /// Replies still missing at the end (after `--drain-timeout`).
    pub missing: u64,
    /// Connections that did not close (EOF) within the drain timeout after
    /// the client shut down its side.
    pub no_eof: u64,
    /// Any other socket error.
    pub other: u64,
}

/// Counts added kind by kind (merging workers' figures). Every field is
/// named, so a kind added to [`Errors`] later does not compile until it is
/// summed here: no count can be dropped (which would pass a failed run).
impl std::ops::AddAssign<&Errors> for Errors {
    fn add_assign(&mut self, more: &Errors) {
        let Errors {
            connect_failed,
            connect_timeout,
            reset,
            unexpected_close,
            mismatch,
            missing,
            no_eof,
            other,
        } = more;
        self.connect_failed += connect_failed;
        self.connect_timeout += connect_timeout;
        self.reset += reset;
        self.unexpected_close += unexpected_close;
        self.mismatch += mismatch;
        self.missing += missing;
        self.no_eof += no_eof;
        self.other += other;
    }
}

impl Errors {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect_failed
            + self.connect_timeout
            + self.reset
            + self.unexpected_close
            + self.mismatch
            + self.missing
            + self.no_eof
            + self.other
    }
}

/// Latency percentiles in microseconds, from send to the reply's last byte.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Slowest reply.
    pub max: f64,
}

impl Latency {
    /// Reads the percentiles out of a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p75: us(h.value_at_quantile(0.75)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// How evenly the server served the connections during the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Fairness {
    /// Fewest replies one connection got.
    pub min: u64,
    /// Replies per connection on average.
    pub mean: f64,
    /// Most replies one connection got.
    pub max: u64,
    /// Connections that got no reply at all in the window.
    pub stalled: u64,
    /// Connections counted (for merging the parts of a split run).
    #[serde(skip)]
    pub connections: u64,
}

impl Fairness {
    /// From the per-connection reply counts.
    pub fn from_counts(counts: impl Iterator<Item = u64>) -> Fairness {
        let mut f = Fairness {
            min: u64::MAX,
            ..Fairness::default()
        };
        let mut n = 0u64;
        let mut sum = 0u64;
        for c in counts {
            n += 1;
            sum += c;
            f.min = f.min.min(c);
            f.max = f.max.max(c);
            f.stalled += u64::from(c == 0);
        }
        f.connections = n;
        if n == 0 {
            f.min = 0;
        } else {
            f.mean = sum as f64 / n as f64;
        }
        f
    }
}

/// UDP datagram counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UdpFigures {
    /// Requests sent.
    pub sent: u64,
    /// Verified replies.
    pub received: u64,
    /// Requests with no reply within `--udp-timeout` (or by the end).
    pub lost: u64,
    /// Replies that came after their request was given up as lost.
    pub late: u64,
}

/// What the server process used, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    /// Server CPU time (user + system) during the measured window, seconds.
    pub cpu_s: f64,
    /// That CPU time divided by the replies in the window, microseconds.
    pub cpu_us_per_msg: f64,
    /// Resident memory at the end of the window, KiB.
    pub rss_kib: u64,
    /// Peak resident memory of the process so far (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// `idle` mode: resident memory added per held connection, bytes
    /// (kernel socket memory is not in a process's RSS, so this is the
    /// server's user-space memory per connection).
    pub idle_bytes_per_conn: Option<f64>,
    /// `churn` mode: CPU time per completed connection, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_conn: Option<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `tcp`, `udp` or `idle`.
    pub kind: String,
    /// The server address.
    pub addr: String,
    /// Connections (TCP, idle) or flows (UDP) asked for.
    pub connections: usize,
    /// Connections or flows that completed a verified exchange.
    pub connections_up: usize,
    /// Request size in bytes.
    pub size: usize,
    /// Requests in flight per connection or flow.
    pub pipeline: usize,
    /// The payload kind, or `file:NAME` (`--payload-file`).
    pub payload: String,
    /// The server mode the replies were checked against.
    pub mode: String,
    /// From the start until every connection was up (or given up on),
    /// seconds; a split run: until the last part's were.
    pub connect_s: f64,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Verified replies in the window.
    pub messages: u64,
    /// `messages / window_s`.
    pub msgs_per_s: f64,
    /// Reply bytes per second in the window, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// Latency of the replies in the window.
    pub latency_us: Latency,
    /// Replies per connection in the window.
    pub fairness: Fairness,
    /// Errors by kind.
    pub errors: Errors,
    /// The first few errors, in words (a wrong byte with its position and
    /// both texts).
    pub error_samples: Vec<String>,
    /// UDP only.
    pub udp: Option<UdpFigures>,
    /// With `--server-pid`.
    pub server: Option<ServerUsage>,
    /// `churn` mode: completed connections per second in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_second: Option<f64>,
    /// `churn` mode's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnFigures>,
    /// `tcp --rate` (open loop): offered against achieved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoopFigures>,
    /// No errors of any kind.
    pub ok: bool,
    /// The latency histogram (nanoseconds) behind `latency_us`: reports of
    /// several processes merge exactly by adding these
    /// (`Histogram::add`), never by averaging percentiles.
    #[serde(skip)]
    pub latency_histogram: Option<Histogram<u64>>,
}

/// A latency histogram as plain numbers, for carrying it between
/// processes (a worker's JSON) and merging it exactly: every recorded
/// bucket as `[value, count]`, the value being the bucket's lowest
/// equivalent, so [`HistogramCounts::to_histogram`] rebuilds a histogram
/// with the very same counts in the very same buckets. Adding rebuilt
/// histograms (`Histogram::add`) is then the exact merge; averaging
/// percentiles never is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistogramCounts {
    /// Significant digits of the histogram (3 for every bench histogram).
    pub sigfig: u8,
    /// Recorded buckets, ascending: `[lowest value of the bucket, count]`.
    pub counts: Vec<(u64, u64)>,
}

impl HistogramCounts {
    /// The buckets of `h`.
    pub fn from_histogram(h: &Histogram<u64>) -> HistogramCounts {
        HistogramCounts {
            sigfig: h.sigfig(),
            counts: h
                .iter_recorded()
                .map(|v| {
                    (
                        h.lowest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    )
                })
                .collect(),
        }
    }

    /// A histogram with these buckets (1 ns to 1 hour, as the bench's);
    /// a value out of that range is clamped into it.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, self.sigfig.clamp(1, 5))
            .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits are valid"));
        for &(value, count) in &self.counts {
            h.saturating_record_n(value, count);
        }
        h
    }
}

/// What the `churn` mode measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnFigures {
    /// Requests (each verified) on each connection.
    pub requests_per_connection: u32,
    /// How each connection ended: `fin` or `rst`.
    pub close: String,
    /// Connections completed (connect, every reply verified, closed) in the
    /// measured window.
    pub connections: u64,
    /// Connections completed in the whole run, the phases outside the
    /// window included (what the server's counters see).
    pub connections_total: u64,
    /// From `connect()` to the connection being established.
    pub connect_us: Latency,
    /// From sending the first request to the last byte of its reply.
    pub first_reply_us: Latency,
    /// From starting the close (half-close, or the close with a reset) to
    /// its end (the server's EOF, or the close call returning).
    pub close_us: Latency,
    /// From `connect()` to the end of the close: one whole connection.
    pub connection_us: Latency,
    /// Failures by the phase they happened in (the kinds are in `errors`).
    pub failures: ChurnFailures,
    /// What limits the connection rate besides the server, in words
    /// (ephemeral ports and TIME_WAIT).
    pub limits: String,
    /// The histograms (nanoseconds) behind the phase figures, in the order
    /// connect, first reply, close, connection; for exact merging.
    #[serde(skip)]
    pub histograms: Vec<Histogram<u64>>,
}

/// Churn failures by phase; they add up to `errors.total()`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChurnFailures {
    /// Connect refused, failed or not completed.
    pub connect: u64,
    /// While requests and replies were exchanged (wrong byte, reset,
    /// the server closed early, a reply missing).
    pub exchange: u64,
    /// While closing (bytes after the last reply, a reset on a FIN close,
    /// no EOF from the server).
    pub close: u64,
}

/// What `tcp --rate` (open loop) measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpenLoopFigures {
    /// The rate asked for, requests per second.
    pub offered_per_s: f64,
    /// Verified replies per second in the measured window.
    pub achieved_per_s: f64,
    /// Requests whose scheduled time fell in the window.
    pub scheduled: u64,
    /// Requests sent during the window (whenever they were due).
    pub sent: u64,
    /// Of those, how many were sent more than 1 ms after their time (the
    /// connection still had `--pipeline` requests in flight, or its socket
    /// was full): the server did not keep up.
    pub sent_late: u64,
    /// The longest any of them waited past its scheduled time to be sent,
    /// microseconds.
    pub max_send_delay_us: f64,
    /// Requests due in the window never sent: their connection was gone,
    /// or the backlog was still behind them when the window ended.
    pub unsent: u64,
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

impl Report {
    /// The `churn` mode's summary.
    fn fmt_churn(&self, f: &mut fmt::Formatter<'_>, c: &ChurnFigures) -> fmt::Result {
        writeln!(
            f,
            "churn {}: {} of {} clients up, {} x {} B {} per connection, pipeline {}, close {}",
            self.addr,
            self.connections_up,
            self.connections,
            c.requests_per_connection,
            self.size,
            self.payload,
            self.pipeline,
            c.close
        )?;
        writeln!(
            f,
            "  {} connections in {:.2} s: {:.0} connections/s; {} replies: {:.0} msgs/s",
            c.connections,
            self.window_s,
            self.connections_per_second.unwrap_or(0.0),
            self.messages,
            self.msgs_per_s
        )?;
        writeln!(f, "  connect µs:     {}", c.connect_us)?;
        writeln!(f, "  first reply µs: {}", c.first_reply_us)?;
        writeln!(f, "  close µs:       {}", c.close_us)?;
        writeln!(f, "  connection µs:  {}", c.connection_us)?;
        if c.requests_per_connection > 1 {
            writeln!(f, "  every reply µs: {}", self.latency_us)?;
        }
        writeln!(
            f,
            "  failures by phase: connect {}, exchange {}, close {}",
            c.failures.connect, c.failures.exchange, c.failures.close
        )?;
        writeln!(f, "  limits: {}", c.limits)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = &self.churn {
            self.fmt_churn(f, c)?;
        } else {
            self.fmt_head(f)?;
        }
        self.fmt_tail(f)
    }
}

impl Report {
    /// The first lines of the `tcp`, `udp` and `idle` summaries.
    fn fmt_head(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}: {} of {} {} up, {} B {} payload, pipeline {}",
            self.kind,
            self.addr,
            self.connections_up,
            self.connections,
            if self.kind == "udp" {
                "flows"
            } else {
                "connections"
            },
            self.size,
            self.payload,
            self.pipeline
        )?;
        if self.kind == "idle" {
            writeln!(f, "  all connections up in {:.2} s", self.connect_s)?;
        }
        if self.kind != "idle" {
            writeln!(
                f,
                "  {} replies in {:.2} s: {:.0} msgs/s, {:.2} MB/s",
                self.messages, self.window_s, self.msgs_per_s, self.mb_per_s
            )?;
            let l = &self.latency_us;
            writeln!(
                f,
                "  latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                l.p50, l.p90, l.p99, l.p999, l.max
            )?;
            if let Some(o) = &self.open_loop {
                writeln!(
                    f,
                    "  open loop: offered {:.0} req/s, achieved {:.0} replies/s; {} sent, {} of \
                     them more than 1 ms after their time (at most {:.1} µs); {} of the {} due \
                     never sent",
                    o.offered_per_s,
                    o.achieved_per_s,
                    o.sent,
                    o.sent_late,
                    o.max_send_delay_us,
                    o.unsent,
                    o.scheduled
                )?;
                writeln!(
                    f,
                    "  latency µs from the scheduled send: p50 {:.1}  p75 {:.1}  p90 {:.1}  \
                     p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}",
                    l.p50, l.p75, l.p90, l.p99, l.p999, l.p9999, l.max
                )?;
            }
            let fa = &self.fairness;
            writeln!(
                f,
                "  replies per connection: min {}  mean {:.1}  max {}  stalled {}",
                fa.min, fa.mean, fa.max, fa.stalled
            )?;
        }
        if let Some(u) = &self.udp {
            writeln!(
                f,
                "  datagrams: sent {}  received {}  lost {}  late {}",
                u.sent, u.received, u.lost, u.late
            )?;
        }
        Ok(())
    }

    /// The server's figures, the errors and the verdict, for every kind.
    fn fmt_tail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.server {
            write!(
                f,
                "  server: cpu {:.3} s ({:.2} µs/msg",
                s.cpu_s, s.cpu_us_per_msg
            )?;
            if let Some(c) = s.cpu_us_per_conn {
                write!(f, ", {c:.2} µs/connection")?;
            }
            write!(f, "), rss {} KiB, peak {} KiB", s.rss_kib, s.peak_rss_kib)?;
            if let Some(b) = s.idle_bytes_per_conn {
                write!(f, ", {b:.0} B per idle connection")?;
            }
            writeln!(f)?;
        }
        let e = &self.errors;
        writeln!(
            f,
            "  errors: {} (connect_failed {}, connect_timeout {}, reset {}, unexpected_close {}, \
             mismatch {}, missing {}, no_eof {}, other {})",
            e.total(),
            e.connect_failed,
            e.connect_timeout,
            e.reset,
            e.unexpected_close,
            e.mismatch,
            e.missing,
            e.no_eof,
            e.other
        )?;
        for s in &self.error_samples {
            writeln!(f, "  error: {s}")?;
        }
        write!(f, "{}", if self.ok { "OK" } else { "FAILED" })
    }
}

/// A process's CPU time and memory at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU time of all its threads.
    pub cpu: Duration,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub peak_rss_kib: u64,
}

impl ProcSample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process
    /// is gone or the files look unexpected.
    pub fn read(pid: i32) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces
        // and ')', so count fields from the last ')'. After it come field 3
        // (state) onwards; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let ticks = match rustix::param::clock_ticks_per_second() {
            0 => 100,
            ticks => ticks,
        };
        let cpu = Duration::from_nanos((utime + stime) * 1_000_000_000 / ticks);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(ProcSample {
            cpu,
            rss_kib: kib("VmRSS:")?,
            peak_rss_kib: kib("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = ProcSample::read(std::process::id() as i32).unwrap();
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
    }

    #[test]
    fn histograms_travel_as_counts_and_merge_exactly() {
        let bounds = |sigfig| Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, sigfig);
        let (mut a, mut b) = (bounds(3).unwrap(), bounds(3).unwrap());
        for v in [1u64, 999, 2049, 123_456, 7_000_000_000] {
            a.record_n(v, 3).unwrap();
            b.record(v * 7 + 1).unwrap();
        }
        let mut whole = a.clone();
        whole.add(&b).unwrap();
        // Through JSON, as a worker's report would carry them.
        let json = serde_json::to_string(&HistogramCounts::from_histogram(&a)).unwrap();
        let a2 = serde_json::from_str::<HistogramCounts>(&json)
            .unwrap()
            .to_histogram();
        let mut merged = a2;
        merged
            .add(HistogramCounts::from_histogram(&b).to_histogram())
            .unwrap();
        assert_eq!(merged.len(), whole.len());
        assert_eq!(merged.max(), whole.max());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                whole.value_at_quantile(q),
                "{q}"
            );
        }
        assert_eq!(
            HistogramCounts::from_histogram(&merged),
            HistogramCounts::from_histogram(&whole)
        );
    }

    #[test]
    fn fairness_counts_stalled_connections() {
        let f = Fairness::from_counts([3, 0, 5].into_iter());
        assert_eq!((f.min, f.max, f.stalled), (0, 5, 1));
        assert!((f.mean - 8.0 / 3.0).abs() < 1e-9);
    }
}
