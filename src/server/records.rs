//! One record per TCP connection when it ends (`log_connections`): who it
//! was, how long it lasted, the bytes each way and why it closed.
//!
//! Elsewhere than under journald the record is one log line (target
//! `upcase::server`, level info):
//!
//! ```text
//! connection peer=127.0.0.1:49754 duration_usec=205 bytes_in=6 bytes_out=6 close_reason=done
//! ```
//!
//! When stderr is the journal (see `logging`), the record goes to journald
//! natively ([`crate::journal`]) with fields of its own, `PEER=`,
//! `DURATION_USEC=`, `BYTES_IN=`, `BYTES_OUT=`, `CLOSE_REASON=` (and
//! `PROXIED_PEER=`, the client a PROXY protocol header named, `PEER=` being
//! then the balancer's address), so
//! `journalctl -u upcased CLOSE_REASON=idle` finds them; the `MESSAGE=` is
//! the line above.
//!
//! A connection storm would make thousands of records a second: they are
//! rate-limited by a token bucket ([`RATE`] a second, bursts of [`BURST`]);
//! the records over it are counted (`records_suppressed`, a metric too) and
//! the next record that passes is preceded by one warning saying how many.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::stats::Counters;
use crate::journal::Journal;

/// Records a second, in the long run.
pub const RATE: u32 = 100;
/// Records at once after a quiet spell.
pub const BURST: u32 = 1000;

/// Why a connection ended: one per counter `closed_*`, and the label
/// `reason` of the metrics and the field `CLOSE_REASON` of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client shut down its side and got every reply.
    Done,
    /// The client reset the connection or vanished.
    Reset,
    /// Closed by `[tcp] idle_timeout`.
    Idle,
    /// Another socket error.
    Error,
    /// On a PROXY listener, no valid header (malformed, cut short, or not
    /// whole within the header timeout): closed unanswered.
    Proxy,
    /// On a PROXY listener, a peer outside `[tcp] proxy_trusted`.
    Untrusted,
    /// Cut by the shutdown deadline.
    Cut,
    /// Handed to the service manager's store at a restart: the next
    /// process carries on with it (and writes its own record at its end).
    HandedOver,
    /// Refused by `max_connections_per_ip` (or at `max_connections`
    /// during a shutdown).
    Limit,
}

impl Ended {
    /// Every reason, in the order of the counters line.
    pub const ALL: [Ended; 9] = [
        Ended::Done,
        Ended::Reset,
        Ended::Idle,
        Ended::Error,
        Ended::Proxy,
        Ended::Untrusted,
        Ended::Cut,
        Ended::HandedOver,
        Ended::Limit,
    ];

    /// Its name in records, metrics and the counters line.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::Reset => "reset",
            Ended::Idle => "idle",
            Ended::Error => "error",
            Ended::Proxy => "proxy",
            Ended::Untrusted => "untrusted",
            Ended::Cut => "cut",
            Ended::HandedOver => "handed_over",
            Ended::Limit => "limit",
        }
    }

    /// How many connections ended this way.
    pub fn count(self, counters: &Counters) -> u64 {
        match self {
            Ended::Done => counters.closed_done,
            Ended::Reset => counters.closed_reset,
            Ended::Idle => counters.closed_idle,
            Ended::Error => counters.closed_error,
            Ended::Proxy => counters.closed_proxy,
            Ended::Untrusted => counters.closed_untrusted,
            Ended::Cut => counters.closed_cut,
            Ended::HandedOver => counters.closed_handed_over,
            Ended::Limit => counters.closed_limit,
        }
    }
}

/// What a record says about one connection.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The address the connection came from.
    pub peer: SocketAddr,
    /// The client's own address as a PROXY protocol header gave it, when a
    /// balancer relayed the connection (`[tcp] proxy_listen`); `peer` is
    /// then the balancer's. `None` for a direct client, a `LOCAL` header
    /// (the balancer's own health check) and a connection handed over by
    /// the previous process (its snapshot keeps the client only).
    pub proxied: Option<SocketAddr>,
    /// From accept to close.
    pub duration: Duration,
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes of replies sent.
    pub bytes_out: u64,
    /// Why it closed.
    pub reason: Ended,
}

impl Record {
    /// The record as one line of `key=value` pairs.
    pub fn line(&self) -> String {
        let proxied = self
            .proxied
            .map_or(String::new(), |p| format!(" proxied_peer={p}"));
        format!(
            "connection peer={}{proxied} duration_usec={} bytes_in={} bytes_out={} close_reason={}",
            self.peer,
            self.duration.as_micros(),
            self.bytes_in,
            self.bytes_out,
            self.reason.as_str()
        )
    }

    /// The record as journal fields.
    fn send(&self, journal: &mut Journal) -> std::io::Result<()> {
        let message = self.line();
        let peer = self.peer.to_string();
        let proxied = self.proxied.map(|p| p.to_string());
        let duration = self.duration.as_micros().to_string();
        let (bytes_in, bytes_out) = (self.bytes_in.to_string(), self.bytes_out.to_string());
        let mut fields = vec![
            ("MESSAGE", message.as_str()),
            ("PRIORITY", "6"),
            ("SYSLOG_IDENTIFIER", "upcased"),
            ("PEER", peer.as_str()),
            ("DURATION_USEC", duration.as_str()),
            ("BYTES_IN", bytes_in.as_str()),
            ("BYTES_OUT", bytes_out.as_str()),
            ("CLOSE_REASON", self.reason.as_str()),
        ];
        if let Some(proxied) = &proxied {
            fields.push(("PROXIED_PEER", proxied.as_str()));
        }
        journal.send(&fields)
    }
}

/// Where records go, and their rate limit.
#[derive(Debug)]
pub struct Records {
    /// journald's native socket, when stderr is the journal.
    journal: Option<Journal>,
    /// Records that may be written now (the bucket), at most [`BURST`].
    tokens: u32,
    /// Up to when time has been turned into tokens.
    filled: Instant,
    /// Records suppressed since the last one written.
    suppressed: u64,
}

impl Records {
    /// Records to journald natively when stderr is the journal, else to the log.
    pub fn from_environment() -> Records {
        let journal = crate::logging::stderr_is_journal()
            .then(|| Journal::new(crate::journal::SOCKET).ok())
            .flatten();
        Records::to(journal)
    }

    /// Records to `journal`, or to the log when `None`.
    pub fn to(journal: Option<Journal>) -> Records {
        Records {
            journal,
            tokens: BURST,
            filled: Instant::now(),
            suppressed: 0,
        }
    }

    /// Writes `record`, unless over the rate limit (then it is counted in
    /// `counters.records_suppressed`).
    pub fn write(&mut self, record: &Record, counters: &mut Counters, now: Instant) {
        let earned =
            now.saturating_duration_since(self.filled).as_millis() as u64 * RATE as u64 / 1000;
        if earned > 0 {
            let tokens = self.tokens as u64 + earned;
            if tokens >= BURST as u64 {
                // Full: nothing banks beyond a burst.
                self.tokens = BURST;
                self.filled = now;
            } else {
                // Only the time the tokens paid for is spent; the rest
                // counts towards the next one.
                self.tokens = tokens as u32;
                self.filled += Duration::from_millis(earned * 1000 / RATE as u64);
            }
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            counters.records_suppressed += 1;
            return;
        }
        self.tokens -= 1;
        if self.suppressed > 0 {
            warn!(target: super::LOG_TARGET, "connection records: {} suppressed over the rate limit ({RATE} a second, bursts of {BURST})",
                std::mem::take(&mut self.suppressed));
        }
        if let Some(journal) = &mut self.journal {
            if record.send(journal).is_ok() {
                return;
            }
            // journald is gone or falling behind: the line on stderr
            // still reaches it (or whoever reads stderr).
        }
        info!(target: super::LOG_TARGET, "{}", record.line());
    }
}

impl super::Server {
    /// Writes the record of connection `key`, which ends for `reason`, if
    /// `log_connections` is on (the clock is read only then).
    pub(super) fn record(&mut self, key: usize, reason: Ended) {
        if !self.config.log_connections {
            return;
        }
        let Some(slot) = self.conns.get(key) else {
            return;
        };
        let now = Instant::now();
        let (bytes_in, bytes_out) = slot.conn.bytes();
        // On a PROXY listener the connection's peer is the client the
        // header named (`proxied.rs`); the socket's own peer, the balancer,
        // was kept in the slot.
        let (peer, proxied) = match slot.balancer {
            Some(balancer) => (balancer, Some(slot.conn.peer())),
            None => (slot.conn.peer(), None),
        };
        let record = Record {
            peer,
            proxied,
            duration: now.saturating_duration_since(slot.opened),
            bytes_in,
            bytes_out,
            reason,
        };
        self.records.write(&record, &mut self.shared.counters, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn record(reason: Ended) -> Record {
        Record {
            peer: "127.0.0.1:40312".parse().expect("addr"),
            proxied: None,
            duration: Duration::from_micros(1520),
            bytes_in: 6,
            bytes_out: 7,
            reason,
        }
    }

    #[test]
    fn the_line_has_every_field() {
        assert_eq!(
            record(Ended::Done).line(),
            "connection peer=127.0.0.1:40312 duration_usec=1520 bytes_in=6 bytes_out=7 close_reason=done"
        );
        let mut proxied = record(Ended::Idle);
        proxied.proxied = Some("203.0.113.9:5000".parse().expect("addr"));
        assert_eq!(
            proxied.line(),
            "connection peer=127.0.0.1:40312 proxied_peer=203.0.113.9:5000 duration_usec=1520 bytes_in=6 bytes_out=7 close_reason=idle"
        );
    }

    /// A test-owned socket stands in for journald's.
    #[test]
    fn under_journald_a_record_is_one_entry_with_its_own_fields() {
        let path = std::env::temp_dir().join(format!("upcase-records-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let journald = UnixDatagram::bind(&path).expect("bind");
        let mut records = Records::to(Some(Journal::new(&path).expect("journal")));
        let mut counters = Counters::default();
        records.write(&record(Ended::Idle), &mut counters, Instant::now());
        let mut buf = [0u8; 1024];
        let n = journald.recv(&mut buf).expect("an entry");
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            "MESSAGE=connection peer=127.0.0.1:40312 duration_usec=1520 bytes_in=6 bytes_out=7 close_reason=idle\n\
             PRIORITY=6\nSYSLOG_IDENTIFIER=upcased\nPEER=127.0.0.1:40312\nDURATION_USEC=1520\n\
             BYTES_IN=6\nBYTES_OUT=7\nCLOSE_REASON=idle\n"
        );
    }

    /// Every `closed_*` counter is one reason, in the counters line's
    /// order, and `closed()` sums them all (`accepted = open + closed`).
    #[test]
    fn the_reasons_are_the_counters_lines() {
        let c = Counters {
            closed_done: 1,
            closed_reset: 2,
            closed_idle: 3,
            closed_error: 4,
            closed_proxy: 5,
            closed_untrusted: 6,
            closed_cut: 7,
            closed_handed_over: 8,
            closed_limit: 9,
            ..Counters::default()
        };
        let named: Vec<String> = Ended::ALL
            .iter()
            .map(|r| format!("{}={}", r.as_str(), r.count(&c)))
            .collect();
        let line = c.to_string();
        assert!(
            line.contains(&format!("closed: {};", named.join(" "))),
            "{line}"
        );
        assert_eq!(c.closed(), 45);
    }

    #[test]
    fn a_storm_is_cut_to_the_rate_and_the_rest_counted() {
        let mut records = Records::to(None);
        let mut counters = Counters::default();
        let t0 = Instant::now();
        for _ in 0..BURST + 50 {
            records.write(&record(Ended::Reset), &mut counters, t0);
        }
        assert_eq!(counters.records_suppressed, 50);
        // A tenth of a second earns RATE / 10 records.
        let later = t0 + Duration::from_millis(100);
        for _ in 0..RATE / 10 + 5 {
            records.write(&record(Ended::Reset), &mut counters, later);
        }
        assert_eq!(counters.records_suppressed, 55);
    }

    /// The time between two tokens is kept, not dropped when one is earned:
    /// with the bucket empty, a record 19 ms later takes the token earned
    /// at 10 ms, and one at 20 ms the token earned then.
    #[test]
    fn the_rate_keeps_the_time_towards_the_next_token() {
        let mut records = Records::to(None);
        let mut counters = Counters::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            records.write(&record(Ended::Reset), &mut counters, t0);
        }
        assert_eq!(counters.records_suppressed, 0);
        let step = Duration::from_millis(1000 / u64::from(RATE));
        records.write(&record(Ended::Reset), &mut counters, t0 + step * 19 / 10);
        records.write(&record(Ended::Reset), &mut counters, t0 + step * 2);
        assert_eq!(counters.records_suppressed, 0);
        // And no more than the rate: a third within the same 20 ms is over.
        records.write(&record(Ended::Reset), &mut counters, t0 + step * 2);
        assert_eq!(counters.records_suppressed, 1);
    }
}
