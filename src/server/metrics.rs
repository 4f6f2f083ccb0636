//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` on
//! listeners of its own, in the same poll as everything else.
//!
//! ```text
//! metrics listener -> accept until WouldBlock; past MAX_CLIENTS: closed at once
//! scrape client    -> read the request head (at most MAX_REQUEST bytes),
//!                     parsed by httparse; answer; close once it is sent
//! timer            -> a client not done within TIMEOUT is closed
//! ```
//!
//! A scrape is answered from what the loop counts anyway ([`Counters`],
//! the acceptor's pauses, the open connections' pending output) and from
//! `/proc/self` for the standard `process_*` metrics, all read when the
//! request comes: nothing on the serving path changes for it. The body is
//! encoded by `prometheus-client`, in the Prometheus text format, or in
//! OpenMetrics when the `Accept` header asks for it.
//!
//! Its clients are not the daemon's clients: they count against neither
//! `max_connections` nor the per-address limit, and never reach the
//! transform. Their own bounds (a few at once, a small request, a timeout)
//! cap what a slow or hostile one costs.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry as Metrics, Unit};
use slab::Slab;

use super::conn::write_all_nonblocking;
use super::records::Ended;
use super::{Server, ServerError};

/// The first token of the endpoint: far above any connection's
/// (`conn_base` + slab key), so the two ranges never meet, and below the
/// agent check's (from `usize::MAX / 2`, tested first by the loop).
pub const FIRST_TOKEN: usize = usize::MAX / 4;
/// Tokens of scrape clients start here (listeners come before).
const FIRST_CLIENT: usize = FIRST_TOKEN + 1024;
/// Scrapes served at once; more are closed as soon as they are accepted.
const MAX_CLIENTS: usize = 4;
/// The last token the endpoint may use (its clients' slab never holds more
/// than `MAX_CLIENTS`).
pub const LAST_TOKEN: usize = FIRST_CLIENT + MAX_CLIENTS;
/// Most bytes of a request head (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Bytes read and dropped after an answer, waiting for the client's FIN.
const MAX_DISCARD: usize = 64 * 1024;
/// Most headers a request may have.
const MAX_HEADERS: usize = 32;
/// A client must have sent its request and taken the answer by then.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The content type OpenMetrics scrapers ask for, and get.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A stretch of time spent in some state, and the total of the past ones.
#[derive(Debug, Default, Clone, Copy)]
pub struct PausedTime {
    /// Since when the state holds, if it does.
    since: Option<Instant>,
    /// The stretches that ended.
    total: Duration,
}

impl PausedTime {
    /// The state begins at `now` (nothing if it holds already).
    pub fn start(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// The state ends at `now` (nothing if it did not hold).
    pub fn stop(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.total += now.saturating_duration_since(since);
        }
    }

    /// Time in the state up to `now`, the current stretch included.
    pub fn total(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// Reloads (SIGHUP) and how they went, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reloads {
    /// Reloads that applied a new configuration.
    pub ok: u64,
    /// Reloads whose file was rejected (the old configuration kept).
    pub failed: u64,
    /// Whether the last one applied (true before any).
    pub last_failed: bool,
    /// When a configuration was last applied (the start, before any reload).
    pub last_ok: Option<SystemTime>,
}

/// One scrape client.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// The request head so far.
    request: Vec<u8>,
    /// The answer, once the request is complete.
    response: Option<Vec<u8>>,
    /// Bytes of the answer the kernel took.
    sent: usize,
    /// Bytes read and dropped after the answer (our FIN sent).
    discarded: usize,
    /// Closed if not done by then.
    deadline: Instant,
}

/// The endpoint: its listeners and the clients being served.
#[derive(Debug)]
pub struct Endpoint {
    listeners: Vec<(TcpListener, SocketAddr)>,
    clients: Slab<Client>,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The metrics, in OpenMetrics (`true`) or Prometheus text; without a
    /// body for HEAD.
    Metrics { openmetrics: bool, head: bool },
    /// An error status with a short text.
    Error(&'static str, &'static str),
}

impl Endpoint {
    /// Binds every address of `[metrics] listen`; `None` when it is empty.
    pub fn bind(
        addrs: &[SocketAddr],
        registry: &Registry,
    ) -> Result<Option<Endpoint>, ServerError> {
        if addrs.is_empty() {
            return Ok(None);
        }
        let mut listeners = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let bound = || -> io::Result<(TcpListener, SocketAddr)> {
                // The daemon's own listener setup: v6-only, SO_REUSEADDR,
                // non-blocking; a small backlog is plenty for scrapers.
                let mut l = super::accept::bind(addr, 16, false, None)?;
                registry.register(&mut l.socket, Token(FIRST_TOKEN + i), Interest::READABLE)?;
                Ok((l.socket, l.addr))
            };
            listeners.push(bound().map_err(|source| ServerError::Bind {
                proto: "tcp",
                addr,
                source,
            })?);
        }
        Ok(Some(Endpoint {
            listeners,
            clients: Slab::new(),
        }))
    }

    /// The bound addresses (port 0 resolved).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a)| *a).collect()
    }

    /// The nearest client deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|(_, c)| c.deadline).min()
    }

    /// Closes the clients past their deadline.
    pub fn expire(&mut self, now: Instant) {
        self.clients.retain(|_, c| {
            let keep = c.deadline > now;
            if !keep {
                debug!(target: super::LOG_TARGET, "metrics: {}: too slow, closed", c.peer);
            }
            keep
        });
    }

    fn accept(&mut self, i: usize, registry: &Registry, now: Instant) {
        let Some((listener, addr)) = self.listeners.get(i) else {
            return;
        };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors or a client already gone: the
                    // next event (or scrape) tries again.
                    debug!(target: super::LOG_TARGET, "metrics: accept on tcp://{addr}: {e}");
                    return;
                }
            };
            if self.clients.len() >= MAX_CLIENTS {
                debug!(target: super::LOG_TARGET, "metrics: {peer}: {MAX_CLIENTS} scrapes under way, closed");
                continue;
            }
            let entry = self.clients.vacant_entry();
            let token = Token(FIRST_CLIENT + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(Client {
                stream,
                peer,
                request: Vec::new(),
                response: None,
                sent: 0,
                discarded: 0,
                deadline: now + TIMEOUT,
            });
        }
    }
}

impl Client {
    /// Reads what the client sent; `Some` once the request is complete (or
    /// cannot be), `Err` when the client is gone.
    fn read_request(&mut self) -> io::Result<Option<Answer>> {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if let Some(answer) = parse(&self.request) {
                        return Ok(Some(answer));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what is left of the answer, then our FIN, then reads and
    /// drops what the client still sends (a body, the rest of a request
    /// too large) until its FIN: closing with unread input would make the
    /// kernel reset the connection and destroy the answer in flight. True
    /// once the client is done; bounded by `MAX_DISCARD` and the timeout.
    fn write_response(&mut self) -> io::Result<bool> {
        let Some(response) = &self.response else {
            return Ok(false);
        };
        if self.sent < response.len() {
            self.sent += write_all_nonblocking(&mut self.stream, &response[self.sent..])?;
            if self.sent < response.len() {
                return Ok(false);
            }
            self.stream.shutdown(std::net::Shutdown::Write)?;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded > MAX_DISCARD {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What the request head in `request` asks for; `None` while incomplete.
fn parse(request: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Partial) if request.len() < MAX_REQUEST => None,
        Ok(httparse::Status::Partial) => Some(Answer::Error(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        )),
        Err(httparse::Error::TooManyHeaders) => Some(Answer::Error(
            "431 Request Header Fields Too Large",
            "too many headers\n",
        )),
        Err(_) => Some(Answer::Error("400 Bad Request", "malformed request\n")),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if path != "/metrics" {
                return Some(Answer::Error("404 Not Found", "only /metrics is here\n"));
            }
            let head = match req.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => {
                    return Some(Answer::Error(
                        "405 Method Not Allowed",
                        "only GET and HEAD\n",
                    ))
                }
            };
            let openmetrics = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
            });
            Some(Answer::Metrics { openmetrics, head })
        }
    }
}

/// A complete HTTP/1.1 answer; the connection closes after it.
fn response(status: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        body.len(),
        if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

impl Server {
    /// An event for one of the endpoint's tokens.
    pub(super) fn on_metrics(&mut self, token: Token, now: Instant) {
        let Some(mut endpoint) = self.metrics.take() else {
            return;
        };
        match token.0 {
            t if t >= FIRST_CLIENT => self.serve_scrape(&mut endpoint, t - FIRST_CLIENT),
            t => endpoint.accept(t - FIRST_TOKEN, self.poll.registry(), now),
        }
        self.metrics = Some(endpoint);
    }

    fn serve_scrape(&self, endpoint: &mut Endpoint, key: usize) {
        let Some(client) = endpoint.clients.get_mut(key) else {
            return;
        };
        let done = (|| -> io::Result<bool> {
            if client.response.is_none() {
                let Some(answer) = client.read_request()? else {
                    return Ok(false);
                };
                client.response = Some(match answer {
                    Answer::Error(status, text) => {
                        debug!(target: super::LOG_TARGET, "metrics: {}: {status}", client.peer);
                        response(status, "text/plain; charset=utf-8", text, false)
                    }
                    Answer::Metrics { openmetrics, head } => {
                        let (content_type, body) = self.render(openmetrics);
                        response("200 OK", content_type, &body, head)
                    }
                });
            }
            client.write_response()
        })();
        // Answered and the client's FIN read, or the client failed: either
        // way it is done.
        if !matches!(done, Ok(false)) {
            endpoint.clients.remove(key);
        }
    }

    /// The metrics now, as (content type, body).
    pub(super) fn render(&self, openmetrics: bool) -> (&'static str, String) {
        let now = Instant::now();
        let c = &self.shared.counters;
        let mut m = Metrics::default();
        counter(
            &mut m,
            "upcased_connections_accepted",
            "TCP connections accepted",
            None,
            c.conns_accepted,
        );
        gauge(
            &mut m,
            "upcased_connections_open",
            "TCP connections open",
            None,
            c.conns_open as i64,
        );
        let closed = Family::<Vec<(String, String)>, Counter>::default();
        for reason in Ended::ALL {
            closed
                .get_or_create(&vec![("reason".into(), reason.as_str().into())])
                .inc_by(reason.count(c));
        }
        m.register(
            "upcased_connections_closed",
            "TCP connections closed, by reason (docs/metrics.md says what each means)",
            closed,
        );
        counter(
            &mut m,
            "upcased_tcp_reads",
            "TCP reads that brought data",
            None,
            c.tcp_reads,
        );
        counter(
            &mut m,
            "upcased_received",
            "Bytes read from TCP clients and UDP datagrams",
            Some(Unit::Bytes),
            c.bytes_in,
        );
        counter(
            &mut m,
            "upcased_sent",
            "Bytes of replies handed to the kernel, TCP and UDP",
            Some(Unit::Bytes),
            c.bytes_out,
        );
        counter(
            &mut m,
            "upcased_udp_received_datagrams",
            "UDP datagrams received",
            None,
            c.dgrams_in,
        );
        counter(
            &mut m,
            "upcased_udp_sent_datagrams",
            "UDP replies sent",
            None,
            c.dgrams_out,
        );
        let unanswered = Family::<Vec<(String, String)>, Counter>::default();
        for (reason, n) in [
            ("send_failed", c.dgrams_dropped),
            ("blocked_source_port", c.dgrams_blocked),
            ("rate_limited", c.dgrams_limited),
        ] {
            unanswered
                .get_or_create(&vec![("reason".into(), reason.into())])
                .inc_by(n);
        }
        m.register(
            "upcased_udp_unanswered_datagrams",
            "UDP datagrams not answered, by reason",
            unanswered,
        );
        let errors = Family::<Vec<(String, String)>, Counter>::default();
        for (kind, n) in [
            ("accept", c.errors_accept),
            ("udp_receive", c.errors_udp_receive),
        ] {
            errors
                .get_or_create(&vec![("kind".into(), kind.into())])
                .inc_by(n);
        }
        m.register(
            "upcased_errors",
            "Errors that ended no connection, by kind",
            errors,
        );
        counter(
            &mut m,
            "upcased_accept_pauses",
            "Times accepting paused (connection limit or out of descriptors)",
            None,
            c.accept_pauses,
        );
        let paused =
            Family::<Vec<(String, String)>, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        for (reason, time) in [
            ("connection_limit", self.acceptor.limit_time.total(now)),
            ("descriptors", self.acceptor.backoff_time.total(now)),
        ] {
            paused
                .get_or_create(&vec![("reason".into(), reason.into())])
                .inc_by(time.as_secs_f64());
        }
        m.register_with_unit(
            "upcased_accept_paused",
            "Time accepting was paused, at the connection limit or out of file descriptors",
            Unit::Seconds,
            paused,
        );
        let (pending, largest) = self.conns.iter().fold((0, 0), |(sum, max), (_, s)| {
            let p = s.conn.pending_output();
            (sum + p, max.max(p))
        });
        gauge(
            &mut m,
            "upcased_pending_output",
            "Bytes of replies waiting for the kernel, all connections",
            Some(Unit::Bytes),
            pending as i64,
        );
        gauge(
            &mut m,
            "upcased_pending_output_largest",
            "Bytes of replies waiting for the kernel, the largest connection",
            Some(Unit::Bytes),
            largest as i64,
        );
        counter(
            &mut m,
            "upcased_connection_records_suppressed",
            "Connection records (log_connections) not written over their rate limit",
            None,
            c.records_suppressed,
        );
        let reloads = Family::<Vec<(String, String)>, Counter>::default();
        for (result, n) in [("ok", self.reloads.ok), ("failed", self.reloads.failed)] {
            reloads
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(n);
        }
        m.register(
            "upcased_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads,
        );
        gauge(
            &mut m,
            "upcased_config_last_reload_successful",
            "Whether the last reload applied (1 before any)",
            None,
            i64::from(!self.reloads.last_failed),
        );
        let last_ok = self.reloads.last_ok.map_or(0.0, unix_seconds);
        m.register_with_unit(
            "upcased_config_last_reload_success_timestamp",
            "When a configuration was last applied (at start, before any reload)",
            Unit::Seconds,
            ConstGauge::new(last_ok),
        );
        m.register(
            "upcased_build",
            "The running version",
            Info::new(vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )]),
        );
        process_metrics(&mut m);
        let mut body = String::new();
        let encoded = if openmetrics {
            text::encode(&mut body, &m)
        } else {
            prometheus_text::encode(&mut body, &m)
        };
        if encoded.is_err() {
            body = String::new();
        }
        let content_type = if openmetrics {
            OPENMETRICS
        } else {
            prometheus_text::CONTENT_TYPE
        };
        (content_type, body)
    }
}

fn counter(m: &mut Metrics, name: &str, help: &str, unit: Option<Unit>, value: u64) {
    match unit {
        Some(unit) => m.register_with_unit(name, help, unit, ConstCounter::new(value)),
        None => m.register(name, help, ConstCounter::new(value)),
    }
}

fn gauge(m: &mut Metrics, name: &str, help: &str, unit: Option<Unit>, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    match unit {
        Some(unit) => m.register_with_unit(name, help, unit, g),
        None => m.register(name, help, g),
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What `/proc/self/stat` says, in the units of the standard metrics.
#[derive(Debug, PartialEq)]
struct ProcStat {
    /// User plus system CPU time, seconds.
    cpu_seconds: f64,
    /// Start, seconds after boot.
    start_after_boot: f64,
    /// Virtual memory, bytes.
    virtual_bytes: u64,
    /// Resident memory, bytes.
    resident_bytes: u64,
}

/// Parses `/proc/PID/stat` (proc(5)): the fields after the command name,
/// which is in parentheses and may hold spaces and parentheses itself.
fn parse_stat(stat: &str, ticks: u64, page: u64) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(") ")?;
    // `rest` starts at field 3 (state): field N is rest[N - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks.max(1) as f64;
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
        start_after_boot: num(22)? as f64 / ticks,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page,
    })
}

/// The standard `process_*` metrics, from `/proc/self` (readable under the
/// unit's `ProcSubset=pid`, unlike `/proc/stat`: the start time is worked
/// out from the boot-time clock instead of its `btime`).
fn process_metrics(m: &mut Metrics) {
    let ticks = rustix::param::clock_ticks_per_second();
    let page = rustix::param::page_size() as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    if let Some(stat) = stat.as_deref().and_then(|s| parse_stat(s, ticks, page)) {
        m.register_with_unit(
            "process_cpu",
            "Total user and system CPU time spent",
            Unit::Seconds,
            ConstCounter::new(stat.cpu_seconds),
        );
        m.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            ConstGauge::new(stat.resident_bytes as i64),
        );
        m.register_with_unit(
            "process_virtual_memory",
            "Virtual memory size",
            Unit::Bytes,
            ConstGauge::new(stat.virtual_bytes as i64),
        );
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let since_boot = boot.tv_sec as f64 + boot.tv_nsec as f64 / 1e9;
        let now = unix_seconds(SystemTime::now());
        m.register_with_unit(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Unit::Seconds,
            ConstGauge::new(now - since_boot + stat.start_after_boot),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            m,
            "process_open_fds",
            "Number of open file descriptors",
            None,
            fds.count() as i64,
        );
    }
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        gauge(
            m,
            "process_max_fds",
            "Maximum number of open file descriptors",
            None,
            max as i64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_their_answers() {
        let metrics = |openmetrics, head| Some(Answer::Metrics { openmetrics, head });
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            metrics(false, false)
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            metrics(false, false)
        );
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            metrics(false, true)
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"),
            metrics(true, false)
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            None,
            "incomplete"
        );
        let status = |r: Option<Answer>| match r {
            Some(Answer::Error(status, _)) => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(parse(b"GET / HTTP/1.1\r\n\r\n")), "404 Not Found");
        assert_eq!(
            status(parse(b"POST /metrics HTTP/1.1\r\n\r\n")),
            "405 Method Not Allowed"
        );
        assert_eq!(status(parse(b"hello world\r\n\r\n")), "400 Bad Request");
        let endless = [
            b"GET /metrics HTTP/1.1\r\n".as_slice(),
            &[b'a'; MAX_REQUEST],
        ]
        .concat();
        assert_eq!(
            status(parse(&endless)),
            "431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn proc_stat_fields_by_number() {
        // A command name with a space and a parenthesis, as proc(5) warns.
        let stat = "42 (up c) d) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 \
                    1000 8192000 300 18446744073709551615";
        assert_eq!(
            parse_stat(stat, 100, 4096),
            Some(ProcStat {
                cpu_seconds: 3.0,
                start_after_boot: 10.0,
                virtual_bytes: 8_192_000,
                resident_bytes: 300 * 4096,
            })
        );
        assert_eq!(parse_stat("42 (x) S 1", 100, 4096), None);
    }

    #[test]
    fn paused_time_adds_up_stretches() {
        let t0 = Instant::now();
        let mut p = PausedTime::default();
        p.start(t0);
        p.start(t0 + Duration::from_secs(1));
        p.stop(t0 + Duration::from_secs(2));
        p.stop(t0 + Duration::from_secs(3));
        assert_eq!(p.total(t0 + Duration::from_secs(9)), Duration::from_secs(2));
        p.start(t0 + Duration::from_secs(10));
        assert_eq!(
            p.total(t0 + Duration::from_secs(11)),
            Duration::from_secs(3)
        );
    }
}
